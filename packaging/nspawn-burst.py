#!/usr/bin/env python3
"""A burst of deliveries for the systemd test (packaging/test-systemd-nspawn.sh).

Serves as Motion (notify calls) and Graph (profile lookups) on 127.0.0.1:PORT, sends
COUNT signed Messenger messages to the daemon's webhook in batches, one badly signed
webhook in the middle of the burst (its WARN line must reach the journal), and exits 0
once Motion has received every message.

usage: nspawn-burst.py PORT WEBHOOK_URL APP_SECRET PAGE_ID COUNT
"""

import hashlib
import hmac
import http.client
import http.server
import json
import ssl
import sys
import threading
import time
import urllib.parse

port, webhook_url, secret, page, count = sys.argv[1:6]
port, count = int(port), int(count)
received = set()
lock = threading.Lock()


class Peer(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        notify = json.loads(self.rfile.read(length) or b"{}")
        with lock:
            received.add(notify.get("body"))
        self._answer({"message": "ok"})

    def do_GET(self):
        self._answer({"first_name": "Burst", "last_name": "Customer"})

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Peer)
server.daemon_threads = True
threading.Thread(target=server.serve_forever, daemon=True).start()

url = urllib.parse.urlsplit(webhook_url)
context = ssl._create_unverified_context()
conn = http.client.HTTPSConnection(url.hostname, url.port or 443, context=context, timeout=30)


def post(body, signature):
    conn.request("POST", url.path, body=body, headers={
        "content-type": "application/json", "x-hub-signature-256": signature})
    response = conn.getresponse()
    response.read()
    return response.status


BATCH = 500
now = int(time.time() * 1000)
for start in range(0, count, BATCH):
    events = [{
        "sender": {"id": str(7000000 + n % 20)},
        "recipient": {"id": page},
        "timestamp": now + n,
        "message": {"mid": f"m.burst.{n}", "text": f"burst {n}"},
    } for n in range(start, min(start + BATCH, count))]
    body = json.dumps({"object": "page", "entry": [
        {"id": page, "time": now, "messaging": events}]}).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    status = post(body, signature)
    if status != 200:
        sys.exit(f"batch at {start} answered {status}")
    if start == count // 2:
        # A WARN in the middle of the burst.
        if post(b'{"object":"page","entry":[]}', "sha256=" + "0" * 64) != 403:
            sys.exit("the badly signed webhook was not refused")

deadline = time.time() + 120
while time.time() < deadline:
    with lock:
        got = sum(1 for b in received if b and b.startswith("burst "))
    if got >= count:
        print(f"Motion received all {count} messages")
        sys.exit(0)
    time.sleep(0.2)
sys.exit(f"Motion received {got} of {count} messages")
