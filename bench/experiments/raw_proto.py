"""Scratch: the ceiling of a hand-written uvloop + httptools protocol (no ASGI), one write per
response with Content-Length. Usage: raw_proto.py PORT"""

import asyncio
import sys

import httptools
import uvloop

BODY = b'"' + b"x" * 1022 + b'"'
RESP = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1024\r\n\r\n" + BODY


class P(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t
        self.p = httptools.HttpRequestParser(self)

    def data_received(self, d):
        self.p.feed_data(d)

    def on_url(self, url):
        self.url = url

    def on_message_complete(self):
        self.t.write(RESP)


async def main():
    s = await asyncio.get_running_loop().create_server(P, "127.0.0.1", int(sys.argv[1]), backlog=2048)
    await s.serve_forever()


uvloop.run(main())
