"""Files to text with positions: a `LoadedDocument` of `Part`s, or a one-line error naming the file.

Entry points: `load_path` (a file, a directory or an archive), `load_paths` (several into one document) and
`load_bytes` (an upload). Everything is read into memory and nothing is written anywhere.

- Kinds, by file name: plain text, Markdown, source code, LaTeX (kept as is), HTML (text, not tags: script and
  style dropped, block elements become line breaks), PDF (the text layer via pypdf, page spans kept), and
  archives of those (archives.py). A file with an unknown suffix is read as text if it decodes as text.
- Encoding: a BOM, then strict UTF-8, then charset-normalizer (preferring cp1252 when it reads as cleanly as
  the best guess: short Western texts are otherwise often taken for a neighbouring code page).
- Text is normalised to "\\n" line ends and trailing whitespace at the end is dropped; line numbers stay those
  of the file (HTML: of the extracted text).
- `LoadedDocument.text` is the parts joined, each under a `=== name ===` header line, when there are several;
  a single file has no header, so the same file under another name has the same text and `content_hash`.
- Refused with `InvalidRequest` / `LimitExceeded` (parley.errors): a file given on its own that is binary,
  empty, a PDF without a text layer or encrypted; anything over a limit (limits.py); an unsafe archive member
  (archives.py); a path outside `root` when one is given. Inside a directory or an archive, binary, empty and
  unreadable files, nested archives, hidden files, symlinks and VCS/cache directories are skipped instead, each
  with a line in `LoadedDocument.notes`; a collection with nothing readable left is refused.
"""

from __future__ import annotations

import bisect
import codecs
import hashlib
import io
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import charset_normalizer
import pypdf
from bs4 import BeautifulSoup, NavigableString

from parley.documents.archives import is_archive, iter_members
from parley.documents.limits import (
    DEFAULT_LIMITS,
    Budget,
    DocumentLimits,
    check_file_size,
    human_bytes,
    over_limit,
)
from parley.errors import InvalidRequest

READABLE = "text, Markdown, source code, LaTeX, HTML, PDF, and .zip / .tar / .tar.gz archives of them"
SKIPPED_DIRS = frozenset({"__pycache__", "node_modules", "__MACOSX"})  # beside every hidden (.git, .venv) one
SNIFF_BYTES = 8192
_SPLIT = "split the file or raise the limit"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # never in a name: it would forge a header line
_WESTERN_MARGIN = 0.1  # chaos points cp1252 may be behind charset-normalizer's best guess and still win

_KINDS = {
    "markdown": ".md .markdown .mdown .mkd .mdx",
    "latex": ".tex .latex .ltx .sty .cls .bib",
    "html": ".html .htm .xhtml",
    "pdf": ".pdf",
    "text": ".txt .text .log .rst .adoc .org .csv .tsv",
    "code": ".py .pyi .pyx .ipynb .c .h .cc .cpp .cxx .hpp .hh .cu .rs .go .java .kt .kts .scala .groovy "
            ".gradle .swift .m .mm .cs .fs .vb .js .mjs .cjs .jsx .ts .tsx .vue .svelte .css .scss .sass "
            ".less .rb .php .pl .pm .lua .r .jl .hs .ml .mli .ex .exs .erl .clj .dart .zig .nim .sh .bash "
            ".zsh .fish .ps1 .bat .sql .proto .graphql .json .jsonl .yaml .yml .toml .ini .cfg .conf .xml "
            ".cmake .mk .s .asm .f90 .v .sv .vhd .tf .nix",
}
_SUFFIX_KIND = {suffix: kind for kind, suffixes in _KINDS.items() for suffix in suffixes.split()}
_NAME_KIND = {n: "code" for n in ("makefile", "dockerfile", "containerfile", "rakefile", "gemfile", "justfile",
                                  "cmakelists.txt", "build", "workspace")}


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


# --- entry points -----------------------------------------------------------------------------------------


def load_path(path: str | os.PathLike, limits: DocumentLimits = DEFAULT_LIMITS, *,
              root: str | os.PathLike | None = None) -> LoadedDocument:
    """A file, a directory (walked in name order) or an archive; `root`: refuse anything resolving outside it."""
    return load_paths([path], limits, root=root)


