"""A registry of named files: the ones bundled with parley plus the user's own, a user file replacing the
bundled one of the same name. Personas, skills (and next, model presets) are each one of these, keeping only
their domain parts (what a file means, how it is shown) in their own modules.

Contract:
- An entry is a regular file `<name><suffix>` directly in the bundled or the user directory, `suffix` one of
  `suffixes` (case as given). Its name is the file name without the suffix, whatever characters it holds; a
  name is only ever looked up among the files found, so "../x" or "a/b" is simply unknown. In one directory
  the first suffix listed wins (x.toml before x.json). A user entry replaces the bundled entry of its name.
  Directories named like entries, dangling links, other suffixes and a missing user directory are no entries;
  a symlink to a file is one, read through the link.
- `get(name)` reads the file (`max_bytes` at most: refused by size before a byte is read, and never more
  read whatever the size said) and hands `(path, data)` to the domain's loader. An unknown name is an
  `InvalidRequest` listing the known ones ("unknown skill 'x'; known: chat, translate").
- `origin(name)`: "bundled", "user", or "user, replaces bundled". `each(fn)` applies `fn` to every name and
  turns an entry that fails (a broken user file) into a warning line instead of a crash.
- `write(stem, suffix, data)` writes a user file atomically (a temporary file, then a rename: a reader sees
  the old file or the new one). It refuses a stem that cannot be a plain visible file name, an existing user
  entry of that stem unless `overwrite` (which also removes the entry's files of the other suffixes), and,
  whatever `overwrite` says, a directory or a symlink in the way: parley never writes through or over a link.
- `delete(name)` removes a user entry's files of every suffix (a symlink: the link, not what it points to), so
  a bundled entry it replaced comes back. Bundled entries are never deleted.
- Every error is an `InvalidRequest` (`LimitExceeded` for a size) of one line naming the file or the name.
- Shared (`shared`: a SharedFiles, when the store is a database several front ends share): the user's entries
  live in the store, mirrored into a local directory that is the registry's user directory; every listing or
  read brings the mirror up to date first (one small query), every write and delete goes to the store first.
  A user file of the local directory the store lacks is copied into it once, the first time.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

from parley.errors import Conflict, InvalidRequest, LimitExceeded

T = TypeVar("T")
V = TypeVar("V")
MB = 1024 * 1024
MAX_FILE_NAME_BYTES = 255          # NAME_MAX of the common file systems, suffix included

_NOT_IN_A_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")


class FileRegistry(Generic[T]):
    """Bundled files plus the user's (`user_dir`: None for none), named by file stem; `load(path, data)`
    turns a file's bytes into the domain's value."""

    def __init__(self, kind: str, user_dir: Path | None, bundled_dir: Path, *, suffixes: Sequence[str],
                 load: Callable[[Path, bytes], T], max_bytes: int, shared: SharedFiles | None = None):
        self.kind = kind                      # "persona": in every message, and the `param` of errors
        self.shared = shared
        if shared is not None:
            shared.adopt(user_dir, suffixes, max_bytes)
            user_dir = shared.mirror
        self.user_dir = Path(user_dir) if user_dir is not None else None
        self.bundled_dir = Path(bundled_dir)
        self.suffixes = tuple(suffixes)
        self.max_bytes = max_bytes
        self._load = load

    # ---- reading ------------------------------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(self._files())

    def path(self, name: str) -> Path:
        """The file entry `name` comes from (the user's, when it replaces a bundled one)."""
        files = self._files()
        if name not in files:
            known = ", ".join(sorted(files)) or "none"
            raise InvalidRequest(f"unknown {self.kind} {name!r}; known: {known}", param=self.kind)
        return files[name]

    def get(self, name: str) -> T:
        path = self.path(name)
        return self._load(path, read_capped(path, self.max_bytes, self.kind))

    def is_bundled(self, name: str) -> bool:
        return self.path(name).parent == self.bundled_dir

    def origin(self, name: str) -> str:
        """"bundled", "user", or "user, replaces bundled" (a user file named like a bundled entry)."""
        if self.is_bundled(name):
            return "bundled"
        return "user, replaces bundled" if name in _entries(self.bundled_dir, self.suffixes) else "user"

    def each(self, fn: Callable[[str], V]) -> tuple[list[V], list[str]]:
        """fn(name) for every name that works, and one warning line for each that does not."""
        done, warnings = [], []
        for name in self.names():
            try:
                done.append(fn(name))
            except (InvalidRequest, LimitExceeded) as e:   # one broken file must not hide the others
                warnings.append(f"warning: {self.kind} {name!r} skipped: {e.message}")
        return done, warnings

    def _files(self) -> dict[str, Path]:
        if self.shared is not None:
            self.shared.sync()
        user = _entries(self.user_dir, self.suffixes) if self.user_dir is not None else {}
        return _entries(self.bundled_dir, self.suffixes) | user

    # ---- writing ------------------------------------------------------------------------------------------

    def write(self, stem: str, suffix: str, data: bytes, *, overwrite: bool = False) -> Path:
        """Write the user file <stem><suffix> (the contract's rules); returns its path."""
        if suffix not in self.suffixes:
            raise ValueError(f"{suffix!r} is not one of the {self.kind} suffixes {self.suffixes}")
        check_stem(stem, suffix, self.kind)
        root = self._writable_dir()
        target = root / f"{stem}{suffix}"
        named = [root / f"{stem}{s}" for s in self.suffixes]
        taken = [path for path in named if path.is_symlink() or path.is_file()]
        if taken and not overwrite:
            raise InvalidRequest(f"a user {self.kind} {stem!r} exists ({taken[0]}); delete it first or save with "
                                 f"overwrite", param="name")
        if target.is_symlink():
            raise InvalidRequest(f"{target} is a symbolic link; parley does not write through or over links: "
                                 f"remove it first", param="name")
        if target.exists() and not target.is_file():
            raise InvalidRequest(f"{target} is in the way and not a {self.kind} file (a directory?); move it away "
                                 f"to save {self.kind} {stem!r}", param="name")
        updated = None
        if self.shared is not None:      # the store first: it decides a race with another front end
            updated = self.shared.put(stem, suffix, data, overwrite=overwrite)
        write_atomic(target, data)
        if updated is not None:
            self.shared.wrote(target.name, updated)      # the mirror holds this version now
        for old in taken:
            if old != target:
                old.unlink()
        return target

    def delete(self, name: str) -> Path:
        """Remove a user entry's files; a bundled entry it replaced comes back. Returns the entry's path."""
        path = self.path(name)
        if path.parent != self.user_dir:
            raise InvalidRequest(f"{self.kind} {name!r} is bundled with parley and cannot be deleted",
                                 param=self.kind)
        if self.shared is not None:
            self.shared.delete(name)
        for suffix in self.suffixes:
            other = path.parent / f"{name}{suffix}"
            if other.is_symlink() or other.is_file():      # a directory named like it is not the entry's
                other.unlink()
        return path

    def _writable_dir(self) -> Path:
        if self.user_dir is None:
            raise InvalidRequest(f"no user {self.kind} directory to save into (set PARLEY_HOME)", param=self.kind)
        self.user_dir.mkdir(parents=True, exist_ok=True)
        return self.user_dir


class SharedFiles:
    """A registry's user entries kept in the store (`store`: registry_files, put_registry_file,
    registry_file, delete_registry_files; store/db.py), mirrored into `mirror`, a directory of this process's
    that nothing else writes."""

    ADOPTED = ".adopted"      # in the mirror: the names of the local user directory copied into the store
    VERSIONS = ".versions"    # in the mirror: the store's `updated` of each file it holds (JSON)

    def __init__(self, store, kind: str, mirror: Path):
        self.store, self.kind, self.mirror = store, kind, Path(mirror)
        self._versions: dict[str, float] | None = None

    def adopt(self, local: Path | None, suffixes: Sequence[str], max_bytes: int) -> None:
        """Copy each entry of the local user directory into the store, once, unless it has one of that name: a
        file that was there before the database was shared, or put there since, joins the shared ones; one
        deleted from the store later stays deleted (its name is remembered in the mirror)."""
        self.mirror.mkdir(parents=True, exist_ok=True)
        marker = self.mirror / self.ADOPTED
        done = set(marker.read_text().split("\n")) if marker.is_file() else set()
        entries = {n: p for n, p in _entries(Path(local), suffixes).items() if n not in done} if local else {}
        if not entries:
            return
        stored = {name for name, _, _ in self.store.registry_files(self.kind)}
        for name, path in entries.items():
            if name not in stored:
                # another front end stored one of that name meanwhile; a file too big stays where it is
                with contextlib.suppress(Conflict, LimitExceeded):
                    self.store.put_registry_file(self.kind, name, path.suffix,
                                                 read_capped(path, max_bytes, self.kind), overwrite=False)
        write_atomic(marker, "\n".join(sorted(done | set(entries))).encode())

    def versions(self) -> dict[str, float]:
        if self._versions is None:
            try:
                self._versions = {str(k): float(v) for k, v in
                                  json.loads((self.mirror / self.VERSIONS).read_text()).items()}
            except (OSError, ValueError, AttributeError, TypeError):
                self._versions = {}
        return self._versions

    def wrote(self, file_name: str, updated: float) -> None:
        """The mirror's `file_name` is the store's version of `updated` now."""
        self.versions()[file_name] = updated
        write_atomic(self.mirror / self.VERSIONS, json.dumps(self.versions()).encode())

    def sync(self) -> None:
        """Make the mirror hold exactly the store's files (each one whose version changed fetched again)."""
        stored = {f"{name}{suffix}": (name, suffix, updated)
                  for name, suffix, updated in self.store.registry_files(self.kind)}
        for path in self.mirror.iterdir():     # (dot files: the marker, the versions, a write in progress)
            if not path.name.startswith(".") and path.name not in stored and (path.is_file() or path.is_symlink()):
                path.unlink()
        have = self.versions()
        for file_name, (name, suffix, updated) in stored.items():
            path = self.mirror / file_name
            if have.get(file_name) == updated and path.is_file() and not path.is_symlink():
                continue
            data = self.store.registry_file(self.kind, name, suffix)
            if data is not None:
                write_atomic(path, data)
                self.wrote(file_name, updated)

    def put(self, stem: str, suffix: str, data: bytes, *, overwrite: bool) -> float:
        return self.store.put_registry_file(self.kind, stem, suffix, data, overwrite=overwrite)

    def delete(self, name: str) -> None:
        self.store.delete_registry_files(self.kind, name)


def _entries(directory: Path | None, suffixes: Sequence[str]) -> dict[str, Path]:
    """name -> file of the entries directly in `directory`; the first suffix wins a name."""
    out: dict[str, Path] = {}
    if directory is None or not directory.is_dir():
        return out
    for suffix in suffixes:
        for path in sorted(directory.glob(f"*{suffix}")):
            name = path.name[: -len(suffix)]
            if name and path.is_file():         # follows a link: a dangling one, or one to a directory, is not
                out.setdefault(name, path)
    return out


def check_stem(stem: str, suffix: str, kind: str) -> None:
    """Refuse a stem that is not a plain, visible file name of this directory."""
    if not stem or stem.startswith(".") or _NOT_IN_A_NAME.search(stem):
        raise InvalidRequest(f"{kind} name {stem!r} cannot name a file: it must be non-empty, not start with "
                             f"'.', and hold no '/', '\\' or control characters", param="name")
    if len(f"{stem}{suffix}".encode("utf-8", "surrogatepass")) > MAX_FILE_NAME_BYTES:
        raise InvalidRequest(f"{kind} name {stem[:40]!r}... is too long for a file name (at most "
                             f"{MAX_FILE_NAME_BYTES} bytes with {suffix})", param="name")


def read_capped(path: Path, max_bytes: int, kind: str) -> bytes:
    """A registry file's bytes: refused by its size first, and never more than `max_bytes` read."""
    try:
        size = path.stat().st_size
        if size <= max_bytes:
            with open(path, "rb") as f:
                data = f.read(max_bytes + 1)       # a file that grew since stat(), or lies about its size
    except OSError as e:
        raise InvalidRequest(f"cannot read {kind} file {path}: {e.strerror or e}", param=kind) from None
    if size > max_bytes or len(data) > max_bytes:
        shown = _size(size) if size > max_bytes else f"more than {_size(max_bytes)}"
        raise LimitExceeded(f"{path} is {shown}; a {kind} file is at most {_size(max_bytes)}", param=kind)
    return data


def decode_utf8(data: bytes, path: Path, kind: str) -> str:
    """A text file's bytes as str; not UTF-8 is an error naming the file and the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidRequest(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})", param=kind) from None


def write_atomic(path: Path, data: bytes) -> None:
    """`data` as `path`, through a temporary file beside it renamed over it (.tmp: never an entry)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _size(n: int) -> str:
    for unit, scale in (("MB", MB), ("KB", 1024)):
        if n >= scale:
            return f"{n // scale} {unit}" if n % scale == 0 else f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


__all__ = ["FileRegistry", "check_stem", "decode_utf8", "read_capped", "write_atomic"]
