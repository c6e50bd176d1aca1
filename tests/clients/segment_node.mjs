#!/usr/bin/env node
// Send a fixed scenario through the official Segment Node library
// (@segment/analytics-node). Used by bellwether's integration tests as a
// subprocess. Every message goes through the library (no hand-made HTTP).
// Install with `npm ci` in this folder (node_modules is not committed).
//
// Usage:
//   node segment_node.mjs --host http://127.0.0.1:PORT --write-key KEY --prefix P
//                         [--max-retries N] [--flush-at N] [--deadline SECONDS]
//
// On success prints ONE JSON line to stdout:
//   {"library": "@segment/analytics-node", "version": "...", "messages": [...]}
// listing every message in send order with the messageId the library assigned.
// Exits non-zero if the library reported any delivery error ('error' event or
// a callback error), if any message was never settled, or on the deadline.
// Logs go to stderr. The library cannot gzip, so there is no --gzip here.

import { Analytics } from '@segment/analytics-node'
import { parseArgs } from 'node:util'

const log = (...a) => console.error('segment_node:', ...a)

const { values: opts } = parseArgs({
  options: {
    host: { type: 'string' },
    'write-key': { type: 'string' },
    prefix: { type: 'string' },
    'max-retries': { type: 'string', default: '3' },
    'flush-at': { type: 'string', default: '15' },
    deadline: { type: 'string', default: '120' },
  },
  strict: true,
})
for (const k of ['host', 'write-key', 'prefix']) {
  if (!opts[k]) {
    log(`missing --${k}`)
    process.exit(2)
  }
}
const deadlineS = Number(opts.deadline)

const watchdog = setTimeout(() => {
  log(`deadline of ${deadlineS}s passed before the library finished delivering`)
  process.exit(3)
}, deadlineS * 1000)

const analytics = new Analytics({
  writeKey: opts['write-key'],
  host: opts.host, // path defaults to /v1/batch
  maxRetries: Number(opts['max-retries']),
  flushAt: Number(opts['flush-at']),
  // Bound retry/rate-limit waits so a broken server makes us fail, not hang.
  maxTotalBackoffDuration: Math.max(1, deadlineS / 2),
  maxRateLimitDuration: Math.max(1, deadlineS / 2),
})

const errors = []
const logError = (...a) => {
  // one failing batch reports every event twice (error event + callback): keep stderr short
  if (errors.length <= 10) log(...a)
  else if (errors.length === 11) log('(further error reports suppressed)')
}
analytics.on('error', (err) => {
  errors.push(err)
  logError('error event:', err.code, String(err.reason), err.ctx?.event?.messageId ?? '')
})
analytics.on('call_after_close', (ev) => {
  errors.push({ code: 'call_after_close', reason: ev.type })
  log('call after close:', ev.type)
})

const messages = []
let settled = 0

// Every call gets a callback; the ctx it receives carries the event exactly as
// the library serialized it, including the messageId it assigned.
function send(method, params) {
  const idx = messages.length
  messages.push(null)
  analytics[method](params, (err, ctx) => {
    settled++
    if (err) {
      errors.push({ code: 'callback', reason: err })
      logError(`callback error for ${method} #${idx}:`, String(err))
    }
    const ev = ctx?.event ?? {}
    const ts = ev.timestamp instanceof Date ? ev.timestamp.toISOString() : ev.timestamp ?? null
    const out = {
      type: ev.type,
      messageId: ev.messageId,
      userId: ev.userId ?? null,
      anonymousId: ev.anonymousId ?? null,
      timestamp: ts,
    }
    if (ev.type === 'track') out.event = ev.event
    else if (ev.type === 'page' || ev.type === 'screen') out.name = ev.name ?? null
    else if (ev.type === 'group') out.groupId = ev.groupId
    else if (ev.type === 'alias') out.previousId = ev.previousId
    messages[idx] = out
  })
}

const p = opts.prefix
const u1 = `${p}-u1`
const u2 = `${p}-u2`
const anon = `${p}-anon`

// a. identify
send('identify', { userId: u1, traits: { email: `${u1}@example.com`, name: 'Ada' } })
// b. group
send('group', { userId: u1, groupId: `${p}-acct`, traits: { name: `Acme ${p}`, plan: 'pro' } })
// c. track with an explicit timestamp (a string is passed through verbatim)
send('track', {
  userId: u1,
  event: 'Report Created',
  properties: { rows: 42, format: 'pdf' },
  timestamp: '2026-01-15T10:00:00Z',
})
// d. page
send('page', { userId: u1, name: 'Dashboard', properties: { path: '/dash' } })
// e. screen
send('screen', { userId: u2, name: 'Home' })
// f. anonymous track, then alias
send('track', { anonymousId: anon, event: 'Visited Pricing' })
send('alias', { previousId: anon, userId: u2 })
// g. 300 tracks -> several batches (flushAt per batch)
for (let n = 0; n < 300; n++) {
  send('track', { userId: u2, event: 'Feature Used', properties: { i: n } })
}

log(`dispatched ${messages.length} messages, flushing`)
// Resolves once every event's callback ran (delivered or failed); on timeout it
// aborts the in-flight batches, which then fail through the callbacks.
await analytics.closeAndFlush({ timeout: deadlineS * 900 })
clearTimeout(watchdog)

const unsettled = messages.length - settled
if (unsettled > 0) {
  log(`${unsettled} message(s) were never settled by the library`)
}
if (errors.length || unsettled > 0) {
  log(`FAILED: ${errors.length} delivery error report(s), ${unsettled} unsettled`)
  process.exit(1)
}

console.log(JSON.stringify({ library: '@segment/analytics-node', version: analytics.VERSION, messages }))
