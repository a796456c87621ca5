"""The bound on a listener's open connections, shared by the HTTP/1.1 and gRPC front ends.

Past the cap a new connection is told why (HTTP: 503; gRPC: GOAWAY ENHANCE_YOUR_CALM) and
closed, after a short linger so that the client reads the answer rather than a reset. Refused
connections lingering at once are bounded too: in a burst, the rest are closed at once. The log
says so once each time the cap is reached, not once per refused connection.
"""

from __future__ import annotations

import asyncio
import logging

MAX_CONNECTIONS = 1024
MAX_LINGERING = 64  # refused connections lingering at once; past it, closed at once


def connection_cap() -> int:
    """``MAX_CONNECTIONS``, or a quarter of the process's file descriptors when that is less
    (macOS' shells give 256): the listeners refuse before accept() fails for want of one."""
    try:
        import resource
    except ImportError:  # Windows: no such limit per process
        return MAX_CONNECTIONS
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(16, min(MAX_CONNECTIONS, soft // 4))


class ListenerCap:
    """How many connections one listener serves at once, and the refusals past that."""

    def __init__(self, log: logging.Logger, kind: str, advice: str, limit: int | None = None) -> None:
        self.log = log
        self.kind = kind  # "HTTP" / "gRPC", for the message
        self.advice = advice  # what a client should do, for the message
        self.limit = connection_cap() if limit is None else limit
        self.refusing = False  # at the cap, and said so in the log
        self.lingering = 0  # refused connections not closed yet

    def full(self, open_connections: int) -> bool:
        return open_connections >= self.limit

    def refuse(self, open_connections: int, where: str, transport: asyncio.BaseTransport) -> tuple[str, bool]:
        """Count a refused connection: (why, for the client; whether to close it at once
        rather than linger). ``where`` is the listener's host:port."""
        self.lingering += 1
        message = (
            f"{open_connections} {self.kind} connections are open on {where}, the most devinit serves at once: "
            f"{self.advice} and retry"
        )
        if not self.refusing:
            self.refusing = True
            self.log.warning("refusing a connection from %s: %s", transport.get_extra_info("peername"), message)
        return message, self.lingering > MAX_LINGERING

    def refused_closed(self) -> None:
        self.lingering -= 1

    def served_closed(self, open_connections: int) -> None:
        """A served connection ended: below the cap again, the next refusal is logged again."""
        if self.refusing and open_connections < self.limit:
            self.refusing = False
