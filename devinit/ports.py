"""TCP ports on the loopback address: can devinit bind one, and does something answer on one.

The probe binds as devinit's servers will bind: asyncio's ``create_server`` sets
``SO_REUSEADDR`` on POSIX (so does Docker's port publisher), so a port whose last connections
sit in TIME_WAIT after a restart is free to them, and must be free to the probe too. Windows
gets no ``SO_REUSEADDR`` (there it would let two programs share a port, and asyncio does not
set it either).

A bind refused with "access denied" (``EACCES``; ``WinError 10013`` on Windows) is not "in use":
on Windows with Hyper-V or WSL2 (Docker Desktop) whole blocks of ports are reserved, 50001
often among them, and nothing shows in netstat (dapr/dapr#3060); on POSIX it is a port below
1024 without privileges.
"""

from __future__ import annotations

import errno
import socket
import sys
from enum import Enum

LOOPBACK = "127.0.0.1"


class PortState(Enum):
    """What a bind of the port on the loopback address would do."""

    FREE = "free"
    IN_USE = "in use"  # another socket holds it (a listener, or a bound socket)
    RESERVED = "reserved"  # the OS refuses the bind itself (Windows excluded range, privileged port)


def probe(port: int, host: str = LOOPBACK, platform: str | None = None) -> PortState:
    """Bind ``host:port`` as devinit's servers do (see the module docstring), then let it go."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        if (platform or sys.platform) != "win32":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            return classify(e)
    return PortState.FREE


def classify(e: OSError) -> PortState:
    """The state a failed bind means: refused by the OS (EACCES / WinError 10013), else in use."""
    if e.errno == errno.EACCES or getattr(e, "winerror", None) == 10013:
        return PortState.RESERVED
    return PortState.IN_USE


def any_free(host: str = LOOPBACK) -> int:
    """A port the OS says is free on ``host`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def accepts(port: int, host: str = LOOPBACK, timeout: float = 1.0) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def refusal(port: int, option: str, platform: str | None = None) -> str:
    """Why a RESERVED port cannot be used, and what to do (for an error message or a note)."""
    if (platform or sys.platform) == "win32":
        return (
            f"Windows refuses port {port} (WinError 10013: it lies in a range the system reserved, "
            "which Hyper-V, WSL2 and Docker Desktop do; netstat shows nothing there). "
            "'netsh int ipv4 show excludedportrange protocol=tcp' lists the reserved ranges; "
            f"pass {option} with a port outside them"
        )
    return (
        f"the system refuses port {port} (permission denied: below 1024 needs privileges). Pass {option} with a port above 1024"
    )
