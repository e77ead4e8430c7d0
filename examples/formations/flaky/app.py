"""flaky: a service that crashes, so fsup has something to restart.

It exits with code 1 after CRASH_AFTER seconds (0 disables that) or when asked with GET /crash.
Each crash shows in `GET /rpc/formations/flaky`: status `restarting`, a growing restart_count.
"""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/crash"):
            self.reply(200, {"crashing": True})
            print("flaky: crashing on request", file=sys.stderr, flush=True)
            os._exit(1)
        self.reply(200, {"ok": True, "pid": os.getpid()})

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def log_message(self, fmt, *args):
        if self.path.startswith("/health"):
            return  # fsup's probes: one every few seconds, not worth a line each
        print(f"{self.address_string()} {fmt % args}", flush=True)


def crash_later(seconds):
    print(f"flaky: crashing after {seconds:g}s as configured", file=sys.stderr, flush=True)
    os._exit(1)


def main():
    crash_after = float(os.environ.get("CRASH_AFTER", "0"))
    if crash_after > 0:
        timer = threading.Timer(crash_after, crash_later, args=(crash_after,))
        timer.daemon = True
        timer.start()
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    print(f"flaky listening on port {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
