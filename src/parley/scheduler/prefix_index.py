"""PrefixIndex: find, for a prompt, the holder of KV with the longest common token prefix.

Holders are live engine sequences and saved sequence states (RAM or disk). Each holder's tokens are cut into
blocks of BLOCK tokens and each block gets a hash chained over everything before it, so equal hashes mean equal
prefixes. A lookup walks the prompt's block hashes to the deepest one present, then compares the few tokens past
that block boundary against the holders found there. The same chained hash names disk files (kv_store).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import numpy as np

BLOCK = 16


class Holder(Protocol):
    tokens: list[int]
    hashes: list[bytes]


def chain_hashes(tokens: Sequence[int], start: list[bytes] | None = None) -> list[bytes]:
    """Chained hashes of every full BLOCK of `tokens`; `start` holds hashes already computed for a prefix."""
    hashes = list(start or [])
    n_full = len(tokens) // BLOCK
    if len(hashes) >= n_full:
        return hashes[:n_full]
    arr = np.asarray(tokens[len(hashes) * BLOCK: n_full * BLOCK], dtype=np.int32).tobytes()
    prev = hashes[-1] if hashes else b""
    step = BLOCK * 4
    for off in range(0, len(arr), step):
        prev = hashlib.blake2b(prev + arr[off: off + step], digest_size=16).digest()
        hashes.append(prev)
    return hashes


def prefix_key(tokens: Sequence[int], hashes: list[bytes] | None = None) -> str:
    """A stable name for exactly these tokens (the chained hash of all full blocks plus the tail)."""
    hashes = chain_hashes(tokens, hashes)
    tail = np.asarray(tokens[len(hashes) * BLOCK:], dtype=np.int32).tobytes()
    h = hashlib.blake2b((hashes[-1] if hashes else b"") + tail + len(tokens).to_bytes(8, "little"), digest_size=16)
    return h.hexdigest()


def shared_blocks(a: list[bytes], b: list[bytes]) -> int:
    """How many leading blocks two chained-hash lists share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def common_prefix(a: Sequence[int], b: Sequence[int], start: int = 0) -> int:
    n = min(len(a), len(b))
    i = start
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixIndex:
    """Holders by chained block hash. Not thread-safe: the scheduler thread owns it."""

    def __init__(self) -> None:
        self._by_hash: dict[bytes, set] = {}
        self._holders: set = set()

    def __len__(self) -> int:
        return len(self._holders)

    def __iter__(self):
        return iter(self._holders)

    def add(self, holder: Holder) -> None:
        self._holders.add(holder)
        for h in holder.hashes:
            self._by_hash.setdefault(h, set()).add(holder)

    def remove(self, holder: Holder) -> None:
        self._holders.discard(holder)
        for h in holder.hashes:
            bucket = self._by_hash.get(h)
            if bucket is not None:
                bucket.discard(holder)
                if not bucket:
                    del self._by_hash[h]

    def set_tokens(self, holder: Holder, tokens: list[int]) -> None:
        """Replace a holder's tokens (after it was extended or trimmed) and re-index its blocks."""
        old = holder.hashes
        limit = min(len(old), len(tokens) // BLOCK)
        # blocks still fully inside the common prefix keep their hashes (an in-place extension keeps all)
        n_same = limit if tokens is holder.tokens else common_prefix(holder.tokens, tokens) // BLOCK
        keep = min(limit, n_same)
        for h in old[keep:]:
            bucket = self._by_hash.get(h)
            if bucket is not None:
                bucket.discard(holder)
                if not bucket:
                    del self._by_hash[h]
        holder.tokens = tokens
        holder.hashes = chain_hashes(tokens, old[:keep])
        if holder in self._holders:
            for h in holder.hashes[keep:]:
                self._by_hash.setdefault(h, set()).add(holder)

    def match(
        self,
        tokens: Sequence[int],
        hashes: list[bytes],
        accept: Callable[[Holder], bool] = lambda h: True,
    ) -> tuple[Holder | None, int]:
        """The accepted holder sharing the longest token prefix with `tokens`, and that length (0: none)."""
        depth = 0
        while depth < len(hashes) and hashes[depth] in self._by_hash:
            depth += 1
        best, best_n = None, 0
        while True:
            candidates: Iterable = self._by_hash[hashes[depth - 1]] if depth else self._holders
            start = depth * BLOCK
            for holder in candidates:
                if not accept(holder):
                    continue
                n = common_prefix(tokens, holder.tokens, start)
                if n > best_n:
                    best, best_n = holder, n
            if best is not None or depth == 0:
                return best, best_n
            depth -= 1  # no accepted holder at this depth: look at shallower blocks
