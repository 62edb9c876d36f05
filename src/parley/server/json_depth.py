"""How deeply a JSON body nests, measured on its bytes before anything parses it.

json.loads, and pydantic after it, recurse once per level: a 100 KB body of 50,000 nested arrays ends in a
RecursionError, a 500. `BodyLimit` (limits.py), which holds every body before the app sees it, measures a JSON
body with `json_depth()` first and refuses one nested deeper than MAX_JSON_DEPTH with a 400 naming both.

The scan is linear and runs in C: one regex removes the strings (their brackets are text), `translate` keeps the
brackets alone as +1 / -1, and the depth is the running sum's highest point. For valid JSON that is exactly
its nesting; for broken JSON it is at least as deep as the parser gets before it gives up.
"""

from __future__ import annotations

import itertools
import json
import re

# JSON Schemas (structured output, tool parameters) nest deepest of what a request legitimately sends: a few
# levels per property; 64 leaves them plenty and stays far below Python's recursion limit (1000) with the
# frames per level that json.loads, pydantic and jsonable_encoder each need
MAX_JSON_DEPTH = 64

# a string: its quote, runs without a quote or backslash, escapes (a backslash and any byte), its closing quote
# or the end of the body; possessive, so a string that never ends is read once, never retried byte by byte
_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.DOTALL)
_OPEN, _CLOSE = b"\x01", b"\xff"   # +1 and -1 as signed bytes
_SIGNS = bytes.maketrans(b"[{]}", _OPEN * 2 + _CLOSE * 2)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _utf8(data: bytes) -> bytes | None:
    """The body as UTF-8, which json.loads may have read as UTF-16 or UTF-32: there, other characters hold the
    byte of a quote or a bracket. None when it does not decode (then json.loads refuses it before recursing)."""
    encoding = json.detect_encoding(data)
    if encoding in ("utf-8", "utf-8-sig"):
        return data
    try:
        return data.decode(encoding, "surrogatepass").encode("utf-8", "surrogatepass")
    except UnicodeError:
        return None


def json_depth(data: bytes) -> int:
    """The nesting depth of a JSON text: 0 for a scalar, 1 for [] or {}, 2 for [[]] ..."""
    if data.count(b"[") + data.count(b"{") == 0:
        return 0
    text = _utf8(data)
    if text is None:
        return 0
    signs = _STRING.sub(b"", text).translate(_SIGNS, _NOT_BRACKETS)
    return max(0, max(itertools.accumulate(memoryview(signs).cast("b")), default=0))
