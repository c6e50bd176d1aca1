#!/usr/bin/env node
// Drives bellwether's /js/activity.js in headless Debian Chromium with Playwright's fake
// clock (minutes pass without waiting) and checks when "Active Ping" events are sent.
// Usage: node activity_browser.mjs --base http://127.0.0.1:PORT --write-key K --user U --screenshot FILE
// Prints {"pings": N} and exits 0 when every step sent exactly what it should.
import { chromium } from 'playwright-core'
import { parseArgs } from 'node:util'

const { values: opts } = parseArgs({
  options: { base: { type: 'string' }, 'write-key': { type: 'string' }, user: { type: 'string' }, screenshot: { type: 'string' } },
})
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
})
let failed = false
try {
  const page = await browser.newPage()
  let pings = 0
  page.on('request', (request) => {
    if (request.url().endsWith('/v1/track') && JSON.parse(request.postData()).event === 'Active Ping') pings += 1
  })
  await page.clock.install({ time: new Date('2026-11-24T10:00:00Z') })
  // A page of the customer's own (not one of bellwether's: those forbid scripts by CSP).
  await page.setContent('<!doctype html><html><head><title>Customer app</title></head><body><p>app</p></body></html>')
  await page.addScriptTag({ content: `window.bellwetherActivity = {host: ${JSON.stringify(opts.base)}, writeKey: ${JSON.stringify(opts['write-key'])}, userId: ${JSON.stringify(opts.user)}}` })
  await page.addScriptTag({ url: `${opts.base}/js/activity.js` })

  // Request events reach this process asynchronously: wait (bounded) for the count to
  // reach what is expected, then confirm it did not go past it.
  const expectPings = async (step, expected) => {
    const deadline = Date.now() + 5000
    while (pings < expected && Date.now() < deadline) await new Promise((resolve) => setImmediate(resolve))
    await page.evaluate(() => 0)
    if (pings !== expected) {
      console.error(`step "${step}": ${pings} pings, expected ${expected}`)
      failed = true
    }
  }
  const setVisible = (visible) =>
    page.evaluate((v) => {
      Object.defineProperty(document, 'visibilityState', { value: v ? 'visible' : 'hidden', configurable: true })
      document.dispatchEvent(new Event('visibilitychange'))
    }, visible)

  await page.clock.runFor(120_000)
  await expectPings('open tab, nobody there for 2 minutes', 0)
  await page.mouse.move(100, 100)
  await expectPings('first mouse move', 1)
  await page.mouse.move(120, 130)
  await page.clock.runFor(30_000)
  await page.mouse.move(140, 150)
  await expectPings('more activity within the same minute', 1)
  await page.clock.runFor(31_000)
  await expectPings('a minute after the last ping, active 31 s ago', 2)
  await page.clock.runFor(120_000)
  await expectPings('idle for 2 minutes', 2)
  await page.keyboard.press('a')
  await expectPings('typing after idling', 3)
  await setVisible(false)
  await page.clock.runFor(61_000)
  await page.mouse.move(10, 10)
  await page.clock.runFor(10_000)
  await expectPings('hidden tab', 3)
  await setVisible(true)
  await expectPings('visible again after recent activity', 4)
  if (opts.screenshot) await page.screenshot({ path: opts.screenshot })
  console.log(JSON.stringify({ pings }))
} finally {
  await browser.close()
}
process.exit(failed ? 1 : 0)