def load_paths(paths: Sequence[str | os.PathLike], limits: DocumentLimits = DEFAULT_LIMITS, *,
               name: str | None = None, root: str | os.PathLike | None = None) -> LoadedDocument:
    """Several files, directories or archives as one document; part names start with each source's name."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise InvalidRequest("no files given: name at least one file, directory or archive")
    budget = Budget(limits)
    labels = _labels(paths)
    several = len(paths) > 1
    loaded = [_load_source(p, label, budget, root, several) for p, label in zip(paths, labels, strict=True)]
    parts = tuple(part for src in loaded for part in src.parts)
    notes = tuple(note for src in loaded for note in src.notes)
    doc_name = name or (labels[0] if not several else f"{labels[0]} and {len(labels) - 1} more")
    return _finish(doc_name, parts, sum(src.size for src in loaded), notes)


def load_bytes(name: str, data: bytes, limits: DocumentLimits = DEFAULT_LIMITS) -> LoadedDocument:
    """An upload: `name` (a file name, maybe with folders) picks the kind; `data` is the file's bytes."""
    name = _check_upload_name(name)
    budget = Budget(limits)
    src = _load_blob(name, name, data, budget, several=False)
    return _finish(name, src.parts, src.size, src.notes)


@dataclass
class _Loaded:
    parts: list[Part] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    size: int = 0


class _Unreadable(InvalidRequest):
    """A file that is not text parley can read: refused on its own, skipped with a note inside a collection."""


def _finish(name: str, parts: Sequence[Part], size: int, notes: Sequence[str]) -> LoadedDocument:
    return LoadedDocument(name=name, parts=tuple(parts), size_bytes=size, notes=tuple(notes))


def _check_upload_name(name: str) -> str:
    name = name.strip()
    if not name or _CONTROL.search(name):
        raise InvalidRequest(f"document name {name!r} is empty or holds control characters; give a file name",
                             param="name")
    return name


def _labels(paths: Sequence[Path]) -> list[str]:
    """Each source's display name: its own name, or the path as given where two share a name."""
    names = [p.name or p.resolve().name or str(p) for p in paths]
    labels = [p.as_posix() if names.count(n) > 1 else n for p, n in zip(paths, names, strict=True)]
    for label in labels:
        if labels.count(label) > 1:
            raise InvalidRequest(f"{label}: given twice; name each file once")
    return labels


# --- sources: a path on disk ------------------------------------------------------------------------------


