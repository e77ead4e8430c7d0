"""hello: answers GET / with a greeting and GET /health with {"ok": true}.

Uses only the standard library so it runs wherever fsup runs. Reads PORT, HOST, GREETING,
FORMATION_ID and FORMATION_VERSION from the environment fsup gives it.
"""

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ.get("FORMATION_VERSION", "dev")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/health"):
            self.reply(200, {"ok": True})
        else:
            greeting = os.environ.get("GREETING", "hello")
            self.reply(
                200,
                {"message": f"{greeting} from {VERSION}", "path": self.path, "pid": os.getpid()},
            )

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        if self.path.startswith("/health"):
            return  # fsup's probes: one every few seconds, not worth a line each
        print(f"{self.address_string()} {fmt % args}", flush=True)


def main():
    server = ThreadingHTTPServer(
        (os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"])), Handler
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"hello {VERSION} listening on port {server.server_port}", flush=True)
    try:
        server.serve_forever()
    finally:
        print("hello: stopping", flush=True)


if __name__ == "__main__":
    main()
