"""URL parts as every HTTP route reads them: Dapr's path parameters and query parameters.

One rule, as daprd's Go reads them (``url.QueryUnescape``, ``url.Values.Get``): ``%XX`` is a
byte and ``+`` a space, and the bytes must be UTF-8; a ``%`` not followed by two hex digits,
or bytes that are not UTF-8, are a 400 naming the part (daprd drops such a query parameter
silently, or refuses the path). In a query string, pairs are split on ``&``, a name without
``=`` has the value ``""``, and the first of a repeated name wins.

The state API's routes (``http_api``) and devinit's own (``inspector_api``) both use it. A
request without a query string costs nothing here: the answer is a shared empty mapping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from urllib.parse import unquote_to_bytes

from devinit.errors import malformed

_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")  # what Go's url.QueryUnescape refuses
_NO_PARAMS: Mapping[str, str] = MappingProxyType({})


def unescape(raw: bytes, what: str, name: str | None = None) -> str:
    """``raw`` query-unescaped (``%XX``, ``+`` is a space) and read as UTF-8; a 400 naming
    ``what`` ("the key in the URL"; with ``name``: "the query parameter 'name'") when it
    cannot be. The words are put together only then: this runs for every key on the hot path."""
    try:
        if b"%" not in raw and b"+" not in raw:
            return raw.decode("utf-8")
        if _BAD_ESCAPE.search(raw):
            raise malformed(f"{_named(what, name)} has a '%' that is not followed by two hex digits: write % as %25")
        return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        raise malformed(f"{_named(what, name)} is not valid UTF-8 once percent-decoded") from None


def _named(what: str, name: str | None) -> str:
    return what if name is None else f"{what} {name!r}"


def query_params(query: bytes) -> Mapping[str, str]:
    """The parameters of a query string (``Request.query``) by the rule above."""
    if not query:
        return _NO_PARAMS
    out: dict[str, str] = {}
    for pair in query.split(b"&"):
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition(b"=")
        name = unescape(raw_name, "a query parameter's name")
        if name not in out:
            out[name] = unescape(raw_value, "the query parameter", name)
    return out
