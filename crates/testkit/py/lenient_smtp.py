#!/usr/bin/env python3
"""A lenient SMTP receiver, like the ones SMTP smuggling (CVE-2023-51764 and kin) abuses:
plain TCP on 127.0.0.1, and the end of DATA is any line holding only "." whatever ends
its lines: CRLF, a bare LF or a bare CR. Whatever follows is read as commands of the
same session. Every command line is appended to OUT_DIR/commands.log, and every message
to OUT_DIR/NNNNNN.eml.

With CHAIN and KEY it offers STARTTLS and answers it the way a man in the middle makes
it answer (Poddebniak et al., "Why TLS is better without STARTTLS", USENIX Security
2021, the client-side "response injection"): "220" and, in the same plain-text packet,
a reply to a command the client has not sent yet ("250 injected.example"), then the
TLS handshake. A client that keeps the plain-text bytes it read ahead takes that line
for the server's reply to its EHLO over TLS.

With --pipelining it offers PIPELINING (RFC 2920), refuses RCPT for any address that
holds "refused" (550) while still taking DATA with 354: RFC 2920 section 3.1 warns
clients that a server may accept DATA after refused RCPTs ("the client cannot assume
that the DATA command will be rejected just because none of the RCPT TO commands
worked"), and Postfix's smtpd answers DATA with 354 once any recipient was accepted
(its "554 5.5.1 Error: no valid recipients" comes only when none was). It appends to
OUT_DIR/reads.log how many whole command lines each read from the client brought.

Binds port 0 and prints "PORT <n>" once listening.
Command-line: lenient_smtp.py OUT_DIR [--tls CHAIN KEY] [--pipelining]
"""

import asyncio
import os
import re
import ssl
import sys

END = re.compile(rb"(?:\r\n|\r|\n)\.(?:\r\n|\r|\n)")


class Session:
    def __init__(self, out_dir, reader, writer, tls=None, pipelining=False):
        self.out_dir, self.reader, self.writer = out_dir, reader, writer
        self.buf = b""
        self.tls, self.encrypted = tls, False
        self.pipelining, self.in_data = pipelining, False

    def log(self, line):
        with open(os.path.join(self.out_dir, "commands.log"), "ab") as f:
            f.write(line + b"\n")

    async def reply(self, text):
        self.writer.write(text.encode() + b"\r\n")
        await self.writer.drain()

    async def fill(self):
        chunk = await self.reader.read(65536)
        if not chunk:
            raise EOFError
        self.buf += chunk
        if self.pipelining and not self.in_data:
            with open(os.path.join(self.out_dir, "reads.log"), "a") as f:
                f.write("%d\n" % len(re.findall(rb"\r\n", self.buf)))

    async def line(self):
        while True:
            m = re.search(rb"\r\n|\r|\n", self.buf)
            if m:
                line, self.buf = self.buf[:m.start()], self.buf[m.end():]
                if m.group() == b"\r" and self.buf.startswith(b"\n"):
                    self.buf = self.buf[1:]
                return line
            await self.fill()

    async def data(self):
        # DATA right after the 354: the terminator may also come first.
        self.buf = b"\n" + self.buf
        while True:
            m = END.search(self.buf)
            if m:
                body, self.buf = self.buf[1:m.start()], self.buf[m.end():]
                return body
            await self.fill()

    async def run(self):
        await self.reply("220 lenient.test ESMTP")
        while True:
            line = await self.line()
            self.log(line)
            verb = line.split(b" ", 1)[0].upper()
            if verb in (b"EHLO", b"HELO"):
                starttls = "250-STARTTLS\r\n" if self.tls and not self.encrypted else ""
                if self.pipelining:
                    starttls += "250-PIPELINING\r\n"
                await self.reply("250-lenient.test\r\n%s250-8BITMIME\r\n250 SMTPUTF8" % starttls)
            elif verb == b"RCPT" and self.pipelining and b"refused" in line.lower():
                await self.reply("550 5.1.1 <refused>: Recipient address rejected: User unknown")
            elif verb == b"STARTTLS" and self.tls and not self.encrypted:
                await self.reply("220 go ahead\r\n250 injected.example")
                await self.writer.start_tls(self.tls)
                self.encrypted, self.buf = True, b""
            elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                await self.reply("250 ok")
            elif verb == b"DATA":
                await self.reply("354 go ahead")
                self.in_data = True
                body = await self.data()
                self.in_data = False
                n = len([f for f in os.listdir(self.out_dir) if f.endswith(".eml")])
                with open(os.path.join(self.out_dir, "%06d.eml" % n), "wb") as f:
                    f.write(body)
                await self.reply("250 queued as %d" % n)
            elif verb == b"QUIT":
                await self.reply("221 bye")
                return
            else:
                await self.reply("500 what")


async def main():
    out_dir = sys.argv[1]
    tls, pipelining = None, "--pipelining" in sys.argv
    if "--tls" in sys.argv:
        at = sys.argv.index("--tls")
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(sys.argv[at + 1], sys.argv[at + 2])

    async def handle(reader, writer):
        try:
            await Session(out_dir, reader, writer, tls, pipelining).run()
        except (EOFError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print("PORT %d" % server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
