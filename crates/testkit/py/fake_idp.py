#!/usr/bin/env python3
"""A fake OAuth2 identity provider for mailferry's tests, on 127.0.0.1 only.

So far it answers what Dovecot's oauth2 passdb asks: token introspection in the shape of
Google's tokeninfo endpoint.

  GET /tokeninfo?access_token=T
    200 {"email": E, "active": true, ...}   when T is listed in TOKENS_FILE ({"T": "E"})
    401 {"error": "invalid_token"}          otherwise

TOKENS_FILE is re-read on every request, so a test grants or revokes a token by rewriting
it. Binds port 0 and prints "PORT <n>" once listening.

Command-line:  fake_idp.py TOKENS_FILE
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class Handler(BaseHTTPRequestHandler):
    tokens_file = None

    def log_message(self, *args):
        pass

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path != "/tokeninfo":
            return self.reply(404, {"error": "not_found"})
        token = parse_qs(url.query).get("access_token", [""])[0]
        try:
            with open(self.tokens_file) as f:
                tokens = json.load(f)
        except FileNotFoundError:
            tokens = {}
        email = tokens.get(token)
        if email is None:
            return self.reply(401, {"error": "invalid_token", "error_description": "Invalid Value"})
        return self.reply(200, {"email": email, "active": True, "email_verified": "true",
                                "scope": "https://mail.google.com/", "expires_in": "3599"})


def main():
    Handler.tokens_file = sys.argv[1]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print("PORT %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
