"""Read .zip and .tar (.tar.gz/.tgz, .tar.bz2, .tar.xz) archives in memory, refusing anything unsafe.

`iter_members(name, data, limits, budget)` yields one `Member` per regular file, in archive order; nothing is
ever extracted or written. Before a member is yielded its name and type are checked and it is counted against
the budget (every regular member counts, whether the caller then loads or skips it, since an archive is read
whole). Refused, each with a one-line error naming `archive:member` and the reason or limit:

- a name that is absolute (`/etc/passwd`, `C:\\x`) or climbs out (`../evil.txt`), or holds control characters;
- a symlink or hardlink member, a device, FIFO or socket member, an encrypted zip member, a member type that
  is none of file / directory, a name that appears twice;
- a zip bomb: a member or archive whose uncompressed bytes pass `max_expansion_ratio` times its compressed
  size (checked past `ratio_grace_bytes`), or a member declaring more than `max_file_bytes`. Declared sizes are
  never trusted alone: bytes are counted as they are decompressed and reading stops the moment a limit passes.

A zip's central directory is checked whole before any member is read; a tar is a stream, so its members are
checked one by one as they come. `Member.read()` must be called (if at all) before asking for the next member.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from parley.documents.limits import Budget, DocumentLimits, check_file_size, human_bytes, over_limit
from parley.errors import InvalidRequest

ZIP_SUFFIXES = (".zip",)
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ARCHIVE_SUFFIXES = ZIP_SUFFIXES + TAR_SUFFIXES
_READ_BLOCK = 1 << 16
_TAR_HEADER_ALLOWANCE = 4096  # stream bytes per member beyond its data: header, padding, a modest pax record
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Member:
    path: str  # normalised: relative, "/"-separated, no "." or empty components
    label: str  # "archive.zip:path/in/it", for messages
    size: int  # bytes once uncompressed (a zip's declared size; read() refuses anything past it)
    read: Callable[[], bytes]


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def iter_members(name: str, data: bytes, limits: DocumentLimits, budget: Budget) -> Iterator[Member]:
    if name.lower().endswith(ZIP_SUFFIXES):
        return _zip_members(name, data, limits, budget)
    return _tar_members(name, data, limits, budget)


# --- names ------------------------------------------------------------------------------------------------


def member_path(archive: str, raw: str) -> str:
    """The member's normalised path; refuses absolute paths, `..` and control characters. "" for the root."""
    label = f"{archive}:{raw}"
    if _CONTROL.search(raw):
        raise InvalidRequest(f"{archive}:{raw!r}: member name holds control characters; refused")
    name = raw.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise InvalidRequest(f"{label}: absolute path in the archive; refused (members must be relative)")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidRequest(f"{label}: path climbs out of the archive with '..'; refused")
    return "/".join(parts)


class _Seen:
    """Refuses a member path that appears twice (the second would silently replace the first)."""

    def __init__(self, archive: str):
        self.archive = archive
        self.paths: set[str] = set()

    def add(self, path: str) -> None:
        if path in self.paths:
            raise InvalidRequest(f"{self.archive}:{path}: appears twice in the archive; refused")
        self.paths.add(path)


def _why(e: Exception) -> str:
    return str(e) or type(e).__name__


def _bomb(label: str, limits: DocumentLimits, what: str) -> Exception:
    return over_limit(label, f"{what} (a zip bomb?)", "max_expansion_ratio", f"{limits.max_expansion_ratio:g}x",
                      "refused; raise the limit only for an archive you trust")


def _check_ratio(label: str, expanded: int, compressed: int, limits: DocumentLimits, what: str) -> None:
    if expanded > limits.ratio_grace_bytes and expanded > limits.max_expansion_ratio * max(compressed, 1):
        raise _bomb(label, limits, f"{what} {human_bytes(expanded)} from {human_bytes(compressed)}")


# --- zip --------------------------------------------------------------------------------------------------


def _zip_members(name: str, data: bytes, limits: DocumentLimits, budget: Budget) -> Iterator[Member]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as e:
        raise InvalidRequest(f"{name}: not a readable zip archive ({_why(e)})") from None
    files = _check_zip(name, infos, limits, budget)
    totals = [0]  # real bytes read from the whole archive, for its own ratio
    for path, info in files:
        label = f"{name}:{path}"
        yield Member(path, label, info.file_size, lambda info=info, label=label: _read_zip(
            zf, info, label, limits, totals, len(data)))


