"""Scratch: the floor of a devinit Redis GET in one Python process: uvloop + httptools protocol
(one write per response) + one multiplexed hiredis connection sending devinit's read
(HMGET + PTTL, state/redis.pack_read).
Usage: raw_redis_get.py HTTP_PORT REDIS_PORT"""

import asyncio
import collections
import sys

import hiredis
import httptools
import uvloop

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from devinit.state.redis import pack_read


class Redis(asyncio.Protocol):
    def __init__(self):
        self.r = hiredis.Reader()
        self.w = collections.deque()

    def connection_made(self, t):
        self.t = t

    def data_received(self, d):
        self.r.feed(d)
        while (x := self.r.gets()) is not False:
            cb = self.w.popleft()
            if cb is not None:
                cb(x)

    def call(self, cb, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.t.write(b"".join(out))
        self.w.append(cb)


R = None


class P(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t
        self.p = httptools.HttpRequestParser(self)

    def data_received(self, d):
        self.p.feed_data(d)

    def on_url(self, url):
        self.url = url

    def on_message_complete(self):
        key = self.url.rsplit(b"/", 1)[1]

        def done(fields, t=self.t):  # the HMGET's reply; the PTTL's is dropped
            data, version = fields
            t.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\netag: %s\r\ncontent-length: %d\r\n\r\n%s"
                % (version, len(data), data)
            )

        R.t.write(pack_read(key.decode()))
        R.w.append(done)
        R.w.append(None)


async def main():
    global R
    loop = asyncio.get_running_loop()
    _, R = await loop.create_connection(Redis, "127.0.0.1", int(sys.argv[2]))
    s = await loop.create_server(P, "127.0.0.1", int(sys.argv[1]), backlog=2048)
    await s.serve_forever()


uvloop.run(main())
