"""json_depth() measures a JSON body's nesting on its bytes, as the parser will see it: brackets inside strings
(escaped quotes and backslashes included) are text, an unclosed bracket still counts, and a body in UTF-16 or
UTF-32 (which json.loads decodes) cannot hide its brackets from the scan."""

from __future__ import annotations

import json

import pytest

from parley.server.json_depth import MAX_JSON_DEPTH, json_depth


@pytest.mark.parametrize("text, depth", [
    ("", 0), ("1", 0), ('"x"', 0), ("[]", 1), ("{}", 1), ("[[]]", 2), ("[[], [], {}]", 2),
    ('{"a": [1, {"b": [2]}]}', 4), ("[" * 50_000 + "]" * 50_000, 50_000),
    ("[" * 5_000, 5_000),                                  # unclosed: json.loads recurses into it all the same
    ('"[[[[[[[[{{{{"', 0), ('["]]]]", "[[[["]', 1),        # brackets in strings are text
    (r'["\"[[[[", "a\\", [[]]]', 3),                     # an escaped quote and an escaped backslash
    (r'["\\\"[[[[["]', 1), ('"no end [[[[', 0), ('["ends in a backslash \\', 1),
    ("[1, 2] ]]]] [[[", 1),                                # not JSON: the running count's highest point
])
def test_depth(text, depth):
    assert json_depth(text.encode()) == depth


def test_the_depth_of_real_json_matches_its_structure():
    value = "leaf"
    for i in range(100):
        value = [value, {"k": i, "s": '[{"\\}] '}] if i % 2 else {"v": value}
    assert json_depth(json.dumps(value).encode()) == 100
    assert json_depth(json.dumps(value, ensure_ascii=False, indent=2).encode()) == 100


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be", "utf-8-sig"])
def test_other_encodings_json_loads_reads_are_measured_decoded(encoding):
    # U+2200 and U+2222 hold the byte of '"' in UTF-16: read as bytes, the string would seem to end early
    # and the brackets after it would hide inside what looks like a string
    text = '["\u2200\u2222", ' + "[" * 500 + "]" * 500 + ', "\u5b5b"]'
    data = text.encode(encoding)
    assert json.loads(data)
    assert json_depth(data) == 501


def test_bytes_that_do_not_decode_are_left_to_the_parser():
    assert json_depth(b"\x00\x00\x00[\xff\xff") == 0


def test_the_limit_leaves_room_for_json_schemas():
    assert MAX_JSON_DEPTH >= 64
