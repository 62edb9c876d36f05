"""StopMatcher: however generated text is split, the output is the text cut at the earliest stop string,
and nothing emitted is ever part of a stop string."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.text.detokenize import IncrementalDetokenizer
from parley.text.stops import StopMatcher


def reference(text: str, stops: list[str]) -> tuple[str, str | None]:
    """The text cut at the earliest stop (the shortest stop on a tie), and that stop."""
    found = [(i, len(s), s) for s in stops if s and (i := text.find(s)) >= 0]
    if not found:
        return text, None
    i, _, stop = min(found)
    return text[:i], stop


def run(pieces: list[str], stops: list[str]) -> tuple[str, StopMatcher]:
    """Feed every piece (even after a stop, as a careless caller might), checking at each step that the
    output so far is a prefix of the final expected output."""
    expected, _ = reference("".join(pieces), stops)
    matcher = StopMatcher(stops)
    out = ""
    for piece in pieces:
        was_stopped = matcher.stopped
        chunk = matcher.feed(piece)
        if was_stopped:
            assert chunk == ""
        out += chunk
        assert expected.startswith(out), (pieces, out)
    out += matcher.flush()
    return out, matcher


def check(pieces: list[str], stops: list[str]) -> None:
    text = "".join(pieces)
    expected, stop = reference(text, stops)
    out, matcher = run(pieces, stops)
    assert out == expected, (pieces, stops)
    assert matcher.stopped == (stop is not None)
    assert matcher.matched == stop
    assert matcher.flush() == ""


def splits(text: str):
    """Every 1-, 2- and 3-piece split of text (empty pieces included)."""
    n = len(text)
    for i in range(n + 1):
        yield [text[:i], text[i:]]
        for j in range(i, n + 1):
            yield [text[:i], text[i:j], text[j:]]


CASES = [
    ("Hello world<|im_end|>trailing text", ["<|im_end|>"]),
    ("Hello <|im_en and then <|im_end|>", ["<|im_end|>"]),  # a partial match that fails first
    ("aaaab", ["aab"]),  # the match starts inside a failed partial
    ("xxabyy", ["ab", "b"]),  # overlapping stops
    ("xabyy", ["b", "ab"]),
    ("xabcd!", ["abcd", "bc"]),  # a stop inside a longer one that starts earlier
    ("xabce!", ["abcd", "bc"]),  # ... which then fails to complete
    ("xabc", ["abcd", "bc"]),  # ... or is cut short by the end of generation
    ("ab", ["ab", "abc"]),  # stops that are prefixes of each other
    ("abcx", ["abc", "ab"]),
    ("stop at the start", ["stop"]),
    ("never matched here", ["zzz", "\nUser:"]),
    ("ends with a partial <|im", ["<|im_end|>"]),
    ("Sure.\nUser: more\nUser:", ["\nUser:"]),
    ("日本語のテキスト🎉終わり", ["🎉終", "テキ"]),
    ("emoji 👍🏽 skin tone", ["🏽"]),
    ("no stops at all", []),
]


@pytest.mark.parametrize(("text", "stops"), CASES)
def test_every_split(text, stops):
    for pieces in splits(text):
        check(pieces, stops)
    check(list(text), stops)  # one character at a time


def test_expected_outputs():
    assert reference("xabcd!", ["abcd", "bc"]) == ("x", "abcd")
    assert reference("xabce!", ["abcd", "bc"]) == ("xa", "bc")
    assert reference("abcx", ["abc", "ab"]) == ("", "ab")


def test_no_stops_is_a_pass_through():
    matcher = StopMatcher([])
    for piece in ["a", "", "<|im_end|>", "日本"]:
        assert matcher.feed(piece) is piece
    assert matcher.flush() == ""
    assert not matcher.stopped


def test_pending_longer_stop_settled_by_flush():
    matcher = StopMatcher(["abcd", "bc"])
    assert matcher.feed("xabc") == "x"
    assert not matcher.stopped  # "abcd" could still complete at an earlier position
    assert matcher.flush() == "a"
    assert matcher.stopped and matcher.matched == "bc"


def test_holds_back_only_a_possible_stop_start():
    matcher = StopMatcher(["<|im_end|>"])
    assert matcher.feed("Hi <|im") == "Hi "
    assert matcher.feed("port") == "<|import"
    assert matcher.feed("<|im_end|> after") == ""
    assert matcher.stopped and matcher.matched == "<|im_end|>"
    assert matcher.feed("more") == ""


@settings(max_examples=400, deadline=None)
@given(
    st.text(alphabet="abc", max_size=16),
    st.lists(st.text(alphabet="abc", min_size=1, max_size=4), max_size=4),
    st.data(),
)
def test_random_small_alphabet(text, stops, data):
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    bounds = (0, *cuts, len(text))
    check([text[a:b] for a, b in itertools.pairwise(bounds)], stops)


@settings(max_examples=150, deadline=None)
@given(
    st.text(alphabet="aé日🎉\n", max_size=12),
    st.lists(st.text(alphabet="aé日🎉\n", min_size=1, max_size=3), min_size=1, max_size=3),
    st.data(),
)
def test_random_unicode(text, stops, data):
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    bounds = (0, *cuts, len(text))
    check([text[a:b] for a, b in itertools.pairwise(bounds)], stops)


def through_both(pieces: list[bytes], stops: list[str]) -> str:
    """Byte-level tokens -> IncrementalDetokenizer -> StopMatcher, as the generation loop runs them."""
    detok = IncrementalDetokenizer(lambda token_id: pieces[token_id])
    matcher = StopMatcher(stops)
    out = ""
    for token_id in range(len(pieces)):
        out += matcher.feed(detok.add(token_id))
        if matcher.stopped:
            return out
    return out + matcher.feed(detok.flush()) + matcher.flush()


@pytest.mark.parametrize(
    ("text", "stops"),
    [
        ("Réponse: 日本語 🎉<|im_end|>rest", ["<|im_end|>"]),
        ("Réponse: 日本語 🎉 fin", ["🎉 f", "語 x"]),
        ("naïve café", ["é"]),
        ("nothing to stop", ["日本"]),
    ],
)
def test_bytes_through_detokenizer_and_matcher(text, stops):
    data = text.encode("utf-8")
    expected, _ = reference(text, stops)
    n = len(data)
    for i in range(n + 1):
        for j in range(i, n + 1):
            pieces = [data[:i], data[i:j], data[j:]]
            assert through_both(pieces, stops) == expected
    assert through_both([bytes([b]) for b in data], stops) == expected
