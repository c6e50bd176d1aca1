#!/usr/bin/env python3
"""An SMTP server (aiosmtpd) standing in for a mail relay in bellwether's tests: every
message is appended to --log as one JSON line (from, to, subject, the raw message and its
decoded text body). Writes its port to --port-file once listening."""
import argparse
import email
import json
import os
import socket
import time

from aiosmtpd.controller import Controller

parser = argparse.ArgumentParser()
parser.add_argument("--log", required=True)
parser.add_argument("--port-file", required=True)
args = parser.parse_args()


class Handler:
    async def handle_DATA(self, server, session, envelope):
        parsed = email.message_from_bytes(envelope.content)
        body = parsed.get_payload(decode=True).decode(parsed.get_content_charset() or "utf-8", "replace")
        with open(args.log, "a") as log:
            log.write(json.dumps({"from": envelope.mail_from, "to": envelope.rcpt_tos, "subject": parsed["subject"],
                                  "message": envelope.content.decode("utf-8", "replace"), "body": body}) + "\n")
        return "250 OK"


probe = socket.socket()
probe.bind(("127.0.0.1", 0))
port = probe.getsockname()[1]
probe.close()
controller = Controller(Handler(), hostname="127.0.0.1", port=port)
controller.start()
with open(args.port_file + ".tmp", "w") as f:
    f.write(str(port))
os.replace(args.port_file + ".tmp", args.port_file)
while True:
    time.sleep(3600)
