#!/usr/bin/env python3
"""A real SMTP receiver for mailferry's tests: aiosmtpd on 127.0.0.1, storing every
accepted message byte-for-byte (after SMTP's own dot-unstuffing) as NNNNNN.eml, with its
envelope in NNNNNN.json.

It binds port 0 itself and prints "PORT <n>" on stdout once listening, so that the caller
never probes for a free port. Behaviour for tests is chosen by a header in the message:

  X-Test-Smtp: 451-once   first attempt gets 451, later attempts are accepted
  X-Test-Smtp: 550        always 550
  X-Test-Smtp: slow       the reply to DATA comes after --slow-seconds

With --known-rcpt ADDR (repeatable), other recipients get Postfix's 550 5.1.1 "User
unknown"; with --allowed-sender ADDR, other envelope senders get Postfix's 553 5.7.1
"not owned by user" (reject_sender_login_mismatch).
With --auth-user/--auth-password, AUTH (PLAIN, LOGIN; after STARTTLS) is required.
With --xoauth2-tokeninfo URL, AUTH XOAUTH2 alone is offered and required; the bearer token
is checked at URL (the fake IdP's tokeninfo), like Dovecot's oauth2 passdb does.

Command-line:  smtp_receiver.py OUT_DIR [--tls-cert F --tls-key F] [--slow-seconds S]
                                        [--auth-user U --auth-password P]
                                        [--xoauth2-tokeninfo URL]
"""

import argparse
import asyncio
import base64
import json
import urllib.error
import urllib.parse
import urllib.request
import os
import re
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Handler:
    def __init__(self, out_dir, slow_seconds):
        self.out_dir = out_dir
        self.slow_seconds = slow_seconds
        self.count = 0
        self.tempfailed = set()

    tokeninfo = None
    known_rcpt = None
    allowed_sender = None

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.allowed_sender is not None and address != self.allowed_sender:
            return "553 5.7.1 <%s>: Sender address rejected: not owned by user %s" % (address, self.allowed_sender)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.known_rcpt is not None and address not in self.known_rcpt:
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown in virtual mailbox table" % address
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def auth_XOAUTH2(self, server, args):
        """RFC-less but documented by Google and Microsoft: base64 of
        "user=U\x01auth=Bearer T\x01\x01" as the initial response."""
        if len(args) < 2:
            return AuthResult(success=False, handled=False)
        try:
            fields = base64.b64decode(args[1]).decode().split("\x01")
            user = next(f[5:] for f in fields if f.startswith("user="))
            token = next(f[len("auth=Bearer "):] for f in fields if f.startswith("auth=Bearer "))
        except Exception:
            return AuthResult(success=False, handled=False)
        url = self.tokeninfo + urllib.parse.quote(token)
        loop = asyncio.get_running_loop()

        def check():
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    return json.load(r).get("email") == user
            except urllib.error.URLError:
                return False
        ok = await loop.run_in_executor(None, check)
        return AuthResult(success=ok, handled=False, auth_data=user)

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or b""
        head = raw.split(b"\r\n\r\n", 1)[0]
        m = re.search(rb"^X-Test-Smtp: *(\S+)", head, re.M | re.I)
        mode = m.group(1).decode() if m else ""
        key = re.search(rb"^Message-ID: *(\S+)", head, re.M | re.I)
        key = key.group(1) if key else raw[:200]
        if mode == "451-once" and key not in self.tempfailed:
            self.tempfailed.add(key)
            return "451 4.3.0 Temporary local problem, try again later"
        if mode == "550":
            return "550 5.7.1 Message rejected by test policy"
        if mode == "slow":
            await asyncio.sleep(self.slow_seconds)
        self.count += 1
        name = "%06d" % self.count
        tmp = os.path.join(self.out_dir, name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(raw)
        with open(os.path.join(self.out_dir, name + ".json"), "w") as f:
            json.dump({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                       "mail_options": envelope.mail_options}, f)
        os.rename(tmp, os.path.join(self.out_dir, name + ".eml"))
        return "250 2.0.0 Ok: queued as %s" % name


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("out_dir")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--slow-seconds", type=float, default=5.0)
    p.add_argument("--auth-user")
    p.add_argument("--auth-password")
    p.add_argument("--xoauth2-tokeninfo")
    p.add_argument("--known-rcpt", action="append")
    p.add_argument("--allowed-sender")
    p.add_argument("--implicit-tls", action="store_true")
    a = p.parse_args()
    ctx = None
    if a.tls_cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.tls_cert, a.tls_key)
    handler = Handler(a.out_dir, a.slow_seconds)
    handler.known_rcpt = a.known_rcpt
    handler.allowed_sender = a.allowed_sender
    loop = asyncio.get_running_loop()
    # --implicit-tls: TLS from the first byte (port 465, RFC 8314), no STARTTLS offered.
    kwargs = {"decode_data": False, "data_size_limit": None, "enable_SMTPUTF8": True,
              "hostname": "receiver.test", "require_starttls": False,
              "tls_context": None if a.implicit_tls else ctx}
    if a.auth_user:
        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (isinstance(auth_data, LoginPassword)
                  and auth_data.login == a.auth_user.encode()
                  and auth_data.password == a.auth_password.encode())
            return AuthResult(success=ok, handled=False)
        # aiosmtpd sees TLS only when it did STARTTLS itself; under implicit TLS the whole
        # connection is TLS already.
        kwargs.update(authenticator=authenticator, auth_required=True,
                      auth_require_tls=not a.implicit_tls)
    if a.xoauth2_tokeninfo:
        handler.tokeninfo = a.xoauth2_tokeninfo
        kwargs.update(authenticator=lambda *args: AuthResult(success=False, handled=False),
                      auth_required=True, auth_require_tls=True,
                      auth_exclude_mechanism=["LOGIN", "PLAIN"])
    server = await loop.create_server(lambda: SMTP(handler, **kwargs), host="127.0.0.1", port=0,
                                      ssl=ctx if a.implicit_tls else None)
    port = server.sockets[0].getsockname()[1]
    print("PORT %d" % port, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
