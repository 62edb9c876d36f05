"""KVStore: saved sequence states in host RAM and on disk, each tier under a byte budget.

A saved state is the KV of one sequence for exactly `tokens` (llama_state_seq_get_data bytes). States leave the
engine into RAM (LRU); past the RAM budget the oldest move to disk; past the disk budget the oldest files go.
Disk files live under <data dir>/kv/<model sha256[:16]>/<prefix key>.kv and carry a header with the model hash,
the token ids and a SHA-256 of the payload; a file that fails any check is deleted and never handed to llama.cpp.
A restarted process scans its model's folder and finds its states again. The scan looks (lstat) before it
touches: only regular files are opened (a directory, a symlink, a FIFO or a device named *.kv is skipped with one
warning), so junk in the folder can neither crash nor hang the start. A folder that cannot be written (a
read-only mount, no permission) is used read-only: its valid states are restored, nothing is written or deleted,
and one warning says so.

Threads: the scheduler thread calls everything here; one writer thread does the file writes and deletes, in
order, so a state is readable from memory until its file is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import stat
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from parley.scheduler.heap import map_large_buffers
from parley.scheduler.prefix_index import chain_hashes, prefix_key

log = logging.getLogger("parley.kv_store")

MAGIC = b"PARLEYKV"
VERSION = 1
_HEAD = struct.Struct("<8sII")  # magic, version, header json length


@dataclass(eq=False)
class Saved:
    """One saved state: KV for exactly `tokens`. `data` is in RAM (tier "ram") or pending a disk write."""

    tokens: list[int]
    size: int
    tier: str                              # "ram" | "disk"
    data: bytes | bytearray | None = None  # held while in RAM or until the disk write completes
    path: Path | None = None
    hashes: list[bytes] = field(default_factory=list)
    used: float = field(default_factory=time.monotonic)
    deleted: bool = False
    keep: bool = False                     # a persisted prefix (a document's): never replaced by a longer state

    def __post_init__(self) -> None:
        if not self.hashes:
            self.hashes = chain_hashes(self.tokens)


class CacheFileError(Exception):
    pass


def model_fingerprint(model_path: Path, data_dir: Path, *, remember: bool = True) -> str:
    """SHA-256 of the model file, remembered per (path, size, mtime) in `data_dir` so large models are hashed
    once (`remember=False`: a read-only data directory, only read the memo)."""
    st = model_path.stat()
    memo_path = data_dir / "model-hashes.json"
    key = f"{model_path}|{st.st_size}|{st.st_mtime_ns}"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if isinstance(memo, dict) and isinstance(memo.get(key), str):
        return memo[key]
    h = hashlib.sha256()
    with open(model_path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    digest = h.hexdigest()
    if not remember:
        return digest
    memo = memo if isinstance(memo, dict) else {}
    memo[key] = digest
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = memo_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(memo))
        os.replace(tmp, memo_path)
    except OSError as e:  # a read-only data dir only costs a re-hash next time
        log.warning("could not remember the model hash in %s: %s", memo_path, e)
    return digest


def write_state_file(path: Path, model_hash: str, tokens: list[int], data: bytes | bytearray,
                     keep: bool = False) -> None:
    token_bytes = np.asarray(tokens, dtype=np.int32).tobytes()
    header = json.dumps({
        "model_sha256": model_hash,
        "n_tokens": len(tokens),
        "payload_bytes": len(data),
        "sha256": hashlib.sha256(token_bytes + bytes(memoryview(data))).hexdigest(),
        "created": time.time(),
        "keep": keep,
    }).encode()
    tmp = path.with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}")
    with open(tmp, "wb") as f:
        f.write(_HEAD.pack(MAGIC, VERSION, len(header)))
        f.write(header)
        f.write(token_bytes)
        f.write(data)
    os.replace(tmp, path)


def open_regular(path: Path):
    """Open a file for reading only if it is a regular file: never follows a symlink, never blocks on a FIFO,
    never reads a device. Raises CacheFileError for anything else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise CacheFileError(f"cannot open: {e.strerror or e}") from e
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CacheFileError("not a regular file")
    return os.fdopen(fd, "rb")


def read_state_header(path: Path, model_hash: str) -> tuple[dict, list[int], int]:
    """(header, tokens, payload offset); raises CacheFileError for anything not written by us for this model."""
    with open_regular(path) as f:
        head = f.read(_HEAD.size)
        if len(head) != _HEAD.size:
            raise CacheFileError("truncated")
        magic, version, hlen = _HEAD.unpack(head)
        if magic != MAGIC or version != VERSION or hlen > 1 << 20:
            raise CacheFileError("not a parley KV file of this version")
        try:
            header = json.loads(f.read(hlen))
            n = int(header["n_tokens"])
            payload = int(header["payload_bytes"])
            if header["model_sha256"] != model_hash:
                raise CacheFileError("written for another model")
        except (ValueError, KeyError, TypeError) as e:
            raise CacheFileError(f"bad header: {e}") from e
        raw = f.read(4 * n)
        if len(raw) != 4 * n:
            raise CacheFileError("truncated tokens")
        offset = _HEAD.size + hlen + 4 * n
        if os.fstat(f.fileno()).st_size != offset + payload:
            raise CacheFileError("size does not match its header")
    return header, np.frombuffer(raw, dtype=np.int32).tolist(), offset


