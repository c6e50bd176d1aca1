#!/usr/bin/env node
// A CSM's Monday in headless Debian Chromium: every page at 1280 px and 390 px (its visible
// text, whether it fits, a screenshot), the account page's top card, a task made by hand
// and a call logged from it.
// Usage: node csm_browser.mjs --base URL --login USER:PASS --account ID --screenshots DIR
// Prints a JSON report (the Rust test compares it with the API) and exits non-zero when a
// step could not be done.
import { chromium } from 'playwright-core'
import { parseArgs } from 'node:util'

const { values: opts } = parseArgs({
  options: {
    base: { type: 'string' }, login: { type: 'string' }, account: { type: 'string' }, screenshots: { type: 'string' },
  },
})
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
})
const report = { console_errors: [], pages: {} }
const watch = (page) => page.on('console', (m) => {
  if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) report.console_errors.push(`${page.url()}: ${m.text()}`)
})
const account = `/accounts/${opts.account}`
const paths = ['/portfolio', account, `${account}/review`, '/segments', '/indicators', '/outcomes', '/onboarding', '/listening', '/inbox', '/settings']
// What a page says to a person, folded parts opened: its rendered text without code
// samples (rule syntax). Changes this page only; the next step loads another.
const visibleText = () => {
  document.querySelectorAll('details').forEach((d) => { d.open = true })
  document.querySelectorAll('code, pre').forEach((e) => e.remove())
  return document.body.innerText
}
// A new browser context of `width` px, signed in.
const signedIn = async (width) => {
  const context = await browser.newContext({ viewport: { width, height: 900 }, timezoneId: 'Europe/Stockholm', locale: 'en-GB' })
  const page = await context.newPage()
  watch(page)
  await page.goto(`${opts.base}/login`)
  const [user, password] = opts.login.split(':')
  await page.fill('input[name=username]', user)
  await page.fill('input[name=password]', password)
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')])
  return [context, page]
}
try {
  for (const [name, width] of [['wide', 1280], ['narrow', 390]]) {
    const [context, page] = await signedIn(width)
    if (name === 'narrow') {
      // The navigation folds behind its button on a phone.
      const header = () => page.evaluate(() => document.querySelector('header.top').getBoundingClientRect().height)
      report.menu = { folded_height: await header(), nav_visible: await page.isVisible('#main-nav') }
      await page.click('header.top button.menu')
      report.menu.open_nav_visible = await page.isVisible('#main-nav')
    }
    for (const path of paths) {
      const response = await page.goto(`${opts.base}${path}`)
      const key = `${name} ${path}`
      // Wider than the viewport: the page scrolls sideways.
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth)
      await page.screenshot({ path: `${opts.screenshots}/${name}${path.replaceAll('/', '-')}.png`, fullPage: true })
      report.pages[key] = { status: response.status(), overflow, text: await page.evaluate(visibleText) }
    }
    await context.close()
  }

  const [context, page] = await signedIn(1280)

  // The portfolio by keyboard alone: an arrow key in a filter does not reload the page;
  // the button applies it.
  await page.goto(`${opts.base}/portfolio?status=all`)
  const focused = () => page.evaluate(() => document.activeElement && (document.activeElement.name || document.activeElement.textContent.trim()))
  for (let i = 0; i < 40 && (await focused()) !== 'segment'; i++) await page.keyboard.press('Tab')
  const before = page.url()
  await page.keyboard.press('ArrowDown')
  await page.waitForTimeout(500)
  report.keyboard = { reached: await focused(), after_arrow_same_url: page.url() === before }
  for (let i = 0; i < 20 && (await focused()) !== 'Apply filters'; i++) await page.keyboard.press('Tab')
  await Promise.all([page.waitForNavigation(), page.keyboard.press('Enter')])
  report.keyboard.applied = new URL(page.url()).searchParams.get('segment')

  // Headers sort; chips count and filter; the CSV is the view.
  await page.goto(`${opts.base}/portfolio?status=all`)
  const column = (field) => page.$$eval(`#portfolio td[data-field=${field}]`, (cells) => cells.map((c) => c.dataset.value ?? null))
  await Promise.all([page.waitForNavigation(), page.click('th[data-sort=arr] a')])
  report.sorted = { arr_first: await column('arr'), arr_first_aria: await page.getAttribute('th[data-sort=arr]', 'aria-sort') }
  await Promise.all([page.waitForNavigation(), page.click('th[data-sort=arr] a')])
  report.sorted.arr_second = await column('arr')
  report.sorted.arr_second_aria = await page.getAttribute('th[data-sort=arr]', 'aria-sort')
  await Promise.all([page.waitForNavigation(), page.click('th[data-sort=utilization] a')])
  report.sorted.utilization = await column('license_utilization')
  report.chips = await page.$$eval('nav.chips a.chip', (cs) => Object.fromEntries(cs.map((c) => [c.dataset.tier, Number(c.dataset.count)])))
  await Promise.all([page.waitForNavigation(), page.click('nav.chips a[data-tier=red]')])
  report.red = { tiers: await page.$$eval('#portfolio td[data-field=tier] [data-tier]', (ts) => ts.map((t) => t.dataset.tier)), count: Number(await page.textContent('[data-field=count]')) }
  report.view_accounts = await page.$$eval('#portfolio tbody tr', (rows) => rows.map((r) => r.dataset.account))
  const csvHref = await page.getAttribute('a[href^="/portfolio.csv"]', 'href')
  // As the browser would download it: with the page's session cookie.
  const download = await page.request.get(`${opts.base}${csvHref}`)
  report.csv = { status: download.status(), type: download.headers()['content-type'], body: await download.text() }
  await page.screenshot({ path: `${opts.screenshots}/portfolio-red.png`, fullPage: true })

  // On a phone a table with grouped headings is cards too, each cell labelled with its
  // group and column.
  {
    const [phone, phonePage] = await signedIn(390)
    await phonePage.goto(`${opts.base}/outcomes`)
    report.outcome_labels = await phonePage.$$eval('#outcomes-all tbody tr:first-child td', (tds) => tds.map((t) => t.dataset.label))
    report.outcome_card = await phonePage.$eval('#outcomes-all tbody tr', (tr) => getComputedStyle(tr).display)
    await phone.close()
  }

  // Amounts in the viewer's locale: a German browser groups digits with dots.
  const german = await browser.newContext({ locale: 'de-DE', timezoneId: 'Europe/Berlin' })
  const germanPage = await german.newPage()
  await germanPage.goto(`${opts.base}/login`)
  const [germanUser, germanPassword] = opts.login.split(':')
  await germanPage.fill('input[name=username]', germanUser)
  await germanPage.fill('input[name=password]', germanPassword)
  await Promise.all([germanPage.waitForNavigation(), germanPage.click('button[type=submit]')])
  await germanPage.goto(`${opts.base}/portfolio?status=all&sort=arr`)
  report.german_arr = await germanPage.$$eval('#portfolio td[data-field=arr] data', (ds) => ds.slice(0, 5).map((d) => [d.getAttribute('value'), d.textContent]))
  report.german_use = await germanPage.$$eval('#portfolio td[data-field=license_utilization][data-value]', (ds) => ds.slice(0, 5).map((d) => [d.dataset.value, d.textContent]))
  await german.close()

  // A saved view: this one (red, by utilisation) under a name; from the plain portfolio
  // its link brings the same rows back; deleted after a question.
  const redUrl = new URL(page.url())
  await page.fill('#save-view input[name=name]', 'Red by licence use')
  await Promise.all([page.waitForNavigation(), page.click('#save-view button[type=submit]')])
  report.saved_view = { after_save: new URL(page.url()).search, red_search: redUrl.search }
  await page.goto(`${opts.base}/portfolio`)
  report.saved_view.listed = await page.$$eval('ul.views li', (ls) => ls.map((l) => l.dataset.view))
  await Promise.all([page.waitForNavigation(), page.click('ul.views li[data-view="Red by licence use"] a')])
  report.saved_view.rows = await page.$$eval('#portfolio tbody tr', (rows) => rows.map((r) => r.dataset.account))
  page.once('dialog', (d) => { report.saved_view.question = d.message(); d.accept() })
  await Promise.all([page.waitForNavigation(), page.click('ul.views li[data-view="Red by licence use"] button')])
  report.saved_view.after_delete = await page.locator('ul.views li').count()

  // Numbers a VP can lift: headline tiles, quarters by name, charts at their own aspect;
  // the Listening CSV with the session alone.
  await page.goto(`${opts.base}/outcomes`)
  report.outcomes = {
    tiles: await page.$$eval('section.tiles .tile', (ts) => ts.map((t) => ({ field: t.dataset.field, value: t.dataset.value ?? null, text: t.querySelector('strong').textContent }))),
    periods: await page.$$eval('#outcomes-all tbody th', (ths) => ths.map((t) => t.textContent)),
    stretched: await page.locator('svg[preserveAspectRatio]').count(),
    ticks: await page.$$eval('figure.chart svg text.axis', (ts) => ts.map((t) => t.textContent)),
  }
  await page.goto(`${opts.base}/listening`)
  report.listening = {
    bars: await page.locator('figure.totals rect.bar').count(),
    total: await page.textContent('[data-field=reasons-total]').catch(() => null),
  }
  const reasonsCsv = await page.request.get(`${opts.base}${await page.getAttribute('a[href*="churn_reasons?format=csv"]', 'href')}`)
  report.listening.csv = { status: reasonsCsv.status(), type: reasonsCsv.headers()['content-type'] }
  await page.goto(`${opts.base}/segments`)
  report.segments_counts = await page.$$eval('#segments-table tbody tr', (rows) => rows.length).catch(() => null)

  // The top card: what it names, in page order before the tasks.
  await page.goto(`${opts.base}${account}`)
  const card = page.locator('section.why')
  report.card = {
    power_feature: await card.locator('[data-power-feature]').getAttribute('data-power-feature'),
    rate: Number(await card.locator('[data-rate]').getAttribute('data-rate')),
    rate_text: await card.locator('[data-rate]').textContent(),
    monthly_uses: Number(await card.locator('[data-field=power_feature_monthly_uses]').getAttribute('data-value')),
    next: await card.locator('p.next [data-next]').getAttribute('data-next'),
    buttons: await card.locator('p.actions a').allTextContents(),
    before_tasks: await page.evaluate(() => {
      const why = document.querySelector('section.why'), tasks = document.getElementById('tasks')
      return Boolean(why.compareDocumentPosition(tasks) & Node.DOCUMENT_POSITION_FOLLOWING)
    }),
    people: await page.$$eval('span.person[data-person]', (ps) => ps.map((p) => ({ id: p.dataset.person, shown: p.textContent, title: p.title }))),
    raw_tables_folded: await page.$$eval('section[aria-labelledby=records] details', (ds) => ds.length > 0 && ds.every((d) => !d.open)),
  }

  // A task made by hand: the card's button leads to the form.
  await page.click('section.why a[href="#new-task"]')
  await page.fill('#new-task input[name=title]', 'Walk the admins through reporting')
  await page.fill('#new-task input[name=due]', '2099-01-31')
  await Promise.all([page.waitForNavigation(), page.click('#new-task button[type=submit]')])
  report.task = {
    url: new URL(page.url()).pathname + new URL(page.url()).hash,
    listed: await page.locator('ul.tasks li').allTextContents(),
    next: await page.textContent('section.why p.next'),
  }

  // A playbook started: its steps become tasks.
  await page.selectOption('#start-playbook select[name=playbook]', 'save-plan')
  await Promise.all([page.waitForNavigation(), page.click('#start-playbook button[type=submit]')])
  report.playbook = { listed: await page.locator('ul.tasks li').allTextContents() }

  // People: by name from their identify traits; a role set from the page stays set.
  const person = page.locator('#people-table tbody tr').first()
  const personId = await person.getAttribute('data-contact')
  await person.locator('select[name=role]').selectOption('champion')
  await Promise.all([page.waitForNavigation(), person.locator('button[type=submit]').click()])
  report.people = {
    names: await page.$$eval('#people-table tbody th', (ths) => ths.map((t) => t.textContent)),
    first: await page.locator('#people-table tbody tr').first().getAttribute('data-contact'),
    first_role: await page.locator('#people-table tbody tr').first().locator('[data-field=role]').getAttribute('data-value'),
    chosen: personId,
    at: new URL(page.url()).hash,
  }

  // A call logged: first in the timeline, and the last contact is today.
  await page.selectOption('#log-activity select[name=kind]', 'call')
  await page.fill('#log-activity textarea[name=text]', 'Renewal call with the sponsor: budget approved')
  await Promise.all([page.waitForNavigation(), page.click('#log-activity button[type=submit]')])
  report.activity = {
    first: await page.locator('#timeline li').first().getAttribute('data-kind'),
    first_text: await page.locator('#timeline li').first().textContent(),
    last_contact: await page.getAttribute('dd[data-field=last_contact] time', 'datetime'),
  }
  await page.screenshot({ path: `${opts.screenshots}/account-after-actions.png`, fullPage: true })

  // The review: from the vendor, with the CSM's contact, this quarter beside the last,
  // scales explained; saving goals says so; on A4 each value sits on its label's line.
  await page.goto(`${opts.base}${account}/review`)
  await page.fill('textarea[name=goals]', 'Roll reporting out to finance')
  await Promise.all([page.waitForNavigation(), page.click('form[action$="/goals"] button')])
  report.review = {
    saved: await page.textContent('[data-field=saved]').catch(() => null),
    vendor: await page.textContent('[data-field=vendor]').catch(() => null),
    logo: await page.locator('img.logo').count(),
    csm: await page.textContent('[data-field=csm]').catch(() => null),
    compared_rows: await page.locator('#review-usage tbody tr').count(),
    scales: await page.$$eval('#review table.data td', (tds) => tds.map((t) => t.textContent).filter((t) => /^\d-\d+: /.test(t))),
    shown: await page.$$eval('#review-usage td[data-field]', (tds) => Object.fromEntries(tds.map((t) => [t.dataset.field, t.dataset.value ?? null]))),
  }
  await page.emulateMedia({ media: 'print' })
  await page.setViewportSize({ width: 794, height: 1123 })
  report.review.print_rows = await page.$$eval('#review table.compare tbody tr', (rows) => rows.map((r) => {
    const label = r.querySelector('th').getBoundingClientRect(), value = r.querySelector('td').getBoundingClientRect()
    return { label: r.querySelector('th').textContent, same_line: Math.abs(label.top - value.top) < 4 && value.left > label.right - 1 }
  }))
  await page.pdf({ path: `${opts.screenshots}/review-a4.pdf`, format: 'A4', printBackground: true })
  await page.emulateMedia({ media: 'screen' })
  await page.setViewportSize({ width: 1280, height: 900 })

  // Sections switched off and a KPI target, then a share link: made by a POST that
  // redirects to a GET (reloading re-posts nothing), listed with its expiry, opened by a
  // stranger as the CSM set it up, revoked after a confirmation, then refused.
  await page.uncheck('input[name="show:support"]')
  await page.fill('input[name="target:hours_saved"]', '100')
  await Promise.all([page.waitForNavigation(), page.click('form[action$="/goals"] button')])
  await Promise.all([page.waitForNavigation(), page.click('form[action$="/share"] button')])
  const shareUrl = await page.getAttribute('#share-link', 'href')
  const linkRow = page.locator('#share-links-table tbody tr').first()
  report.share = {
    page_after_post: new URL(page.url()).pathname,
    rows: await page.locator('#share-links-table tbody tr').count(),
    status: await linkRow.locator('[data-field=status]').textContent(),
    copy: await linkRow.locator('button.copy').getAttribute('data-copy'),
    expires: await linkRow.locator('td[data-label=Expires] time').getAttribute('datetime'),
    url: shareUrl,
  }
  await page.screenshot({ path: `${opts.screenshots}/review-share-links.png`, fullPage: true })
  const strangers = await browser.newContext()
  const guest = await strangers.newPage()
  report.share.opened = (await guest.goto(shareUrl)).status()
  report.share.sections = await guest.$$eval('#review section[data-section]', (s) => s.map((x) => x.dataset.section))
  report.share.results = await guest.$$eval('#review-results tbody tr', (rows) => rows.map((r) => [r.querySelector('th').textContent, r.querySelector('[data-field=kpi]').textContent, r.querySelector('[data-field=target]').textContent]))
  page.once('dialog', (d) => { report.share.question = d.message(); d.accept() })
  await Promise.all([page.waitForNavigation(), linkRow.locator('button.danger').click()])
  report.share.status_after = await page.locator('#share-links-table tbody tr').first().locator('[data-field=status]').textContent()
  report.share.revoked_open = (await guest.goto(shareUrl)).status()
  report.share.revoked_text = await guest.textContent('[role=alert]')
  await strangers.close()

  // Settings without the config file: a rule built from the form; deleting it asks first.
  await page.goto(`${opts.base}/settings`)
  await page.fill('form[action="/settings/rules"] input[name=name]', 'quiet-big-account')
  await page.selectOption('select[name=measure_1]', 'days_since_last_activity')
  await page.selectOption('select[name=op_1]', '>=')
  await page.fill('input[name=value_1]', '14')
  await page.selectOption('select[name=measure_2]', 'arr')
  await page.selectOption('select[name=op_2]', '>')
  await page.fill('input[name=value_2]', '50000')
  await Promise.all([page.waitForNavigation(), page.click('form[action="/settings/rules"] button[type=submit]')])
  const ruleRow = () => page.locator('#rules-table tbody tr', { hasText: 'quiet-big-account' })
  report.rule = { when: await ruleRow().locator('code').textContent() }
  page.once('dialog', (d) => { report.rule.question = d.message(); d.dismiss() })
  await ruleRow().locator('button').click()
  await page.waitForTimeout(300)
  report.rule.after_dismiss = await ruleRow().count()
  page.once('dialog', (d) => d.accept())
  await Promise.all([page.waitForNavigation(), ruleRow().locator('button').click()])
  report.rule.after_accept = await ruleRow().count()
  await page.fill('form[action="/settings/tokens"] input[name=name]', 'reporting')
  await Promise.all([page.waitForNavigation(), page.click('form[action="/settings/tokens"] button[type=submit]')])
  report.token = {
    copy: await page.getAttribute('button[data-copy]', 'data-copy'),
    shown: await page.textContent('#new-token'),
    example: await page.textContent('.notice pre'),
    page: new URL(page.url()).pathname,
  }
  // Reloading re-posts nothing and the secret is not shown again.
  await page.reload()
  report.token.after_reload = await page.locator('#new-token').count()
  report.token.listed = await page.locator('#tokens-table tbody tr', { hasText: 'reporting' }).count()

  // The inbox: priority and ARR on every task, high first.
  await page.goto(`${opts.base}/inbox?csm=all`)
  report.inbox = await page.$$eval('#tasks-table tbody tr', (rows) => rows.map((r) => ({
    priority: r.querySelector('[data-field=priority]').dataset.value,
    arr: r.querySelector('[data-field=arr]').dataset.value,
    status: r.querySelector('[data-field=status]').textContent,
  })))
  await context.close()
} catch (e) {
  console.error(e)
  process.exitCode = 1
} finally {
  await browser.close()
}
console.log(JSON.stringify(report))
