"""Text that ``devinit state`` prints: key tables, values, counts (from ``state_client`` results)."""

from __future__ import annotations

import base64
import itertools
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from devinit.state_client import KeyRow

JSON_TYPE = "application/json"
KEY_WIDTH = 60  # the key column's widest; longer keys push the row out rather than being cut


def size(n: int) -> str:
    """Bytes for people: 512 B, 1.0 KB, 3.2 MB."""
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / 1024 / 1024:.1f} MB"


def time_left(seconds: float | None) -> str:
    """A TTL left for people: '-' for none, else 45s, 4m05s, 3h12m, 2d04h."""
    if seconds is None:
        return "-"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


#: characters a table must not print as they are: C0/C1 controls (newlines, escape sequences)
#: and the line/paragraph separators and bidi overrides that rearrange what a terminal shows
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def shown(text: str) -> str:
    """``text`` for a table: unsafe characters escaped (``\\n``, ``\\x1b``, ``\\u202e``), as redis-cli does."""
    return _UNSAFE.sub(_escape, text)


def _escape(m: re.Match[str]) -> str:
    c = m.group(0)
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return named.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def key_table(rows: Iterable[KeyRow], first: int = 1000) -> Iterator[str]:
    """The lines of ``state ls``: column widths from the first ``first`` rows, then streamed;
    keys and app ids shown with their control characters escaped (``shown``)."""
    it = iter(rows)
    head = list(itertools.islice(it, first))
    if not head:
        yield "(no keys)"
        return
    kw = min(KEY_WIDTH, max(3, *(len(shown(r.key)) for r in head)))
    aw = max(6, *(len(shown(r.app_id or "-")) for r in head))
    yield f"{'KEY':<{kw}}  {'APP ID':<{aw}}  {'SIZE':>8}  {'EXPIRES':>8}  ETAG"
    for r in itertools.chain(head, it):
        left = None if r.expire_at is None else r.expire_at - r.now
        yield f"{shown(r.key):<{kw}}  {shown(r.app_id or '-'):<{aw}}  {size(r.size):>8}  {time_left(left):>8}  {r.etag}"


def value(doc: dict[str, Any], terminal: bool) -> bytes:
    """What ``state get`` prints: JSON pretty-printed, text as it is, other bytes as they are
    (a hex dump on a terminal, which raw bytes would garble)."""
    if doc["contentType"] == JSON_TYPE:
        return json.dumps(doc["value"], indent=2, ensure_ascii=False).encode() + b"\n"
    raw = base64.b64decode(doc["value"])
    if doc["contentType"].startswith("text/"):
        return raw + (b"\n" if terminal and not raw.endswith(b"\n") else b"")
    return hexdump(raw).encode() if terminal else raw


def hexdump(data: bytes) -> str:
    """Offset, 16 bytes in hex, and their printable characters, a line each."""
    lines = []
    for off in range(0, len(data), 16):
        row = data[off : off + 16]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
        lines.append(f"{off:08x}  {row.hex(' '):<47}  |{text}|")
    return "\n".join(lines) + "\n"


def item_json(doc: dict[str, Any]) -> dict[str, Any]:
    """``state get --json``: the key, its etag, size, expiry, content type and value."""
    out = {k: doc.get(k) for k in ("key", "appId", "etag", "size", "expireAt", "contentType", "value")}
    out["ttl"] = None if doc.get("expireAt") is None else max(0, round(doc["expireAt"] - doc["now"]))
    return out
