"""The bound on a listener's open connections, shared by the HTTP/1.1 and gRPC front ends.

Past the cap a new connection is told why (HTTP: 503; gRPC: GOAWAY ENHANCE_YOUR_CALM) and
closed, after a short linger so that the client reads the answer rather than a reset. Refused
connections lingering at once are bounded too: in a burst, the rest are closed at once. The log
says so once each time the cap is reached, not once per refused connection.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Generic, TypeVar

MAX_CONNECTIONS = 1024
T = TypeVar("T")

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


class ListenerCap(Generic[T]):
    """The connections one listener serves (``connections``, at most ``limit``), and the
    refusals past that."""

    def __init__(self, log: logging.Logger, kind: str, advice: str, limit: int | None = None) -> None:
        self.log = log
        self.kind = kind  # "HTTP" / "gRPC", for the message
        self.advice = advice  # what a client should do, for the message
        self.limit = connection_cap() if limit is None else limit
        self.connections: set[T] = set()  # served, open
        self.refusing = False  # at the cap, and said so in the log
        self.lingering = 0  # refused connections not closed yet

    def admit(self, conn: T) -> bool:
        """Serve ``conn`` (True), or not: the listener is at its cap (then ``refuse`` it)."""
        if len(self.connections) >= self.limit:
            return False
        self.connections.add(conn)
        return True

    def refuse(self, where: str, transport: asyncio.BaseTransport) -> tuple[str, bool]:
        """Count a connection ``admit`` turned away: (why, for the client; whether to close it
        at once rather than linger). ``where`` is the listener's host:port."""
        self.lingering += 1
        message = (
            f"{len(self.connections)} {self.kind} connections are open on {where}, the most devinit serves at once: "
            f"{self.advice} and retry"
        )
        if not self.refusing:
            self.refusing = True
            self.log.warning("refusing a connection from %s: %s", transport.get_extra_info("peername"), message)
        return message, self.lingering > MAX_LINGERING

    def release(self, conn: T) -> None:
        """``conn`` ended, served or refused; below the cap again, the next refusal is logged again."""
        if conn not in self.connections:
            self.lingering -= 1  # one that was refused
            return
        self.connections.discard(conn)
        if self.refusing and len(self.connections) < self.limit:
            self.refusing = False
