#!/usr/bin/env node
// Drives bellwether's dashboard in headless Debian Chromium: sign-in, the portfolio and
// its filters, one account's page, every other page, the quarterly review share link in a
// fresh context, refused links, a CSM's default view and keyboard reach.
// Usage: node dashboard_browser.mjs --base URL --admin USER:PASS --csm USER:PASS
//          --expired-link URL --screenshots DIR
// Prints a JSON report of what the pages showed (the Rust test compares it with the API)
// and exits non-zero when a step could not be done.
import { chromium } from 'playwright-core'
import { parseArgs } from 'node:util'

const { values: opts } = parseArgs({
  options: {
    base: { type: 'string' }, admin: { type: 'string' }, csm: { type: 'string' },
    'expired-link': { type: 'string' }, screenshots: { type: 'string' },
  },
})
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
})
const report = { console_errors: [] }
const shot = (page, name) => page.screenshot({ path: `${opts.screenshots}/${name}.png`, fullPage: true })
// Script errors and CSP violations; statuses of refused pages are checked one by one.
const watch = (page) => page.on('console', (m) => {
  if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) report.console_errors.push(`${page.url()}: ${m.text()}`)
})
const signIn = async (page, credentials) => {
  const [user, password] = credentials.split(':')
  await page.fill('input[name=username]', user)
  await page.fill('input[name=password]', password)
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')])
}
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, timezoneId: 'Europe/Stockholm' })
  const page = await context.newPage()
  watch(page)

  // 1. Signed out: every page leads to sign-in; a wrong password is refused.
  await page.goto(`${opts.base}/portfolio`)
  report.signed_out_url = new URL(page.url()).pathname
  const [user] = opts.admin.split(':')
  await signIn(page, `${user}:not-the-password`)
  report.wrong_password_error = await page.textContent('[role=alert]')
  await shot(page, '01-login')
  await signIn(page, opts.admin)
  report.after_login_url = new URL(page.url()).pathname

  // 2. The portfolio (current customers), all accounts, then one segment's (filters apply
  // on their button).
  report.portfolio_rows = await page.locator('#portfolio tbody tr').count()
  report.current_accounts = await page.$$eval('#portfolio tbody tr', (rows) => rows.map((r) => r.dataset.account))
  report.portfolio_health = await page.$$eval('#portfolio tbody tr', (rows) => rows.slice(0, 8).map((r) => ({
    account: r.dataset.account,
    tier: r.querySelector('[data-tier]').dataset.tier,
    score: r.querySelector('[data-field=health_score]').dataset.value ?? null,
  })))
  report.localized_time = await page.locator('time[data-local]').first().textContent()
  await shot(page, '02-portfolio')
  await page.selectOption('select[name=status]', 'all')
  await Promise.all([page.waitForNavigation(), page.click('form.filters button[type=submit]')])
  report.all_rows = await page.locator('#portfolio tbody tr').count()
  await page.selectOption('select[name=segment]', 'pro')
  await Promise.all([page.waitForNavigation(), page.click('form.filters button[type=submit]')])
  report.filtered_segments = await page.$$eval('#portfolio td[data-field=segment]', (cells) => cells.map((c) => c.dataset.value))
  report.filtered_count = Number(await page.textContent('[data-field=count]'))

  // 3. Keyboard: the first Tab reaches the skip link.
  await page.keyboard.press('Tab')
  report.first_tab = await page.evaluate(() => document.activeElement.textContent)

  // 4. One account's page: the numbers it shows.
  const link = page.locator('#portfolio tbody tr th a').first()
  report.account = (await link.getAttribute('href')).split('/').pop()
  await Promise.all([page.waitForNavigation(), link.click()])
  report.account_shown = await page.$$eval('[data-field]', (els) => Object.fromEntries(els.map((e) => [e.dataset.field, e.dataset.value ?? (e.dataset.tier ?? e.textContent.trim())])))
  report.account_tier = await page.getAttribute('dd[data-field=tier] [data-tier]', 'data-tier')
  report.account_charts = await page.locator('figure.chart svg').count()
  await shot(page, '03-account')

  // 5. Every other page renders.
  report.pages = {}
  for (const path of ['/segments', '/indicators', '/outcomes', '/onboarding', '/listening', '/inbox', '/settings']) {
    const response = await page.goto(`${opts.base}${path}`)
    report.pages[path] = { status: response.status(), h1: await page.textContent('h1') }
    await shot(page, `04${path.replace('/', '-')}`)
  }

  // 6. Tasks the built-in rules made: finish one from the inbox. Settings list the rules.
  await page.goto(`${opts.base}/inbox`)
  for (let tries = 0; (await page.locator('#tasks-table tbody tr').count()) === 0 && tries < 60; tries++) {
    await page.waitForTimeout(500)
    await page.goto(`${opts.base}/inbox`)
  }
  report.tasks = await page.locator('#tasks-table tbody tr').count()
  const task = page.locator('#tasks-table tbody tr').first()
  report.task_id = Number(await task.getAttribute('data-task'))
  await Promise.all([page.waitForNavigation(), task.locator('button[value=done]').click()])
  report.task_status = await page.textContent(`#tasks-table tr[data-task="${report.task_id}"] [data-field=status]`)
  await shot(page, '07-inbox')
  await page.goto(`${opts.base}/settings`)
  report.rules = await page.locator('#rules-table tbody tr').count()

  // 7. The quarterly review: share it, then open the link without signing in.
  await page.goto(`${opts.base}/accounts/${report.account}/review`)
  await page.fill('textarea[name=goals]', 'Roll out reporting to the finance team')
  await Promise.all([page.waitForNavigation(), page.click('form[action$="/goals"] button')])
  await Promise.all([page.waitForNavigation(), page.click('form[action$="/share"] button')])
  const shareLink = await page.getAttribute('#share-link', 'href')
  await shot(page, '05-review-internal')
  const stranger = await browser.newContext({ timezoneId: 'America/New_York' })
  const guest = await stranger.newPage()
  watch(guest)
  const shared = await guest.goto(shareLink)
  report.shared = {
    status: shared.status(),
    h1: await guest.textContent('h1'),
    text: await guest.textContent('#review'),
    nav: await guest.locator('header.top').count(),
    goals: await guest.textContent('p.goals'),
  }
  await shot(guest, '06-review-shared')
  const [payload, signature] = new URL(shareLink).pathname.split('/').pop().split('.')
  const altered = `${opts.base}/r/${payload}.${(signature[0] === 'A' ? 'B' : 'A') + signature.slice(1)}`
  report.altered_status = (await guest.goto(altered)).status()
  report.expired_status = (await guest.goto(opts['expired-link'])).status()
  report.expired_text = await guest.textContent('[role=alert]')
  await stranger.close()

  // 8. A CSM sees their own accounts by default.
  const csmContext = await browser.newContext()
  const csmPage = await csmContext.newPage()
  watch(csmPage)
  await csmPage.goto(`${opts.base}/portfolio`)
  await signIn(csmPage, opts.csm)
  report.csm_owner_filter = await csmPage.$eval('select[name=csm]', (s) => s.value)
  report.csm_rows = await csmPage.$$eval('#portfolio tbody tr', (rows) => rows.map((r) => r.dataset.account))
  report.csm_settings_status = (await csmPage.goto(`${opts.base}/settings`)).status()
  await csmContext.close()

  // 9. Sign-out ends the session.
  await page.goto(`${opts.base}/portfolio`)
  await Promise.all([page.waitForNavigation(), page.click('form.signout button')])
  await page.goto(`${opts.base}/portfolio`)
  report.after_signout_url = new URL(page.url()).pathname
} catch (e) {
  console.error(e)
  process.exitCode = 1
} finally {
  await browser.close()
}
console.log(JSON.stringify(report))
