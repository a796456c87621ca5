"""Lines from several processes on one terminal: each prefixed with its app id, written whole.

``devinit run -f`` relays the output of every app (and, when asked, of its server) as Dapr's
Multi-App Run does: ``== APP - <app-id> == <line>``, the prefix in a colour of its own on a
terminal (never in a pipe or a file, or with ``NO_COLOR`` set). Lines are written under one
lock, so lines from different threads never mix. Log files get the same lines without colour
codes (``plain``).
"""

from __future__ import annotations

import os
import re
import threading
from typing import IO

# Cyan, yellow, green, magenta, blue, red, then the bright ones: distinct on dark and light themes.
_PALETTE = ("36", "33", "32", "35", "34", "31", "96", "93", "92", "95", "94", "91")
_RESET = "\x1b[0m"
# CSI sequences (colours, cursor moves): what a log file should not keep.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")


def plain(text: str) -> str:
    """``text`` without terminal escape sequences (for log files)."""
    return _ANSI.sub("", text)


def wants_color(stream: IO[str], environ: dict[str, str] | None = None) -> bool:
    """Colour only on a terminal, and never with NO_COLOR set (https://no-color.org); FORCE_COLOR forces it."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR"):
        return False
    if env.get("FORCE_COLOR"):
        return True
    try:
        return stream.isatty() and env.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


class Printer:
    """Prefixed lines to ``out`` (stdout) and ``err`` (stderr), one colour per name."""

    def __init__(self, out: IO[str], err: IO[str], color: bool | None = None) -> None:
        self.out = out
        self.err = err
        self.color = wants_color(out) if color is None else color
        self._colors: dict[str, str] = {}
        self._lock = threading.Lock()

    def prefix(self, name: str, kind: str = "APP") -> str:
        """``== APP - name ==`` as Dapr writes it (uncoloured)."""
        return f"== {kind} - {name} =="

    def line(self, name: str, text: str, kind: str = "APP", err: bool = False) -> str:
        """Write one line with its prefix; returns the line as a log file keeps it."""
        prefix = self.prefix(name, kind)
        shown = f"{self._paint(name, prefix)} {text}"
        with self._lock:
            stream = self.err if err else self.out
            try:
                stream.write(shown + "\n")
                stream.flush()
            except (OSError, ValueError):
                pass  # our own output is gone (a closed pipe): the log file still gets it
        return plain(f"{prefix} {text}")

    def note(self, text: str) -> None:
        """A line of devinit's own (starting, stopping, ignored settings), on stderr."""
        with self._lock:
            try:
                self.err.write(f"devinit: {text}\n")
                self.err.flush()
            except (OSError, ValueError):
                pass

    def _paint(self, name: str, text: str) -> str:
        if not self.color:
            return text
        code = self._colors.get(name)
        if code is None:
            code = self._colors[name] = _PALETTE[len(self._colors) % len(_PALETTE)]
        return f"\x1b[{code}m{text}{_RESET}"
