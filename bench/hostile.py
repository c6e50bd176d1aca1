#!/usr/bin/env python3
"""Hostile-traffic probes against a running bellwether (issue 28), loopback only.

Prints what each probe saw; asserts nothing. Clients play different machines by sending from
other loopback addresses (127.0.0.2 ...), which Linux routes to the same host.

  python3 bench/hostile.py --url http://127.0.0.1:PORT --pid PID --write-key KEY \
      --user admin --password SECRET [--flood 64] [--rounds 4]
"""

import argparse
import http.client
import socket
import statistics
import threading
import time
import urllib.parse


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Sampler(threading.Thread):
    """Peak RSS of a process, sampled every 10 ms."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0.0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_mib(self.pid))
            time.sleep(0.01)


def conn(host, port, source=None, timeout=30):
    return http.client.HTTPConnection(host, port, timeout=timeout, source_address=(source, 0) if source else None)


def sign_in(host, port, user, password, source):
    c = conn(host, port, source)
    body = urllib.parse.urlencode({"username": user, "password": password})
    c.request("POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded"})
    status = c.getresponse().status
    c.close()
    return status


def track_latency(host, port, key, stop, out):
    import base64
    auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    i = 0
    while not stop.is_set():
        body = '{"userId":"probe","event":"Probe","messageId":"probe-%d-%f"}' % (i, time.time())
        started = time.monotonic()
        try:
            c = conn(host, port, "127.0.0.250")
            c.request("POST", "/v1/track", body, {"Content-Type": "application/json", "Authorization": auth})
            c.getresponse().read()
            c.close()
            out.append((time.monotonic() - started) * 1000)
        except OSError:
            pass
        i += 1
        time.sleep(0.05)


def until_closed(sock, limit):
    """Seconds until the server closes `sock` (None if still open after `limit`)."""
    sock.settimeout(limit)
    started = time.monotonic()
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return time.monotonic() - started
    except (socket.timeout, TimeoutError):
        return None
    except OSError:
        return time.monotonic() - started


def raw(host, port, source=None):
    s = socket.socket()
    if source:
        s.bind((source, 0))
    s.connect((host, port))
    return s


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--write-key", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--flood", type=int, default=64)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--wait", type=float, default=40.0, help="longest wait for a timeout probe, seconds")
    a = p.parse_args()
    u = urllib.parse.urlparse(a.url)
    host, port = u.hostname, u.port

    print(f"| probe | result |")
    print(f"|---|---|")
    base = rss_mib(a.pid)
    print(f"| RSS at start | {base:.0f} MiB |")

    # 1. Parallel sign-ins with different user names from different addresses.
    sampler = Sampler(a.pid)
    sampler.start()
    stop, latencies = threading.Event(), []
    tracker = threading.Thread(target=track_latency, args=(host, port, a.write_key, stop, latencies), daemon=True)
    tracker.start()
    statuses = {}
    lock = threading.Lock()

    def attacker(i):
        for r in range(a.rounds):
            try:
                s = sign_in(host, port, f"nobody-{i}-{r}", "wrong", f"127.0.{1 + i // 250}.{2 + i % 250}")
            except OSError as e:
                s = type(e).__name__
            with lock:
                statuses[s] = statuses.get(s, 0) + 1

    started = time.monotonic()
    threads = [threading.Thread(target=attacker, args=(i,)) for i in range(a.flood)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flood_s = time.monotonic() - started
    stop.set()
    tracker.join()
    time.sleep(5)
    sampler.stop.set()
    sampler.join()
    idle = rss_mib(a.pid)
    answers = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items(), key=str))
    print(f"| {a.flood} parallel sign-ins x {a.rounds} (other names, other addresses) | {flood_s:.1f} s; answers {answers} |")
    print(f"| RSS peak during / 5 s after | {sampler.peak:.0f} / {idle:.0f} MiB (start {base:.0f}) |")
    if latencies:
        q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
        print(f"| /v1/track latency meanwhile (n={len(latencies)}) | p50 {statistics.median(latencies):.1f} ms, p99 {q[98]:.1f} ms |")

    # 2. The right password from a fresh address while another hammers the same name.
    for _ in range(15):
        sign_in(host, port, a.user, "wrong", "127.0.3.2")
    attacker_now = sign_in(host, port, a.user, "wrong", "127.0.3.2")
    owner = sign_in(host, port, a.user, a.password, "127.0.3.3")
    print(f"| 15 wrong passwords for {a.user} from one address, then | that address gets {attacker_now}; the right password from another gets {owner} |")

    # 3. Slow headers, idle keep-alive, slow body.
    s = raw(host, port)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    closed = until_closed(s, a.wait)
    print(f"| partial request head | closed after {closed:.1f} s |" if closed is not None else f"| partial request head | still open after {a.wait:.0f} s |")
    s.close()
    s = raw(host, port)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    time.sleep(0.2)
    s.recv(65536)
    closed = until_closed(s, a.wait)
    print(f"| idle keep-alive connection | closed after {closed:.1f} s |" if closed is not None else f"| idle keep-alive connection | still open after {a.wait:.0f} s |")
    s.close()
    s = raw(host, port)
    s.sendall(b"POST /v1/track HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"userId\":")
    started = time.monotonic()
    s.settimeout(a.wait)
    try:
        reply = s.recv(4096).split(b"\r\n")[0].decode(errors="replace")
    except (socket.timeout, TimeoutError):
        reply = None
    took = time.monotonic() - started
    print(f"| 10 of 100 announced body bytes | answered {reply!r} after {took:.1f} s |" if reply else f"| 10 of 100 announced body bytes | no answer after {a.wait:.0f} s |")
    s.close()

    # 4. Connections from one address past the cap; then another address.
    held = []
    for _ in range(2000):
        try:
            held.append(raw(host, port, "127.0.4.2"))
        except OSError:
            break
    time.sleep(0.5)
    open_ = 0
    for s in held:
        s.setblocking(False)
        try:
            open_ += 1 if s.recv(1) else 0
        except BlockingIOError:
            open_ += 1
        except OSError:
            pass
    started = time.monotonic()
    c = conn(host, port, "127.0.4.3")
    c.request("GET", "/healthz")
    status = c.getresponse().status
    took = (time.monotonic() - started) * 1000
    print(f"| {len(held)} connections from one address | {open_} kept open; meanwhile another address got {status} in {took:.0f} ms |")
    for s in held:
        s.close()

    # 5. The survey lookup and sign-in page from one address, as fast as it goes.
    counts = {}
    c = conn(host, port, "127.0.5.2")
    started = time.monotonic()
    for _ in range(1000):
        c.request("GET", f"/v1/surveys/pending?userId=probe&writeKey={a.write_key}")
        r = c.getresponse()
        r.read()
        counts[r.status] = counts.get(r.status, 0) + 1
        if r.getheader("connection", "") == "close":
            c.close()
            c = conn(host, port, "127.0.5.2")
    took = time.monotonic() - started
    print(f"| 1,000 survey lookups from one address | {', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))} in {took:.1f} s |")
    print(f"| RSS at end | {rss_mib(a.pid):.0f} MiB |")


if __name__ == "__main__":
    main()
