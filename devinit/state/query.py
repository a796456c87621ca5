"""The state query language (Dapr's alpha query API), evaluated the same way on every store.

A query is ``{"filter": ..., "sort": [{"key", "order"}], "page": {"limit", "token"}}``.
Filters: ``EQ``, ``NEQ``, ``GT``, ``GTE``, ``LT``, ``LTE`` take ``{"<dotted.path>": value}``;
``IN`` takes ``{"<path>": [values]}``; ``AND`` / ``OR`` take a list of two or more filters.
Keys are dotted paths into the stored JSON value. Items whose value is not JSON never match.

**[devinit]** One evaluator for every store: the store lists its live items (``scan``) and
the filter, sort and paging run here. That is a full scan per query, fine for the data sizes
of a laptop, and the same answer on every store. The page token is an opaque offset.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from devinit.errors import QueryError
from devinit.state.base import plain_count

_COMPARE = ("EQ", "NEQ", "GT", "GTE", "LT", "LTE")
_MISSING = object()
MAX_LIMIT = 10_000


@dataclass(frozen=True)
class Query:
    """A validated query."""

    filter: dict[str, Any] | None
    sort: list[tuple[list[str], bool]]  # (path, descending)
    limit: int | None
    offset: int


def parse_query(body: Any) -> Query:
    """Validate a query document; ``QueryError`` says what is wrong and how to write it."""
    if not isinstance(body, dict):
        raise QueryError('the query must be an object like {"filter": {"EQ": {"state": "CA"}}}')
    filt = body.get("filter")
    if filt is not None and filt != {}:
        _check_filter(filt, "filter")
    else:
        filt = None
    sort = []
    raw_sort = body.get("sort") or []
    if not isinstance(raw_sort, list):
        raise QueryError('sort must be an array like [{"key": "state", "order": "DESC"}]')
    for i, s in enumerate(raw_sort):
        if not isinstance(s, dict) or not isinstance(s.get("key"), str) or not s["key"]:
            raise QueryError(f"sort[{i}] needs a 'key' (a dotted path into the value)")
        order = s.get("order", "ASC") or "ASC"
        if order not in ("ASC", "DESC"):
            raise QueryError(f"sort[{i}].order {order!r} is not ASC or DESC")
        sort.append((s["key"].split("."), order == "DESC"))
    page = body.get("page") or {}
    if not isinstance(page, dict):
        raise QueryError('page must be an object like {"limit": 10, "token": "..."}')
    limit = page.get("limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0 or limit > MAX_LIMIT):
        raise QueryError(f"page.limit must be an integer from 0 to {MAX_LIMIT}")
    token = page.get("token") or "0"
    start = plain_count(token) if isinstance(token, str) else None
    if start is None:
        raise QueryError("page.token is not a token this server gave out; send the token of the previous answer")
    return Query(filt, sort, limit or None, start)


def _check_filter(node: Any, where: str) -> None:
    if not isinstance(node, dict) or len(node) != 1:
        raise QueryError(f"{where} must be an object with exactly one operator: EQ, NEQ, GT, GTE, LT, LTE, IN, AND or OR")
    ((op, arg),) = node.items()
    if op in ("AND", "OR"):
        if not isinstance(arg, list) or len(arg) < 2:
            raise QueryError(f"{where}.{op} takes an array of two or more filters")
        for i, sub in enumerate(arg):
            _check_filter(sub, f"{where}.{op}[{i}]")
        return
    if op not in _COMPARE and op != "IN":
        raise QueryError(f"{where}: unknown operator {op!r}; use EQ, NEQ, GT, GTE, LT, LTE, IN, AND or OR")
    if not isinstance(arg, dict) or len(arg) != 1:
        raise QueryError(f'{where}.{op} takes one {{"<dotted.path>": value}} pair')
    ((path, value),) = arg.items()
    if not path:
        raise QueryError(f"{where}.{op}: the key path is empty")
    if op == "IN" and not isinstance(value, list):
        raise QueryError(f"{where}.IN takes an array of values for {path!r}")


def _lookup(value: Any, path: Sequence[str]) -> Any:
    for part in path:
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return _MISSING
    return value


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    return "other"


def _compare(op: str, have: Any, want: Any) -> bool:
    if have is _MISSING:
        return op == "NEQ"
    if op == "EQ":
        return _kind(have) == _kind(want) and have == want
    if op == "NEQ":
        return not (_kind(have) == _kind(want) and have == want)
    kind = _kind(have)
    if kind not in ("number", "string") or kind != _kind(want):
        return False  # ordering only between two numbers or two strings
    if op == "GT":
        return bool(have > want)
    if op == "GTE":
        return bool(have >= want)
    if op == "LT":
        return bool(have < want)
    return bool(have <= want)


def matches(node: dict[str, Any] | None, value: Any) -> bool:
    """Whether a decoded JSON ``value`` passes the filter ``node`` (None matches all)."""
    if node is None:
        return True
    ((op, arg),) = node.items()
    if op == "AND":
        return all(matches(n, value) for n in arg)
    if op == "OR":
        return any(matches(n, value) for n in arg)
    ((path, want),) = arg.items()
    have = _lookup(value, path.split("."))
    if op == "IN":
        return have is not _MISSING and any(_kind(have) == _kind(w) and have == w for w in want)
    return _compare(op, have, want)


_RANK = {"number": 0, "string": 1, "bool": 2, "other": 3}


def _rank(v: Any) -> int:
    """Values of different JSON types sort as groups, in this order, whatever the direction."""
    return 4 if v is None else _RANK[_kind(v)]


def _comparable(v: Any) -> Any:
    """A key that orders values of one type (other values by their canonical JSON text)."""
    kind = _kind(v)
    if kind == "number":
        return 0 if isinstance(v, float) and math.isnan(v) else v
    if kind in ("string", "bool"):
        return v
    return orjson.dumps(v, option=orjson.OPT_SORT_KEYS)


def run_query(query: Query, items: Sequence[tuple[str, bytes, str]]) -> tuple[list[tuple[str, bytes, str]], str | None]:
    """Filter, sort and page ``(key, value, etag)`` items; returns the page and the next token."""
    hits: list[tuple[str, bytes, str, Any]] = []
    for key, raw, etag in items:
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if matches(query.filter, value):
            hits.append((key, raw, etag, value))
    hits.sort(key=lambda h: h[0])  # a stable base order, whatever the store's scan order
    for path, descending in reversed(query.sort):
        present = [h for h in hits if _lookup(h[3], path) is not _MISSING]
        absent = [h for h in hits if _lookup(h[3], path) is _MISSING]
        present.sort(key=lambda h: (_rank(_lookup(h[3], path)), _comparable(_lookup(h[3], path))), reverse=descending)
        present.sort(key=lambda h: _rank(_lookup(h[3], path)))  # stable: groups stay in type order
        hits = present + absent  # items without the sort key go last either way
    start = query.offset
    end = len(hits) if query.limit is None else start + query.limit
    page = [(k, raw, etag) for k, raw, etag, _ in hits[start:end]]
    token = str(end) if query.limit is not None and end < len(hits) else None
    return page, token
