"""Scratch: the floor of a devinit Redis GET in one Python process: uvloop + httptools protocol
(one write per response) + one multiplexed hiredis connection running devinit's EVALSHA.
Usage: raw_redis_get.py HTTP_PORT REDIS_PORT"""
import asyncio, sys, collections, uvloop, httptools, hiredis
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from devinit.state.redis import _GET
class Redis(asyncio.Protocol):
    def __init__(self): self.r = hiredis.Reader(); self.w = collections.deque()
    def connection_made(self, t): self.t = t
    def data_received(self, d):
        self.r.feed(d)
        while (x := self.r.gets()) is not False: self.w.popleft()(x)
    def call(self, cb, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode(); out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.t.write(b"".join(out)); self.w.append(cb)
R = None; SHA = None
class P(asyncio.Protocol):
    def connection_made(self, t): self.t = t; self.p = httptools.HttpRequestParser(self)
    def data_received(self, d): self.p.feed_data(d)
    def on_url(self, url): self.url = url
    def on_message_complete(self):
        key = self.url.rsplit(b"/", 1)[1]
        def done(reply, t=self.t):
            data, version, pttl = reply
            t.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\netag: %s\r\ncontent-length: %d\r\n\r\n%s" % (version, len(data), data))
        R.call(done, b"EVALSHA", SHA, b"1", key)
async def main():
    global R, SHA
    loop = asyncio.get_running_loop()
    _, R = await loop.create_connection(Redis, "127.0.0.1", int(sys.argv[2]))
    f = loop.create_future(); R.call(f.set_result, "SCRIPT", "LOAD", _GET); SHA = await f
    s = await loop.create_server(P, "127.0.0.1", int(sys.argv[1]), backlog=2048)
    await s.serve_forever()
uvloop.run(main())
