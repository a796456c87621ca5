"""What the two SQL stores (SQLite, PostgreSQL) share: the table name rule and key listing by
keyset pagination.

Keys are listed in code point order (SQLite's BINARY collation, PostgreSQL's "C"; both compare
UTF-8 bytes, which orders as code points), one page per ``WHERE key >= <start> AND key <> <last
key> AND key < <prefix end> ORDER BY key LIMIT n`` on the primary key's index: no offset to
skip, so a page costs the same wherever it is, and keys written meanwhile never shift it. One
lower bound only (the later of the prefix and the last key): given two, SQLite ranges over
the first, which made a prefix's first page scan the table from its start.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from devinit.state.base import KeyInfo, KeyPage, Store

if TYPE_CHECKING:
    from devinit.components import ComponentSpec

_MAX_CODE_POINT = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)  # never in UTF-8 text: the successor skips them


def table_name(spec: ComponentSpec) -> str:
    """``tableName`` (default ``state``): letters, digits and _ only (it is put into SQL)."""
    table = spec.metadata.get("tableName", "state") or "state"
    if not table.replace("_", "").isalnum() or not table.isascii():
        raise spec.error("tableName", f"{table!r} is not a valid table name (letters, digits, _)")
    return table


def prefix_end(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix`` in code point order
    (None: no bound, for "" or a prefix of only U+10FFFF)."""
    head = prefix
    while head:
        last = ord(head[-1]) + 1
        head = head[:-1]
        if last <= _MAX_CODE_POINT:
            return head + chr(_SURROGATES.stop if last in _SURROGATES else last)
    return None


@dataclass(frozen=True, slots=True)
class Listing:
    """One store's listing statement, with and without the prefix's upper bound."""

    open_ended: str
    bounded: str

    @classmethod
    def build(cls, select: str, key: str, mark: str, live: str) -> Listing:
        """From the ``SELECT key, etag, expire_at, size FROM table`` part, the key column as
        compared (with its collation), the parameter mark and the condition for a live row."""
        where = f"{select} WHERE {key} >= {mark} AND key <> {mark}"
        tail = f"{live} ORDER BY {key} LIMIT {mark}"
        return cls(f"{where} AND {tail}", f"{where} AND {key} < {mark} AND {tail}")

    def statement(
        self, store: Store, prefix: str, cursor: str | None, limit: int, *live: Any
    ) -> tuple[str, tuple[Any, ...]] | None:
        """The statement and parameters of the page after ``cursor`` (``live``: the live
        condition's parameters); None when no stored key can start with ``prefix`` (it holds a
        NUL or a lone surrogate, which neither database stores in a key)."""
        after = "" if cursor is None else store.read_cursor(cursor)
        if "\x00" in after:  # no stored key holds NUL (PostgreSQL would refuse the parameter)
            raise store.bad_cursor(cursor, "it is not a cursor this store gave out")
        try:
            prefix.encode("utf-8")
        except UnicodeEncodeError:
            return None
        if "\x00" in prefix:
            return None
        start, end = max(after, prefix), prefix_end(prefix)
        if end is None:
            return self.open_ended, (start, after, *live, limit)
        return self.bounded, (start, after, end, *live, limit)


def keyset_page(store: Store, rows: Iterable[tuple[str, str, float | None, int]], limit: int) -> KeyPage:
    """A page from rows of (key, etag, expire_at, size) in key order, at most ``limit`` of them;
    a full page's cursor is its last key (the next page may then be empty)."""
    keys = [KeyInfo(key, etag, expire_at, size) for key, etag, expire_at, size in rows]
    return KeyPage(keys, store.make_cursor(keys[-1].key) if len(keys) == limit else None)