def read_state_file(path: Path, model_hash: str) -> tuple[list[int], bytes]:
    header, tokens, offset = read_state_header(path, model_hash)
    with open_regular(path) as f:
        f.seek(offset - 4 * len(tokens))
        blob = f.read()
    if hashlib.sha256(blob).hexdigest() != header["sha256"]:
        raise CacheFileError("checksum mismatch")
    return tokens, blob[4 * len(tokens):]


class KVStore:
    def __init__(self, *, ram_bytes: int, disk_bytes: int, disk_dir: Path | None, model_hash: str | None,
                 read_only: bool = False):
        if ram_bytes > 0:
            map_large_buffers()  # freed states give their memory back (heap.py)
        self.ram_budget = ram_bytes
        self.disk_budget = disk_bytes if disk_dir is not None else 0
        self.dir = disk_dir
        self.model_hash = model_hash
        self.disk_on = self.dir is not None and self.disk_budget > 0   # the disk tier exists (maybe read-only)
        self.read_only = read_only
        self._ram: OrderedDict[Saved, None] = OrderedDict()
        self._disk: OrderedDict[Saved, None] = OrderedDict()
        self.ram_used = 0
        self.disk_used = 0
        self.corrupt_files = 0
        self._tasks: queue.Queue = queue.Queue()
        self._writer: threading.Thread | None = None
        why = "the data directory is read-only"
        if self.disk_on and not self.read_only:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                self.read_only, why = True, f"cannot create it: {e.strerror or e}"
        if self.disk_on and self.read_only:
            log.warning("the KV cache folder %s cannot be written (%s): this run saves no KV state to disk and "
                        "deletes nothing there; states already saved are still used", self.dir, why)
        if self.disk_on and not self.read_only:
            self._writer = threading.Thread(target=self._write_loop, name="parley-kv-writer", daemon=True)
            self._writer.start()

    # ---- what is stored ----------------------------------------------------------------------------------
    @property
    def ram_count(self) -> int:
        return len(self._ram)

    @property
    def disk_count(self) -> int:
        return len(self._disk)

    def entries(self) -> list[Saved]:
        return list(self._ram) + list(self._disk)

    def scan_disk(self) -> list[Saved]:
        """Index the state files a previous process left for this model (headers only; payloads stay on disk).
        Skips what is not a regular file (one warning); deletes files that fail a check unless read-only."""
        if not self.disk_on:
            return []
        files, junk = self._list_files()
        if junk:
            log.warning("ignoring %d entries in the KV cache folder %s that are not regular files: %s (remove "
                        "them)", len(junk), self.dir, ", ".join(junk[:5]) + (", ..." if len(junk) > 5 else ""))
        found, bad = [], []
        for path, size in files:
            try:
                header, tokens, _ = read_state_header(path, self.model_hash)
            except (CacheFileError, OSError) as e:
                bad.append(f"{path.name} ({e})")
                self.corrupt_files += 1
                self._delete(path)
                continue
            s = Saved(tokens=tokens, size=size, tier="disk", path=path, keep=bool(header.get("keep")))
            self._disk[s] = None
            self.disk_used += s.size
            found.append(s)
        if bad:
            log.warning("%s %d unusable KV cache files in %s: %s", "kept (read-only)" if self.read_only else
                        "deleted", len(bad), self.dir, "; ".join(bad[:3]) + ("; ..." if len(bad) > 3 else ""))
        self._drop_stale_temp_files()
        return found

    def _list_files(self) -> tuple[list[tuple[Path, int]], list[str]]:
        """(regular *.kv files with their sizes, oldest first; names of *.kv entries that are not regular files).
        lstat only: nothing is opened or followed here."""
        files, junk = [], []
        try:
            entries = list(os.scandir(self.dir))
        except OSError:  # the folder is missing (read-only home, first run) or unreadable: nothing saved
            return [], []
        for entry in entries:
            if not entry.name.endswith(".kv"):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                files.append((Path(entry.path), st.st_size, st.st_mtime))
            else:
                junk.append(entry.name)
        files.sort(key=lambda f: f[2])
        return [(p, size) for p, size, _ in files], sorted(junk)

    def _drop_stale_temp_files(self) -> None:
        if self.read_only:
            return
        for stale in self.dir.glob("*.tmp*"):  # a write cut short; another live process's is recent
            try:
                st = stale.lstat()
                if stat.S_ISREG(st.st_mode) and time.time() - st.st_mtime > 3600:
                    stale.unlink(missing_ok=True)
            except OSError:
                pass

    def _delete(self, path: Path) -> None:
        if self.read_only:
            return
        try:
            path.unlink(missing_ok=True)
        except OSError as e:
            log.warning("could not delete the KV cache file %s: %s", path, e.strerror or e)

    # ---- put / take --------------------------------------------------------------------------------------
    def put(self, tokens: list[int], data: bytes | bytearray) -> tuple[Saved | None, list[Saved]]:
        """Keep a state in RAM. Returns (the new entry or None when no tier can hold it, entries dropped)."""
        dropped: list[Saved] = []
        if len(data) > max(self.ram_budget, self.disk_budget):
            return None, dropped
        s = Saved(tokens=tokens, size=len(data), tier="ram", data=data)
        if len(data) > self.ram_budget:
            self._to_disk(s, dropped)
        else:
            self._ram[s] = None
            self.ram_used += s.size
        self._enforce(dropped)
        return (None if s.deleted else s), dropped

    def put_disk(self, tokens: list[int], data: bytes | bytearray) -> tuple[Saved | None, list[Saved]]:
        """Write a state to the disk tier now (a pinned document: ready after a restart, even a crash).
        (None, []) without a writable disk tier."""
        dropped: list[Saved] = []
        if self._writer is None or len(data) > self.disk_budget:
            return None, dropped
        s = Saved(tokens=tokens, size=len(data), tier="disk", data=data, keep=True)
        self._to_disk(s, dropped)
        self._enforce(dropped)
        return (None if s.deleted else s), dropped

    def load(self, s: Saved) -> bytes | bytearray | None:
        """The state's bytes, or None when its file is gone or failed a check (then it is deleted)."""
        s.used = time.monotonic()
        data = s.data
        if data is not None:
            if s.tier == "ram":
                self._ram.move_to_end(s)
            return data
        try:
            tokens, blob = read_state_file(s.path, self.model_hash)
            if tokens != s.tokens:
                raise CacheFileError("tokens differ from the index")
        except (CacheFileError, OSError) as e:
            log.warning("KV cache file %s unusable (%s): deleted, the prefix will be recomputed", s.path, e)
            self.corrupt_files += 1
            self.discard(s)
            return None
        self._disk.move_to_end(s)
        return blob

    def discard(self, s: Saved) -> None:
        if s.deleted:
            return
        s.deleted = True
        if s.tier == "ram":
            self._ram.pop(s, None)
            self.ram_used -= s.size
        else:
            self._disk.pop(s, None)
            self.disk_used -= s.size
            if self._writer is not None:
                self._tasks.put(("delete", s))

    def flush_ram_to_disk(self) -> list[Saved]:
        """Move every RAM state to disk (at shutdown); returns the entries that could not be kept."""
        dropped: list[Saved] = []
        for s in list(self._ram):
            self._ram.pop(s)
            self.ram_used -= s.size
            self._to_disk(s, dropped)
        self._enforce(dropped)
        return dropped

    def close(self, timeout: float = 60.0) -> None:
        """Finish pending writes and stop the writer thread."""
        if self._writer is not None:
            self._tasks.put(("stop", None))
            self._writer.join(timeout)
            self._writer = None

    # ---- internals ---------------------------------------------------------------------------------------
    def _to_disk(self, s: Saved, dropped: list[Saved]) -> None:
        if self._writer is None or s.size > self.disk_budget:  # no disk tier, read-only, or too big
            s.deleted = True
            dropped.append(s)
            return
        s.tier = "disk"
        s.path = self.dir / f"{prefix_key(s.tokens, s.hashes)}.kv"
        self._disk[s] = None
        self.disk_used += s.size
        self._tasks.put(("write", s))

    def _enforce(self, dropped: list[Saved]) -> None:
        while self.ram_used > self.ram_budget and self._ram:
            s, _ = self._ram.popitem(last=False)
            self.ram_used -= s.size
            self._to_disk(s, dropped)
        while self.disk_used > self.disk_budget and self._disk:
            s = next(iter(self._disk))
            self.discard(s)
            dropped.append(s)

    def _write_loop(self) -> None:
        while True:
            op, s = self._tasks.get()
            if op == "stop":
                return
            try:
                if op == "write" and not s.deleted:
                    write_state_file(s.path, self.model_hash, s.tokens, s.data, keep=s.keep)
                    s.data = None  # readable from the file from now on
                elif op == "delete":
                    s.path.unlink(missing_ok=True)
            except OSError as e:  # a failed write keeps the bytes in memory; the state stays usable
                log.warning("KV cache %s of %s failed: %s", op, s.path, e)