def _load_source(path: Path, label: str, budget: Budget, root: str | os.PathLike | None,
                 several: bool) -> _Loaded:
    if root is not None:
        _check_inside(path, Path(root))
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InvalidRequest(f"{path}: no such file or directory") from None
    except OSError as e:
        raise InvalidRequest(f"{path}: cannot be read ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        return _load_dir(path, label, budget, prefix=f"{label}/" if several else "")
    if not stat.S_ISREG(st.st_mode):
        raise InvalidRequest(f"{path}: not a regular file (a device, FIFO or socket); refused")
    limit = "max_total_bytes" if is_archive(label) else "max_file_bytes"
    data = _read_capped(path, label, st.st_size, getattr(budget.limits, limit), limit)
    return _load_blob(label, label, data, budget, several)


def _check_inside(path: Path, root: Path) -> None:
    resolved, base = path.resolve(), root.resolve()
    if not resolved.is_relative_to(base):
        raise InvalidRequest(f"{path}: outside the documents root {root}; refused", param="path")


def _read_capped(path: Path, label: str, declared: int, cap: int, limit: str) -> bytes:
    """The file's bytes, never more than `cap` read whatever stat said."""
    if declared > cap:
        raise over_limit(label, human_bytes(declared), limit, human_bytes(cap), _SPLIT)
    try:
        with open(path, "rb") as f:
            data = f.read(cap + 1)
    except OSError as e:
        raise InvalidRequest(f"{label}: cannot be read ({e.strerror or e})") from None
    if len(data) > cap:
        raise over_limit(label, f"more than {human_bytes(cap)}", limit, human_bytes(cap), _SPLIT)
    return data


def _load_dir(path: Path, label: str, budget: Budget, prefix: str) -> _Loaded:
    out = _Loaded()
    for rel, full in _walk(path, label, out.notes):
        display = f"{label}/{rel}"
        budget.add_file(display)
        if is_archive(rel):
            out.notes.append(f"{display}: archive inside a directory, not read (name it on its own to load it); "
                             f"skipped")
            continue
        try:
            data = _read_dir_file(full, display, budget)
            part = _to_part(prefix + rel, display, data, budget, out.notes)
        except _Unreadable as e:
            out.notes.append(f"{e}; skipped")
            continue
        out.parts.append(part)
        out.size += len(data)
    if not out.parts:
        raise _nothing_readable(label, out.notes)
    return out


def _walk(top: Path, label: str, notes: list[str], rel: str = "") -> Iterator[tuple[str, str]]:
    """(relative path, full path) of the regular files under `top`, sorted by name at each level."""
    try:
        entries = sorted(os.scandir(top / rel if rel else top), key=lambda e: e.name)
    except OSError as e:
        notes.append(f"{label}/{rel}: cannot be listed ({e.strerror or e}); skipped")
        return
    for entry in entries:
        path = f"{rel}{entry.name}"
        reason = _skip_reason(entry)
        if reason:
            notes.append(f"{label}/{path}: {reason}; skipped")
        elif entry.is_dir(follow_symlinks=False):
            yield from _walk(top, label, notes, f"{path}/")
        else:
            yield path, entry.path


def _skip_reason(entry: os.DirEntry) -> str | None:
    if _CONTROL.search(entry.name):
        return "name holds control characters"
    if entry.is_symlink():
        return "symlink (links are never followed)"
    if _hidden_or_cache(entry.name):
        return "hidden or cache " + ("directory" if entry.is_dir(follow_symlinks=False) else "file")
    if not (entry.is_dir(follow_symlinks=False) or entry.is_file(follow_symlinks=False)):
        return "not a regular file"
    return None


def _hidden_or_cache(name: str) -> bool:
    return name.startswith(".") or name in SKIPPED_DIRS


def _read_dir_file(full: str, display: str, budget: Budget) -> bytes:
    """Sniffs the head first, so a large binary is skipped without being read or counted."""
    try:
        with open(full, "rb") as f:
            head = f.read(SNIFF_BYTES)
            if b"\x00" in head and _kind_of(display) != "pdf" and not _has_utf16_32_bom(head):
                raise _binary(display)
            size = os.fstat(f.fileno()).st_size
            check_file_size(display, size, budget.limits)
            data = head + f.read(budget.limits.max_file_bytes + 1 - len(head))
    except OSError as e:
        raise _Unreadable(f"{display}: cannot be read ({e.strerror or e})") from None
    budget.add_bytes(display, len(data))
    return data


# --- sources: bytes (a file's or an upload's) --------------------------------------------------------------


def _load_blob(label: str, part_name: str, data: bytes, budget: Budget, several: bool) -> _Loaded:
    if is_archive(label):
        if len(data) > budget.limits.max_total_bytes:
            raise over_limit(label, human_bytes(len(data)), "max_total_bytes",
                             human_bytes(budget.limits.max_total_bytes), _SPLIT)
        return _load_archive(label, data, budget, prefix=f"{label}:" if several else "")
    budget.add_file(label)
    budget.add_bytes(label, len(data))
    out = _Loaded(size=len(data))
    out.parts.append(_to_part(part_name, label, data, budget, out.notes))
    return out


def _load_archive(label: str, data: bytes, budget: Budget, prefix: str) -> _Loaded:
    out = _Loaded(size=len(data))
    noted: set[str] = set()
    for member in iter_members(label, data, budget.limits, budget):
        skipped = _skipped_prefix(member.path)
        if skipped is not None:
            if skipped not in noted:
                noted.add(skipped)
                out.notes.append(f"{label}:{skipped}: hidden or cache file or directory; skipped")
            continue
        if is_archive(member.path):
            out.notes.append(f"{member.label}: nested archive, not read (extract it and load its files); skipped")
            continue
        try:
            part = _to_part(prefix + member.path, member.label, member.read(), budget, out.notes)
        except _Unreadable as e:
            out.notes.append(f"{e}; skipped")
            continue
        out.parts.append(part)
    if not out.parts:
        raise _nothing_readable(label, out.notes)
    out.parts.sort(key=lambda p: p.name.split("/"))  # the same tree gives the same text as zip, tar or folder
    return out


def _skipped_prefix(path: str) -> str | None:
    parts = path.split("/")
    for i, part in enumerate(parts):
        if _hidden_or_cache(part):
            return "/".join(parts[: i + 1]) + ("/" if i < len(parts) - 1 else "")
    return None


def _nothing_readable(label: str, notes: Sequence[str]) -> InvalidRequest:
    shown = "; ".join(notes[:3]) + (f"; and {len(notes) - 3} more" if len(notes) > 3 else "")
    return InvalidRequest(f"{label}: no readable files ({shown or 'it is empty'}); parley reads {READABLE}")


# --- one file's bytes to a Part ---------------------------------------------------------------------------


def _kind_of(name: str) -> str | None:
    base = PurePosixPath(name.rsplit(":", 1)[-1]).name.lower()
    return _NAME_KIND.get(base) or _SUFFIX_KIND.get(PurePosixPath(base).suffix)


def _to_part(name: str, label: str, data: bytes, budget: Budget, notes: list[str]) -> Part:
    """`name` goes into the Part, `label` into messages; `notes` gets what is worth saying about the file."""
    kind = _kind_of(label) or "text"
    if kind == "pdf":
        text, pages = pdf_text(label, data, budget, notes)
        return Part(name, "pdf", text, pages, None)
    text, encoding = decode_text(label, data)
    if kind == "html":
        text = html_to_text(text)
    text = normalize(text)
    if not text.strip():
        raise _Unreadable(f"{label}: empty, nothing to read")
    budget.add_chars(label, len(text))
    return Part(name, kind, text, (), encoding)


def normalize(text: str) -> str:
    """"\\n" line ends, no trailing whitespace at the very end; earlier lines are kept as they are."""
    return text.replace("\r\n", "\n").replace("\r", "\n").rstrip()


def _binary(label: str) -> _Unreadable:
    return _Unreadable(f"{label}: binary file (NUL bytes), not text; parley reads {READABLE}")


def _has_utf16_32_bom(data: bytes) -> bool:
    return data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))  # the UTF-32 BOMs start the same way


