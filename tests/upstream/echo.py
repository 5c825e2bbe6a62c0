#!/usr/bin/env python3
"""Echo upstream for the oidc-filter demo and end-to-end tests (standard library only).

Listens on 127.0.0.1:$PORT (default 9602) and answers every method and path with
200 and a JSON description of the request it received:

    {"method": "GET", "path": "/some/page?x=1",
     "headers": {"lower-cased name": "value" or ["value", ...] when repeated},
     "body": "..."}

Header values are decoded as ISO-8859-1, so arbitrary bytes survive (as \\u00XX escapes).

The answer carries `Cache-Control: no-store`, unless the query has `cache_control=VALUE`:
then VALUE (e.g. `public, max-age=600`), or no Cache-Control at all when VALUE is empty.
"""

import json
import os
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "echo-upstream"

    def _echo(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        headers = {}
        for name, value in self.headers.items():
            key = name.lower()
            if key in headers:
                prev = headers[key]
                headers[key] = prev + [value] if isinstance(prev, list) else [prev, value]
            else:
                headers[key] = value
        payload = {
            "method": self.command,
            "path": self.path,
            "headers": headers,
            "body": body.decode("utf-8", errors="replace"),
        }
        out = json.dumps(payload, indent=2, sort_keys=True).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query, keep_blank_values=True)
        cache_control = query.get("cache_control", ["no-store"])[0]
        if cache_control:
            self.send_header("Cache-Control", cache_control)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _echo

    def log_message(self, fmt, *args):
        if os.environ.get("ECHO_LOG"):
            sys.stderr.write("echo: " + (fmt % args) + "\n")


def main():
    port = int(os.environ.get("PORT", "9602"))
    server = ThreadingHTTPServer(("127.0.0.1", port), EchoHandler)
    server.daemon_threads = True
    print(f"echo upstream ready on http://127.0.0.1:{port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
