"""Start, signal and stop an app's process the POSIX way or the Windows way.

Every function takes the platform (``sys.platform`` when None), so that the Windows choices
are real code paths a test can take on Linux.

- POSIX: an app that shares ``devinit run``'s terminal stays in its process group when
  stdin is that terminal (``owns_terminal_input``: it reads stdin, and the terminal's Ctrl-C
  reaches it directly); a signal that does not come from the terminal goes to it and to the
  processes it started in that group (``family``), as a Ctrl-C would reach them. Every other app (``devinit run -f``, whose output devinit
  relays; a single app started by a script, an IDE or CI, with no terminal to share) gets a
  process group of its own, as ``dapr run`` gives it, so that stopping it reaches its children
  too (``npm start`` -> node, ``go run``, a reloader), also when ``devinit run`` is gone.
  Asking it to stop is SIGINT or SIGTERM, after a grace period SIGKILL.
- Windows: no fork and no POSIX signals. An app gets ``CREATE_NEW_PROCESS_GROUP`` so that
  devinit can send its group ``CTRL_BREAK_EVENT`` (a new group does not get the console's
  Ctrl-C: devinit receives it and passes it on), and after the grace period
  ``TerminateProcess`` (``os.kill`` with SIGTERM is that on Windows).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from devinit.daemon import pid_alive

# Win32 values (the signal module defines them on Windows only).
CTRL_BREAK_EVENT = 1
CREATE_NEW_PROCESS_GROUP = 0x00000200
SIGBREAK = 21  # signal.SIGBREAK on Windows: Ctrl-Break, or CTRL_BREAK_EVENT sent to our group

#: seconds an app has to exit after it was asked to stop, before it is killed (as dapr run)
GRACE = 5.0


def _windows(platform: str | None) -> bool:
    return (platform or sys.platform) == "win32"


def popen_kwargs(own_group: bool, platform: str | None = None) -> dict[str, Any]:
    """How to start an app: its own process group, or ``devinit run``'s (POSIX, ``own_group`` False)."""
    if _windows(platform):
        return {"creationflags": CREATE_NEW_PROCESS_GROUP}
    return {"process_group": 0} if own_group else {}


def handled_signals(platform: str | None = None) -> list[int]:
    """The signals ``devinit run`` turns into an orderly stop (apps first, then their servers)."""
    if _windows(platform):
        return [signal.SIGINT, SIGBREAK]
    return [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]


def owns_terminal_input(platform: str | None = None) -> bool:
    """True when stdin is a terminal: the one case where an app must share our process group
    (in a group of its own it is never the terminal's foreground, and reading stdin would stop
    it with SIGTTIN; also after a job started with ``&`` is brought back with ``fg``). Always
    False on Windows (no process groups of that kind)."""
    if _windows(platform):
        return False
    try:
        return os.isatty(0)
    except (OSError, ValueError):
        return False


def terminal_sent_it(sig: int, own_group: bool, platform: str | None = None) -> bool:
    """True when the terminal delivered ``sig`` to the app as well as to us: a Ctrl-C while we,
    and the app in our process group, are the terminal's foreground. Passing it on would give
    the app a second SIGINT (a second KeyboardInterrupt in the middle of its clean-up)."""
    if _windows(platform) or own_group or sig != signal.SIGINT:
        return False
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd):
                return os.tcgetpgrp(fd) == os.getpgrp()
        except OSError:
            continue
    return False