def _check_zip(name: str, infos: list[zipfile.ZipInfo], limits: DocumentLimits,
               budget: Budget) -> list[tuple[str, zipfile.ZipInfo]]:
    """Every central-directory entry checked before any member is read; the regular files, in order."""
    seen = _Seen(name)
    files = []
    for info in infos:
        path = member_path(name, info.filename)
        label = f"{name}:{info.filename}"
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise InvalidRequest(f"{label}: symlink member; refused (links are never followed)")
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            raise InvalidRequest(f"{label}: device, FIFO or socket member; refused")
        if info.is_dir() or not path:
            continue
        if info.flag_bits & 0x1:
            raise InvalidRequest(f"{label}: encrypted member; decrypt the archive first")
        seen.add(path)
        budget.add_file(label)
        budget.add_bytes(label, info.file_size)
        _check_ratio(label, info.file_size, info.compress_size, limits, "declares")
        files.append((path, info))
    return files


def _read_zip(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str, limits: DocumentLimits,
              totals: list[int], archive_size: int) -> bytes:
    out = bytearray()
    try:
        with zf.open(info) as f:
            while block := f.read(_READ_BLOCK):
                out += block
                totals[0] += len(block)
                _check_real_zip_bytes(label, len(out), info, limits)
                _check_ratio(label, totals[0], archive_size, limits, "the archive expands to")
    except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError) as e:
        raise InvalidRequest(f"{label}: corrupt zip member ({_why(e)})") from None
    except NotImplementedError as e:
        raise InvalidRequest(f"{label}: {e}; re-pack the archive with deflate") from None
    return bytes(out)


def _check_real_zip_bytes(label: str, n: int, info: zipfile.ZipInfo, limits: DocumentLimits) -> None:
    """The limits again on the bytes really read, whatever the central directory declared."""
    check_file_size(label, n, limits)
    _check_ratio(label, n, info.compress_size, limits, "expands to")


# --- tar --------------------------------------------------------------------------------------------------


class _CountingReader(io.RawIOBase):
    """The decompressed tar stream, counted: raises once it passes the ratio or the stream cap."""

    def __init__(self, raw: io.BufferedIOBase, name: str, compressed: int, cap: int, limits: DocumentLimits):
        self.raw, self.name, self.compressed, self.cap, self.limits = raw, name, compressed, cap, limits
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.raw.read(len(buffer))
        self.count += len(data)
        if self.count > self.cap:
            raise over_limit(self.name, f"the uncompressed stream, past {human_bytes(self.count)},",
                             "max_total_bytes", human_bytes(self.limits.max_total_bytes),
                             "load fewer files or raise the limit")
        _check_ratio(self.name, self.count, self.compressed, self.limits, "expands to")
        buffer[: len(data)] = data
        return len(data)


def _decompressed(name: str, data: bytes) -> io.BufferedIOBase:
    """Decompression chosen by magic bytes, not by the suffix."""
    src = io.BytesIO(data)
    if data[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=src)
    if data[:3] == b"BZh":
        return bz2.BZ2File(src)
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(src)
    return src


_TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError)


def _tar_members(name: str, data: bytes, limits: DocumentLimits, budget: Budget) -> Iterator[Member]:
    cap = limits.max_total_bytes + _TAR_HEADER_ALLOWANCE * (limits.max_files + 2)
    stream = io.BufferedReader(_CountingReader(_decompressed(name, data), name, len(data), cap, limits))
    seen = _Seen(name)
    try:
        tf = tarfile.open(fileobj=stream, mode="r|")
        while (m := tf.next()) is not None:
            member = _tar_member(name, tf, m, seen, budget, limits)
            if member is not None:
                yield member
    except _TAR_ERRORS as e:
        raise InvalidRequest(f"{name}: not a readable tar archive ({_why(e)})") from None


def _tar_member(name: str, tf: tarfile.TarFile, m: tarfile.TarInfo, seen: _Seen, budget: Budget,
                limits: DocumentLimits) -> Member | None:
    path = member_path(name, m.name)
    label = f"{name}:{m.name}"
    if m.issym() or m.islnk():
        kind = "symlink" if m.issym() else "hardlink"
        raise InvalidRequest(f"{label}: {kind} member (-> {m.linkname}); refused (links are never followed)")
    if m.ischr() or m.isblk() or m.isfifo():
        raise InvalidRequest(f"{label}: device or FIFO member; refused")
    if m.isdir() or (m.isreg() and not path):
        return None
    if not m.isreg():
        raise InvalidRequest(f"{label}: unsupported tar member type {m.type!r}; refused")
    seen.add(path)
    budget.add_file(label)
    budget.add_bytes(label, m.size)

    def read() -> bytes:
        try:
            f = tf.extractfile(m)
            return f.read() if f is not None else b""
        except _TAR_ERRORS as e:
            raise InvalidRequest(f"{label}: corrupt tar member ({_why(e)})") from None

    return Member(path, label, m.size, read)
