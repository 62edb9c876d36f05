"""KVStore: saved sequence states in host RAM and on disk, each tier under a byte budget.

A saved state is the KV of one sequence for exactly `tokens` (llama_state_seq_get_data bytes). States leave the
engine into RAM (LRU); past the RAM budget the oldest move to disk; past the disk budget the oldest files go.
Disk files live under <data dir>/kv/<model sha256[:16]>/<prefix key>.kv and carry a header with the model hash,
the token ids and a SHA-256 of the payload; a file that fails any check is deleted and never handed to llama.cpp.
A restarted process scans its model's folder and finds its states again.

Threads: the scheduler thread calls everything here; one writer thread does the file writes and deletes, in
order, so a state is readable from memory until its file is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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

    def __post_init__(self) -> None:
        if not self.hashes:
            self.hashes = chain_hashes(self.tokens)


class CacheFileError(Exception):
    pass


def model_fingerprint(model_path: Path, data_dir: Path) -> str:
    """SHA-256 of the model file, remembered per (path, size, mtime) so large models are hashed once."""
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


def write_state_file(path: Path, model_hash: str, tokens: list[int], data: bytes | bytearray) -> None:
    token_bytes = np.asarray(tokens, dtype=np.int32).tobytes()
    header = json.dumps({
        "model_sha256": model_hash,
        "n_tokens": len(tokens),
        "payload_bytes": len(data),
        "sha256": hashlib.sha256(token_bytes + bytes(memoryview(data))).hexdigest(),
        "created": time.time(),
    }).encode()
    tmp = path.with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}")
    with open(tmp, "wb") as f:
        f.write(_HEAD.pack(MAGIC, VERSION, len(header)))
        f.write(header)
        f.write(token_bytes)
        f.write(data)
    os.replace(tmp, path)


def read_state_header(path: Path, model_hash: str) -> tuple[dict, list[int], int]:
    """(header, tokens, payload offset); raises CacheFileError for anything not written by us for this model."""
    with open(path, "rb") as f:
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
    with open(path, "rb") as f:
        f.seek(offset - 4 * len(tokens))
        blob = f.read()
    if hashlib.sha256(blob).hexdigest() != header["sha256"]:
        raise CacheFileError("checksum mismatch")
    return tokens, blob[4 * len(tokens):]


class KVStore:
    def __init__(self, *, ram_bytes: int, disk_bytes: int, disk_dir: Path | None, model_hash: str | None):
        self.ram_budget = ram_bytes
        self.disk_budget = disk_bytes if disk_dir is not None else 0
        self.dir = disk_dir
        self.model_hash = model_hash
        self._ram: OrderedDict[Saved, None] = OrderedDict()
        self._disk: OrderedDict[Saved, None] = OrderedDict()
        self.ram_used = 0
        self.disk_used = 0
        self.corrupt_files = 0
        self._tasks: queue.Queue = queue.Queue()
        self._writer: threading.Thread | None = None
        if self.dir is not None and self.disk_budget > 0:
            self.dir.mkdir(parents=True, exist_ok=True)
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
        """Index the state files a previous process left for this model (headers only; payloads stay on disk)."""
        found = []
        if self._writer is None:
            return found
        for path in sorted(self.dir.glob("*.kv"), key=lambda p: p.stat().st_mtime):
            try:
                header, tokens, _ = read_state_header(path, self.model_hash)
            except (CacheFileError, OSError) as e:
                log.warning("deleting KV cache file %s: %s", path, e)
                self.corrupt_files += 1
                path.unlink(missing_ok=True)
                continue
            s = Saved(tokens=tokens, size=path.stat().st_size, tier="disk", path=path)
            self._disk[s] = None
            self.disk_used += s.size
            found.append(s)
        for stale in self.dir.glob("*.tmp*"):  # a write cut short; another live process's is recent
            try:
                if time.time() - stale.stat().st_mtime > 3600:
                    stale.unlink(missing_ok=True)
            except OSError:
                pass
        return found

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
        if self._writer is None or s.size > self.disk_budget:
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
                    write_state_file(s.path, self.model_hash, s.tokens, s.data)
                    s.data = None  # readable from the file from now on
                elif op == "delete":
                    s.path.unlink(missing_ok=True)
            except OSError as e:  # a failed write keeps the bytes in memory; the state stays usable
                log.warning("KV cache %s of %s failed: %s", op, s.path, e)
