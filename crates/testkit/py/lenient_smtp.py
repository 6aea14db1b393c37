#!/usr/bin/env python3
"""A lenient SMTP receiver, like the ones SMTP smuggling (CVE-2023-51764 and kin) abuses:
plain TCP on 127.0.0.1, and the end of DATA is any line holding only "." whatever ends
its lines: CRLF, a bare LF or a bare CR. Whatever follows is read as commands of the
same session. Every command line is appended to OUT_DIR/commands.log, and every message
to OUT_DIR/NNNNNN.eml.

Binds port 0 and prints "PORT <n>" once listening.   Command-line: lenient_smtp.py OUT_DIR
"""

import asyncio
import os
import re
import sys

END = re.compile(rb"(?:\r\n|\r|\n)\.(?:\r\n|\r|\n)")


class Session:
    def __init__(self, out_dir, reader, writer):
        self.out_dir, self.reader, self.writer = out_dir, reader, writer
        self.buf = b""

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
                await self.reply("250-lenient.test\r\n250-8BITMIME\r\n250 SMTPUTF8")
            elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                await self.reply("250 ok")
            elif verb == b"DATA":
                await self.reply("354 go ahead")
                body = await self.data()
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

    async def handle(reader, writer):
        try:
            await Session(out_dir, reader, writer).run()
        except (EOFError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print("PORT %d" % server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
