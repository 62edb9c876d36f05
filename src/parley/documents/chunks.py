"""Cut a LoadedDocument into chunks that know where they come from, and cite them.

`chunk(doc)` walks each part on its own (a chunk never crosses from one file into the next) and cuts pieces of
about `target_chars`: at the last blank line in the second half of the window, else the last line break, else
the last space, else hard. Each next chunk starts up to `overlap_chars` back, at a line start (else a word
start) inside that overlap. Chunk text is trimmed of surrounding whitespace and is exactly
`doc.text[start:end]`; whitespace-only pieces are dropped. Lines are 1-based and inclusive, counted within the
part (the file's own line numbers); pages (PDFs) likewise.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from parley.documents.document import LoadedDocument
from parley.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int  # 0-based place in the chunk list
    part: str  # the part's name: "paper.pdf", "src/main.py"
    start: int  # span in doc.text
    end: int
    line_start: int
    line_end: int
    page_start: int | None  # PDFs only
    page_end: int | None
    text: str

    def cite(self) -> str:
        """"paper.pdf p. 3", "paper.pdf pp. 3-4", "src/main.py lines 10-42", "notes.txt line 7"."""
        if self.page_start is not None:
            if self.page_start == self.page_end:
                return f"{self.part} p. {self.page_start}"
            return f"{self.part} pp. {self.page_start}-{self.page_end}"
        if self.line_start == self.line_end:
            return f"{self.part} line {self.line_start}"
        return f"{self.part} lines {self.line_start}-{self.line_end}"


def chunk(doc: LoadedDocument, *, target_chars: int = 1200, overlap_chars: int = 150) -> list[Chunk]:
    if target_chars < 1:
        raise InvalidRequest(f"target_chars must be at least 1, got {target_chars}", param="target_chars")
    if not 0 <= overlap_chars < target_chars:
        raise InvalidRequest(f"overlap_chars must be from 0 to below target_chars ({target_chars}), got "
                             f"{overlap_chars}", param="overlap_chars")
    chunks: list[Chunk] = []
    for i, part in enumerate(doc.parts):
        base = doc.spans[i][0]
        for s, e in spans(part.text, target_chars, overlap_chars):
            chunks.append(Chunk(
                index=len(chunks), part=part.name, start=base + s, end=base + e,
                line_start=doc.line_at(i, s), line_end=doc.line_at(i, e - 1),
                page_start=part.page_at(s), page_end=part.page_at(e - 1), text=part.text[s:e]))
    return chunks


def spans(text: str, target: int, overlap: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each chunk of `text`, trimmed of surrounding whitespace; starts strictly increase."""
    n = len(text)
    start = _skip_space(text, 0, n)
    while start < n:
        cut = n if n - start <= target else _cut(text, start, start + target)
        end = _trim_end(text, start, cut)
        if end > start:
            yield start, end
        if cut >= n:
            return
        start = _next_start(text, start, cut, overlap)


def _cut(text: str, start: int, limit: int) -> int:
    """Where the piece starting at `start` should end, no later than `limit`."""
    lo = start + (limit - start) // 2
    for sep in ("\n\n", "\n", " "):
        at = text.rfind(sep, lo, limit)
        if at != -1:
            return at + len(sep)
    return limit


def _next_start(text: str, start: int, cut: int, overlap: int) -> int:
    """A line start (else a word start) in the last `overlap` characters before `cut`; else `cut` itself."""
    want = max(cut - overlap, start + 1)
    for sep in ("\n", " ") if overlap else ():
        at = text.find(sep, want - 1, cut - 1)  # a separator right before `want` makes `want` a start
        if at != -1:
            want = at + 1
            break
    else:
        want = cut
    return _skip_space(text, max(want, start + 1), len(text))


def _skip_space(text: str, i: int, n: int) -> int:
    while i < n and text[i].isspace():
        i += 1
    return i


def _trim_end(text: str, start: int, end: int) -> int:
    while end > start and text[end - 1].isspace():
        end -= 1
    return end
