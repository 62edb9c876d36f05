"""What a loaded document is: `Part`s (one per file, with its kind, text and PDF pages) joined into one text
that knows where each character comes from.

- `LoadedDocument.text` is the parts joined, each under a `=== name ===` header line, when there are several;
  a single file has no header, so the same file under another name has the same text and `content_hash`.
- `spans[i]` is part i's text span in `text` (after its header); `locate(offset)` says which part, which line
  of it (1-based, the file's own numbering) and which PDF page a character of `text` comes from.
- `Unreadable` is the refusal of one file that is not text parley can read (`READABLE` says what it reads):
  an error when the file is given on its own, a skipped file with a note inside a directory or an archive.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

from parley.errors import InvalidRequest

READABLE = "text, Markdown, source code, LaTeX, HTML, PDF, and .zip / .tar / .tar.gz archives of them"


class Page(NamedTuple):
    number: int  # 1-based, the page's place in the file (not its printed label)
    start: int  # character span in Part.text
    end: int


@dataclass(frozen=True)
class Part:
    """One file of a document: its name within the document, its kind, its text."""

    name: str  # "paper.pdf", "src/app/main.py", "code.zip:src/main.py" (several sources)
    kind: str  # text | markdown | code | latex | html | pdf
    text: str
    pages: tuple[Page, ...] = ()  # PDFs only
    encoding: str | None = None  # what was detected; None for PDFs

    def page_at(self, offset: int) -> int | None:
        """The page holding `offset` of this part's text (the next page when it falls between two)."""
        if not self.pages:
            return None
        i = bisect.bisect_right(self._page_ends, offset)
        return self.pages[min(i, len(self.pages) - 1)].number

    @cached_property
    def _page_ends(self) -> list[int]:
        return [p.end for p in self.pages]


class Location(NamedTuple):
    part: str
    part_index: int
    line: int  # 1-based, within the part
    page: int | None


def header(name: str) -> str:
    return f"=== {name} ===\n"


PART_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class LoadedDocument:
    """The parts and their joined text; `spans[i]` is part i's text span in `text` (after its header)."""

    name: str
    parts: tuple[Part, ...]
    size_bytes: int  # source bytes read: each loaded file, an archive at its own (compressed) size
    notes: tuple[str, ...] = ()  # what was skipped and why, one line each
    text: str = field(init=False)
    content_hash: str = field(init=False)  # sha256 hex of text (UTF-8)
    spans: tuple[tuple[int, int], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        text, spans = _join(self.parts)
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "spans", spans)
        object.__setattr__(self, "content_hash", hashlib.sha256(text.encode("utf-8")).hexdigest())

    @cached_property
    def _line_starts(self) -> tuple[list[int], ...]:
        return tuple(line_starts(p.text) for p in self.parts)

    @cached_property
    def _part_starts(self) -> list[int]:
        """Where each part's header (or, for a lone part, its text) starts in `text`."""
        if len(self.parts) == 1:
            return [0]
        return [start - len(header(p.name)) for p, (start, _) in zip(self.parts, self.spans, strict=True)]

    def part_at(self, offset: int) -> int:
        """Index of the part whose header or text holds `offset` of `text` (a separator goes with the part before)."""
        return max(bisect.bisect_right(self._part_starts, offset) - 1, 0)

    def line_at(self, part_index: int, local: int) -> int:
        """1-based line of character `local` of part `part_index`'s own text."""
        return bisect.bisect_right(self._line_starts[part_index], local)

    def locate(self, offset: int) -> Location:
        """Where character `offset` of `text` comes from: part, line within it, page for a PDF."""
        i = self.part_at(offset)
        start, end = self.spans[i]
        local = min(max(offset - start, 0), max(end - start - 1, 0))
        part = self.parts[i]
        return Location(part.name, i, self.line_at(i, local), part.page_at(local))


def line_starts(text: str) -> list[int]:
    return [0] + [m.end() for m in re.finditer("\n", text)]


def _join(parts: Sequence[Part]) -> tuple[str, tuple[tuple[int, int], ...]]:
    if len(parts) == 1:
        return parts[0].text, ((0, len(parts[0].text)),)
    pieces, spans, pos = [], [], 0
    for i, part in enumerate(parts):
        lead = (PART_SEPARATOR if i else "") + header(part.name)
        pieces += [lead, part.text]
        pos += len(lead)
        spans.append((pos, pos + len(part.text)))
        pos += len(part.text)
    return "".join(pieces), tuple(spans)


class Unreadable(InvalidRequest):
    """A file that is not text parley can read: refused on its own, skipped with a note inside a collection."""


__all__ = ["PART_SEPARATOR", "READABLE", "LoadedDocument", "Location", "Page", "Part", "Unreadable", "header",
           "line_starts"]