def decode_text(label: str, data: bytes) -> tuple[str, str]:
    """(text, encoding): a BOM, then strict UTF-8, then charset-normalizer; binary data is refused."""
    for bom, encoding in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF32_LE, "utf-32"),
                          (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF16_LE, "utf-16"),
                          (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            try:
                return data.decode(encoding), encoding
            except UnicodeDecodeError:
                break
    if b"\x00" in data:  # valid UTF-8, but no text file holds NUL bytes (a BOM'd UTF-16/32 file returned above)
        raise _binary(label)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        if _mostly_control(text):
            raise _binary(label)
        return text, "utf-8"
    best = _detect(data)
    if best is None:
        raise _Unreadable(f"{label}: not text in any encoding parley can detect (binary?); parley reads {READABLE}")
    return str(best), best.encoding


def _mostly_control(text: str, sample: int = 8192) -> bool:
    """More than 10% control characters (other than tab, newlines, form feed) in the first `sample`: data."""
    head = text[:sample]
    n = sum(1 for ch in head if ord(ch) < 32 and ch not in "\t\n\r\f")
    return bool(head) and n > len(head) // 10


def _detect(data: bytes):
    best = charset_normalizer.from_bytes(data).best()
    western = charset_normalizer.from_bytes(data, cp_isolation=["cp1252"]).best()
    if western is not None and (best is None or western.chaos <= best.chaos + _WESTERN_MARGIN):
        return western
    return best


# --- HTML -------------------------------------------------------------------------------------------------

_DROP = frozenset({"script", "style", "noscript", "template", "svg", "iframe", "object"})
_PARAGRAPHS = ("address", "article", "aside", "blockquote", "details", "dialog", "dl", "fieldset", "figure",
               "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "main", "nav", "ol", "p", "pre",
               "section", "table", "ul")  # a blank line around each
_LINES = ("caption", "dd", "div", "dt", "figcaption", "li", "summary", "title", "tr")  # a line break around each
_NBSP = "\u00a0"
_PARA, _LINE = "\x1e", "\x1f"  # gap markers, resolved once the text is out: the widest gap in a run wins
_GAPS = {**{name: _PARA for name in _PARAGRAPHS}, **{name: _LINE for name in _LINES}}
_GAP_RUN = re.compile(r"[ \t\n\x1e\x1f]*[\x1e\x1f][ \t\n\x1e\x1f]*")
_PRE_IN, _PRE_OUT = object(), object()


def html_to_text(html: str) -> str:
    """The visible text: script/style dropped, whitespace collapsed as a browser would (kept inside <pre>),
    paragraph-like blocks apart by a blank line, list items, rows and divs on lines of their own."""
    soup = BeautifulSoup(html.replace(_PARA, " ").replace(_LINE, " "), "html.parser")
    text = _GAP_RUN.sub(lambda m: "\n\n" if _PARA in m.group() else "\n", "".join(_html_pieces(soup)))
    lines = [line.strip(" \t") for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).replace(_NBSP, " ").strip("\n")


def _html_pieces(soup: BeautifulSoup) -> Iterator[str]:
    """The tree's text in document order with gap markers around blocks; a stack, not recursion, so deep
    nesting is fine, and the tree is never modified (each bs4 insert is linear in the siblings)."""
    pre = 0
    stack: list = [soup]
    while stack:
        node = stack.pop()
        if node is _PRE_IN or node is _PRE_OUT:
            pre += 1 if node is _PRE_IN else -1
        elif isinstance(node, NavigableString):
            if type(node) is NavigableString:  # not a comment, doctype or processing instruction
                yield node.replace(" ", _NBSP).replace("\t", _NBSP * 4) if pre else re.sub(r"\s+", " ", node)
        elif isinstance(node, str):
            yield node
        elif node.name == "br":
            yield "\n"
        elif node.name not in _DROP:
            gap = _GAPS.get(node.name, "")
            inner = [_PRE_IN, *node.contents, _PRE_OUT] if node.name == "pre" else node.contents
            after = " " if node.name in ("td", "th") else gap
            stack.extend(reversed([gap, *inner, after]))


# --- PDF --------------------------------------------------------------------------------------------------


def pdf_text(label: str, data: bytes, budget: Budget, notes: list[str]) -> tuple[str, tuple[Page, ...]]:
    """The text layer, pages joined by a blank line, each page's span kept."""
    reader = _open_pdf(label, data)
    if len(reader.pages) > budget.limits.max_pdf_pages:
        raise over_limit(label, f"{len(reader.pages)} pages", "max_pdf_pages", str(budget.limits.max_pdf_pages),
                         "split the PDF or raise the limit")
    texts, pages, pos, empty = [], [], 0, 0
    for number, page in enumerate(reader.pages, 1):
        text = _page_text(label, number, page, notes)
        budget.add_chars(label, len(text))
        pos += len(PART_SEPARATOR) if texts else 0
        pages.append(Page(number, pos, pos + len(text)))
        texts.append(text)
        pos += len(text)
        empty += not text.strip()
    if empty == len(texts):
        raise _Unreadable(f"{label}: PDF without a text layer (scanned? run OCR first, e.g. `ocrmypdf in.pdf "
                          f"out.pdf`)")
    if empty:
        notes.append(f"{label}: {empty} of {len(texts)} pages have no text layer (scanned pages?)")
    return PART_SEPARATOR.join(texts), tuple(pages)


def _open_pdf(label: str, data: bytes) -> pypdf.PdfReader:
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise _Unreadable(f"{label}: encrypted PDF (a password is needed); decrypt it first, e.g. "
                              f"`qpdf --decrypt --password=... in.pdf out.pdf`")
        len(reader.pages)  # parses the page tree now, inside this try
        return reader
    except _Unreadable:
        raise
    except pypdf.errors.DependencyError:
        raise _Unreadable(f"{label}: encrypted PDF (AES); decrypt it first, e.g. `qpdf --decrypt in.pdf "
                          f"out.pdf`") from None
    except Exception as e:  # pypdf raises many types on malformed input; none of them is the user's fix
        raise _Unreadable(f"{label}: not a readable PDF ({type(e).__name__}: {e})") from None


def _page_text(label: str, number: int, page: pypdf.PageObject, notes: list[str]) -> str:
    try:
        return normalize(page.extract_text() or "").strip("\n")
    except Exception as e:  # one broken page costs that page, not the document
        notes.append(f"{label} p. {number}: text could not be extracted ({type(e).__name__}); left empty")
        return ""


__all__ = ["LoadedDocument", "Location", "Page", "Part", "READABLE", "decode_text", "html_to_text", "load_bytes",
           "load_path", "load_paths"]
