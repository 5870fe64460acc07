#!/usr/bin/env python3
"""Records simulator traffic for the fuzz seed corpus (see fuzz/seeds/README.md).

A loopback reverse proxy: listens on LISTEN_PORT, forwards every POST to the reference sync
server at UPSTREAM, and appends {path, request, response, status} per exchange as one JSON
line to OUT. Run it between `tether-pro simulate` and `tether-pro sync-server`.
"""
import http.server, json, sys, urllib.request, urllib.error

LISTEN_PORT, UPSTREAM, OUT = int(sys.argv[1]), sys.argv[2], sys.argv[3]


class Proxy(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        req = urllib.request.Request(UPSTREAM + self.path, data=body, method="POST")
        for h in ("Content-Type", "X-Tether-Client-Version"):
            if self.headers.get(h):
                req.add_header(h, self.headers[h])
        try:
            with urllib.request.urlopen(req) as r:
                status, resp = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, resp = e.code, e.read()
        with open(OUT, "a") as f:
            f.write(json.dumps({"path": self.path, "status": status, "request": body.decode(), "response": resp.decode()}) + "\n")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(resp)))
        self.end_headers()
        self.wfile.write(resp)


http.server.ThreadingHTTPServer(("127.0.0.1", LISTEN_PORT), Proxy).serve_forever()