def interrupt(pid: int, own_group: bool, sig: int, platform: str | None = None) -> None:
    """Ask an app to stop: ``sig`` to its group (or, when it shares ours, to it and the
    processes it started in our group: ``family``); on Windows ``CTRL_BREAK_EVENT`` to its
    group, whatever ``sig`` was. Gone already: nothing."""
    try:
        if _windows(platform):
            os.kill(pid, CTRL_BREAK_EVENT)  # GenerateConsoleCtrlEvent for the app's group
        elif own_group:
            os.killpg(pid, sig)  # the app leads its group: pgid == pid
        else:
            _signal_family(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    except OSError:
        if not _windows(platform):
            raise
        # Windows: no console shared with the app (a detached caller): terminate instead.
        kill(pid, own_group, platform)


def kill(pid: int, own_group: bool, platform: str | None = None) -> None:
    """End an app now: SIGKILL to its group (or to it); ``TerminateProcess`` on Windows."""
    try:
        if _windows(platform):
            os.kill(pid, signal.SIGTERM)  # TerminateProcess on Windows
        elif own_group:
            os.killpg(pid, signal.SIGKILL)
        else:
            _signal_family(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    except OSError:
        if not _windows(platform):
            raise


def _signal_family(pid: int, sig: int) -> None:
    """``sig`` to ``pid`` and to its descendants in its process group (found before: once it
    has ended they are another's children). An app that shares our group cannot be signalled
    as a group (the group is ours too); this reaches what a terminal's Ctrl-C reaches."""
    below = family(pid)
    os.kill(pid, sig)
    for p in below:
        try:
            os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass


def family(pid: int) -> list[int]:
    """The descendants of ``pid`` (POSIX) in its process group: children, their children, ...;
    not those that made a group of their own (a terminal's Ctrl-C would not reach them either).
    Linux reads /proc; elsewhere ``ps``. Empty when neither tells."""
    try:
        pgid = os.getpgid(pid)
    except OSError:
        return []
    children: dict[int, list[int]] = {}
    for p, ppid, group in _processes():
        if group == pgid:
            children.setdefault(ppid, []).append(p)
    found: list[int] = []
    todo = [pid]
    while todo and len(found) < 10_000:
        for child in children.pop(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _processes() -> list[tuple[int, int, int]]:
    """(pid, parent pid, process group) of every process we can see."""
    out: list[tuple[int, int, int]] = []
    proc = Path("/proc")
    if proc.is_dir():
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()  # after the command name
                out.append((int(entry.name), int(fields[1]), int(fields[2])))
            except (OSError, ValueError, IndexError):
                continue  # ended meanwhile
        return out
    try:
        ps = subprocess.run(["ps", "-A", "-o", "pid=,ppid=,pgid="], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return out
    for line in ps.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and all(x.isdigit() for x in parts):
            out.append((int(parts[0]), int(parts[1]), int(parts[2])))
    return out


def stop(pid: int, own_group: bool, grace: float = GRACE, platform: str | None = None) -> bool:
    """Ask a process that is not our child to stop, kill it after ``grace`` seconds; True when
    it is gone (with its process group, when it leads one). Used where nobody can wait() for
    it: a server whose ``devinit run`` died, and ``devinit stop``. Windows has no polite way
    from outside the app's console: terminate."""
    if _windows(platform):
        kill(pid, own_group, platform)
    else:
        interrupt(pid, own_group, signal.SIGTERM, platform)
    deadline = time.monotonic() + grace
    if wait_gone(pid, grace, platform) and _group_gone(pid, own_group, deadline, platform):
        return True
    kill(pid, own_group, platform)
    return wait_gone(pid, 5.0, platform) and _group_gone(pid, own_group, time.monotonic() + 5.0, platform)


def group_alive(pgid: int, platform: str | None = None) -> bool:
    """True while process group ``pgid`` has a process in it (POSIX; a group outlives its
    leader while the processes it started live). False on Windows, and for a group that is
    not ours to signal."""
    if _windows(platform):
        return False
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def leftover_group(pgid: int, platform: str | None = None) -> bool:
    """True when process group ``pgid``, led by an app of ours that has ended and been reaped,
    still has processes in it. A pid is not given to another process while a group of that id
    has members; once the group is empty it may be, and the new process may lead a group of its
    own (every job a shell starts does): a live process with that pid means the group is not
    ours any more, and must never be signalled."""
    return not pid_alive(pgid, platform) and group_alive(pgid, platform)


def _group_gone(pgid: int, own_group: bool, deadline: float, platform: str | None) -> bool:
    while own_group and group_alive(pgid, platform):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def end_groups(pgids: list[int], grace: float = GRACE, platform: str | None = None) -> None:
    """Stop what is left in the process groups of apps that have ended (their leaders are
    gone, what they started may not be): SIGTERM, SIGKILL after ``grace`` seconds, all
    groups at once. Nothing on Windows (an app's group there is not a set of processes)."""
    left = [g for g in pgids if group_alive(g, platform)]
    for g in left:
        _killpg(g, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [g for g in left if group_alive(g, platform)]
    for g in left:
        _killpg(g, signal.SIGKILL)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_gone(pid: int, timeout: float, platform: str | None = None) -> bool:
    """Wait up to ``timeout`` seconds for process ``pid`` to be gone; True when it is."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid, platform):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def exit_code(returncode: int) -> int:
    """A process's return code as a shell reports it: killed by signal N is 128 + N."""
    return 128 - returncode if returncode < 0 else returncode
