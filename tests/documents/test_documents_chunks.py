"""Chunking: spans are exact, chunks stay inside their part, lines and pages are right, cuts fall on boundaries."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.documents import Chunk, LoadedDocument, Part, chunk, load_bytes
from parley.documents.chunks import spans
from parley.errors import InvalidRequest


def _doc(*texts: str) -> LoadedDocument:
    return LoadedDocument(name="d", parts=tuple(Part(f"f{i}.txt", "text", t) for i, t in enumerate(texts)),
                          size_bytes=0)


def _lines_of(text: str, start: int, end: int) -> tuple[int, int]:
    return text.count("\n", 0, start) + 1, text.count("\n", 0, end - 1) + 1


PARAGRAPHS = "\n\n".join(f"Paragraph {i} has a few words in it, enough to fill a line or two of text." * 2
                         for i in range(40))


def test_chunks_are_exact_slices_within_one_part_with_right_lines():
    doc = _doc(PARAGRAPHS, "short second file\nwith two lines")
    chunks = chunk(doc, target_chars=400, overlap_chars=60)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert doc.text[c.start:c.end] == c.text
        i = [p.name for p in doc.parts].index(c.part)
        start, end = doc.spans[i]
        assert start <= c.start < c.end <= end  # never crosses into the next part or its header
        assert (c.line_start, c.line_end) == _lines_of(doc.parts[i].text, c.start - start, c.end - start)
        assert c.page_start is None and len(c.text) <= 400
    assert chunks[-1].text == "short second file\nwith two lines"
    assert chunks[-1].cite() == "f1.txt lines 1-2"


def test_cuts_fall_on_paragraphs_and_overlap_starts_on_a_line():
    chunks = chunk(_doc(PARAGRAPHS), target_chars=400, overlap_chars=0)
    assert all(c.text.startswith("Paragraph") and c.text.endswith("text.") for c in chunks)
    text = "\n".join(f"line {i:03d} of a file without blank lines" for i in range(60))
    overlapped = chunk(_doc(text), target_chars=300, overlap_chars=100)
    for a, b in zip(overlapped, overlapped[1:], strict=False):
        assert b.start < a.end  # overlap
        assert a.end - b.start <= 100
        assert b.text.startswith("line ")  # at a line start
        assert b.line_start <= a.line_end


def test_a_long_line_without_spaces_is_cut_hard():
    chunks = chunk(_doc("x" * 1000), target_chars=300, overlap_chars=50)
    assert [len(c.text) for c in chunks][:3] == [300, 300, 300]
    assert all(c.line_start == c.line_end == 1 for c in chunks)
    assert chunks[0].cite() == "f0.txt line 1"


def test_cite_formats():
    base = dict(index=0, part="p", start=0, end=1, text="x")
    assert Chunk(**base, line_start=10, line_end=42, page_start=None, page_end=None).cite() == "p lines 10-42"
    assert Chunk(**base, line_start=3, line_end=3, page_start=None, page_end=None).cite() == "p line 3"
    assert Chunk(**base, line_start=1, line_end=9, page_start=3, page_end=3).cite() == "p p. 3"
    assert Chunk(**base, line_start=1, line_end=9, page_start=3, page_end=4).cite() == "p pp. 3-4"


def test_single_file_chunk_cites_the_file_name():
    doc = load_bytes("src/main.py", "\n".join(f"x{i} = {i}" for i in range(100)).encode())
    chunks = chunk(doc, target_chars=200, overlap_chars=0)
    assert chunks[0].cite() == "src/main.py lines 1-" + str(chunks[0].line_end)
    assert chunks[1].line_start == chunks[0].line_end + 1


def test_bad_sizes_are_refused():
    with pytest.raises(InvalidRequest, match="target_chars must be at least 1"):
        chunk(_doc("x"), target_chars=0)
    with pytest.raises(InvalidRequest, match="overlap_chars must be from 0 to below target_chars"):
        chunk(_doc("x"), target_chars=100, overlap_chars=100)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet="ab \n", max_size=400), target=st.integers(1, 60), overlap=st.integers(0, 59))
def test_spans_cover_every_non_space_character_and_always_progress(text, target, overlap):
    overlap = min(overlap, target - 1)
    got = list(spans(text, target, overlap))
    assert all(a[0] < b[0] for a, b in zip(got, got[1:], strict=False))
    covered = set()
    for s, e in got:
        assert 0 < e - s <= target and not text[s].isspace() and not text[e - 1].isspace()
        covered.update(range(s, e))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())
