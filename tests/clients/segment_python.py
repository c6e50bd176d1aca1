#!/usr/bin/env python3
"""Send a fixed scenario through the official Segment Python library.

Used by bellwether's integration tests as a subprocess. Every message goes
through `segment.analytics.Client` (no hand-made HTTP). Install with:

    pip install segment-analytics-python==2.4.0

Usage:
    segment_python.py --host http://127.0.0.1:PORT --write-key KEY --prefix P
                      [--gzip] [--max-retries N] [--deadline SECONDS]

On success prints ONE JSON line to stdout:
    {"library": "analytics-python", "version": "...", "messages": [...]}
listing every message in send order with the messageId the library assigned.
Exits non-zero if the library reported any delivery error (on_error callback,
full queue) or if the deadline passes. Logs go to stderr.
"""
import argparse
import datetime
import json
import logging
import os
import sys
import threading

from segment.analytics import Client
from segment.analytics.version import VERSION


def summarize(msg):
    """The fields the integration test checks, taken from the message as queued."""
    out = {
        "type": msg["type"],
        "messageId": msg["messageId"],
        "userId": msg.get("userId"),
        "anonymousId": msg.get("anonymousId"),
        "timestamp": msg.get("timestamp"),
    }
    t = msg["type"]
    if t == "track":
        out["event"] = msg["event"]
    elif t in ("page", "screen"):
        out["name"] = msg.get("name")
    elif t == "group":
        out["groupId"] = msg["groupId"]
    elif t == "alias":
        out["previousId"] = msg["previousId"]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", required=True, help="base URL, e.g. http://127.0.0.1:8080 (library appends /v1/batch)")
    ap.add_argument("--write-key", required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--gzip", action="store_true", help="send Content-Encoding: gzip bodies")
    ap.add_argument("--max-retries", type=int, default=3, help="library retries per batch (library default 10)")
    ap.add_argument("--deadline", type=float, default=120.0, help="hard limit in seconds for the whole run")
    args = ap.parse_args()

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="segment_python: %(levelname)s %(message)s")
    log = logging.getLogger("segment_python")

    def on_deadline():
        log.error("deadline of %ss passed before the library finished delivering", args.deadline)
        sys.stderr.flush()
        os._exit(3)

    watchdog = threading.Timer(args.deadline, on_deadline)
    watchdog.daemon = True
    watchdog.start()

    errors = []
    errors_lock = threading.Lock()

    def on_error(exc, batch):
        with errors_lock:
            errors.append((exc, [m.get("messageId") for m in batch]))
        log.error("delivery failed for %d message(s): %s", len(batch), exc)

    client = Client(
        args.write_key,
        host=args.host,
        on_error=on_error,
        gzip=args.gzip,
        max_retries=args.max_retries,
        # Bound retry/rate-limit waits so a broken server makes us fail, not hang.
        max_total_backoff_duration=max(1.0, args.deadline / 2),
        max_rate_limit_duration=max(1.0, args.deadline / 2),
    )

    p = args.prefix
    u1, u2, anon = f"{p}-u1", f"{p}-u2", f"{p}-anon"
    messages = []
    enqueue_failures = 0

    def record(result):
        nonlocal enqueue_failures
        ok, msg = result
        if not ok:
            enqueue_failures += 1
            log.error("library refused to queue %s %s (queue full)", msg.get("type"), msg.get("messageId"))
        messages.append(summarize(msg))

    # a. identify
    record(client.identify(user_id=u1, traits={"email": f"{u1}@example.com", "name": "Ada"}))
    # b. group
    record(client.group(user_id=u1, group_id=f"{p}-acct", traits={"name": f"Acme {p}", "plan": "pro"}))
    # c. track with an explicit timestamp
    record(
        client.track(
            user_id=u1,
            event="Report Created",
            properties={"rows": 42, "format": "pdf"},
            timestamp=datetime.datetime(2026, 1, 15, 10, 0, 0, tzinfo=datetime.timezone.utc),
        )
    )
    # d. page
    record(client.page(user_id=u1, name="Dashboard", properties={"path": "/dash"}))
    # e. screen
    record(client.screen(user_id=u2, name="Home"))
    # f. anonymous track, then alias
    record(client.track(anonymous_id=anon, event="Visited Pricing"))
    record(client.alias(previous_id=anon, user_id=u2))
    # g. 300 tracks -> several batches
    for n in range(300):
        record(client.track(user_id=u2, event="Feature Used", properties={"i": n}))

    log.info("queued %d messages, flushing", len(messages))
    client.flush()  # blocks until every queued message was uploaded or reported to on_error
    client.join()  # stop the consumer thread(s)
    watchdog.cancel()

    if errors or enqueue_failures:
        failed = sum(len(ids) for _, ids in errors)
        log.error("FAILED: %d delivery error(s) covering %d message(s), %d enqueue failure(s)", len(errors), failed, enqueue_failures)
        return 1

    print(json.dumps({"library": "analytics-python", "version": VERSION, "messages": messages}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
