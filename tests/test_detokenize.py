"""IncrementalDetokenizer: tokens carrying arbitrary byte pieces always come out as whole characters."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from parley.text.detokenize import IncrementalDetokenizer

TEXT = "héllo wörld 日本語 🎉👍🏽"
DATA = TEXT.encode("utf-8")


def run(pieces: list[bytes]) -> tuple[list[str], str]:
    """Detokenize a scripted stream where token i is pieces[i]; returns (chunks from add, flush)."""
    detok = IncrementalDetokenizer(lambda token_id: pieces[token_id])
    return [detok.add(token_id) for token_id in range(len(pieces))], detok.flush()


def split_at(data: bytes, cuts: tuple[int, ...]) -> list[bytes]:
    bounds = (0, *cuts, len(data))
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def check_clean(pieces: list[bytes]) -> None:
    """Valid UTF-8 in any pieces: whole characters only, and nothing held longer than needed."""
    chunks, tail = run(pieces)
    seen = out = b""
    for piece, chunk in zip(pieces, chunks, strict=True):
        seen += piece
        out += chunk.encode("utf-8")
        # Everything emitted is decoded input, and at most one incomplete character (< 4 bytes) is held.
        assert seen.startswith(out)
        assert len(seen) - len(out) < 4
    assert "".join(chunks) + tail == TEXT
    assert tail == ""
    for chunk in chunks:
        assert "\ufffd" not in chunk
        assert not any(0xD800 <= ord(c) <= 0xDFFF for c in chunk)


def test_every_two_and_three_way_split():
    n = len(DATA)
    for i in range(n + 1):
        check_clean(split_at(DATA, (i,)))
        for j in range(i, n + 1):
            check_clean(split_at(DATA, (i, j)))


def test_one_byte_per_token():
    check_clean([bytes([b]) for b in DATA])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_random_splits(data):
    cuts = sorted(data.draw(st.lists(st.integers(0, len(DATA)), max_size=12)))
    check_clean(split_at(DATA, tuple(cuts)))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=20), st.data())
def test_random_bytes(raw, data):
    """Any bytes at all (valid or not) come out exactly as a one-shot decode with replacement would."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=8)))
    chunks, tail = run(split_at(raw, tuple(cuts)))
    assert "".join(chunks) + tail == raw.decode("utf-8", errors="replace")


def test_incomplete_character_at_end_becomes_replacement_in_flush():
    chunks, tail = run([b"ok ", "日".encode()[:2]])
    assert chunks == ["ok ", ""]
    assert tail == "\ufffd"


def test_invalid_byte_is_replaced_without_waiting():
    chunks, tail = run([b"a\xff", b"b"])
    assert chunks == ["a\ufffd", "b"]
    assert tail == ""


def test_counters():
    pieces = [b"h\xc3", b"\xa9", b"!"]
    detok = IncrementalDetokenizer(lambda token_id: pieces[token_id])
    assert [detok.add(t) for t in range(3)] == ["h", "é", "!"]
    assert (detok.text_len, detok.byte_len) == (3, 4)
