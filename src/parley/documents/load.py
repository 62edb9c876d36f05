"""Files, directories and archives to a `LoadedDocument`, or a one-line error naming the file.

Entry points: `load_path` (a file, a directory or an archive), `load_paths` (several into one document) and
`load_bytes` (an upload). Everything is read into memory and nothing is written anywhere. This module walks
and refuses; what a file's bytes say is formats.py's (and encoding.py, html.py, pdf.py), what a document is
document.py's.

- A directory is walked in name order, never following a link; an archive is read in memory (archives.py);
  several sources' part names start with each source's name.
- Refused with `InvalidRequest` / `LimitExceeded` (parley.errors): a file given on its own that is binary,
  empty, a PDF without a text layer or encrypted; anything over a limit (limits.py); an unsafe archive member
  (archives.py); a path outside `root` when one is given; a device, FIFO or socket; an upload name that is
  empty or holds control characters. Inside a directory or an archive, binary, empty and unreadable files,
  nested archives, hidden files, symlinks and VCS/cache directories are skipped instead, each with a line in
  `LoadedDocument.notes`; a collection with nothing readable left is refused.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from parley.documents.archives import is_archive, iter_members
from parley.documents.document import READABLE, LoadedDocument, Part, Unreadable
from parley.documents.encoding import binary, has_utf16_32_bom
from parley.documents.formats import kind_of, to_part
from parley.documents.limits import (
    DEFAULT_LIMITS,
    Budget,
    DocumentLimits,
    check_file_size,
    human_bytes,
    over_limit,
)
from parley.errors import InvalidRequest

SKIPPED_DIRS = frozenset({"__pycache__", "node_modules", "__MACOSX"})  # beside every hidden (.git, .venv) one
SNIFF_BYTES = 8192
_SPLIT = "split the file or raise the limit"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # never in a name: it would forge a header line


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
            part = to_part(prefix + rel, display, data, budget, out.notes)
        except Unreadable as e:
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
            if b"\x00" in head and kind_of(display) != "pdf" and not has_utf16_32_bom(head):
                raise binary(display)
            size = os.fstat(f.fileno()).st_size
            check_file_size(display, size, budget.limits)
            data = head + f.read(budget.limits.max_file_bytes + 1 - len(head))
    except OSError as e:
        raise Unreadable(f"{display}: cannot be read ({e.strerror or e})") from None
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
    out.parts.append(to_part(part_name, label, data, budget, out.notes))
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
            part = to_part(prefix + member.path, member.label, member.read(), budget, out.notes)
        except Unreadable as e:
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


__all__ = ["SKIPPED_DIRS", "load_bytes", "load_path", "load_paths"]
