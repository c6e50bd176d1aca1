#!/usr/bin/env python3
"""A real HTTP server standing in for Slack and webhook targets in bellwether's tests.

Every POST is appended to --log as one JSON line (path, headers, body, status answered)
when it arrives. --fail-first N answers 500 to the first N requests; --hold-first S keeps
the first request S seconds before answering (to kill bellwether mid-delivery). Like a
careful receiver, it applies each Idempotency-Key once and answers 200 to repeats.
Writes its port to --port-file once listening.
"""
import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--log", required=True)
parser.add_argument("--port-file", required=True)
parser.add_argument("--fail-first", type=int, default=0)
parser.add_argument("--hold-first", type=float, default=0.0)
args = parser.parse_args()

lock = threading.Lock()
state = {"requests": 0, "applied": set()}


class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode("utf-8")
        with lock:
            state["requests"] += 1
            n = state["requests"]
            key = self.headers.get("idempotency-key")
            status = 500 if n <= args.fail_first else 200
            repeat = status == 200 and key in state["applied"]
            if status == 200:
                state["applied"].add(key)
            with open(args.log, "a") as log:
                log.write(json.dumps({"n": n, "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                      "body": body, "status": status, "repeat": repeat}) + "\n")
        if n == 1 and args.hold_first:
            time.sleep(args.hold_first)
        self.send_response(status)
        self.send_header("content-type", "text/plain")
        self.end_headers()
        self.wfile.write(b"ok" if status == 200 else b"try again")

    def log_message(self, *_):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
with open(args.port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os
os.replace(args.port_file + ".tmp", args.port_file)
server.serve_forever()
