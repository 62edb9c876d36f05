"""CellLedger: how many KV cells are in use when sequences share prefix cells.

With a unified KV buffer, forking positions [0, n) of sequence A into B only tags A's cells with B too, and a
cell is freed when no sequence holds it any more. llama.cpp does not report the count, so the ledger models it:
cells are grouped by the run of decodes that created them (a group starts at some position); every sequence
holds a prefix of each group it passes through, so a group's live cells are exactly up to the furthest position
any sequence holds in it. used = sum over groups of (max end held - group start).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Group:
    start: int
    ends: dict[int, int] = field(default_factory=dict)  # seq id -> end position held in this group

    def size(self) -> int:
        return max(self.ends.values()) - self.start


class CellLedger:
    def __init__(self) -> None:
        self._ids = itertools.count()
        self._groups: dict[int, _Group] = {}
        self._segments: dict[int, list[int]] = {}  # seq -> group ids in position order

    @property
    def used(self) -> int:
        return sum(g.size() for g in self._groups.values())

    def length(self, seq: int) -> int:
        segs = self._segments.get(seq)
        return self._groups[segs[-1]].ends[seq] if segs else 0

    def private(self, seq: int) -> int:
        """Cells that only `seq` holds: what evicting it frees."""
        n = 0
        for gid in self._segments.get(seq, ()):
            g = self._groups[gid]
            mine = g.ends[seq]
            others = max((e for s, e in g.ends.items() if s != seq), default=g.start)
            n += max(0, mine - max(others, g.start))
        return n

    def held_by(self, seqs, prefix: tuple[int, int] | None = None) -> int:
        """Cells that at least one of `seqs` holds (shared cells counted once), together with, for `prefix` =
        (seq, n), the cells of that sequence's positions [0, n): what stays once a fork of them is made and
        every other sequence is gone."""
        seqs = set(seqs)
        src, n_src = prefix if prefix is not None else (None, 0)
        n = 0
        for g in self._groups.values():
            end = max((e for s, e in g.ends.items() if s in seqs), default=g.start)
            if src in g.ends:
                end = max(end, min(g.ends[src], n_src))
            n += end - g.start
        return n

    def extend(self, seq: int, end: int) -> None:
        """seq now holds positions up to `end` (new cells were decoded for it past its old end)."""
        segs = self._segments.setdefault(seq, [])
        cur = self.length(seq)
        if end <= cur:
            return
        if segs:
            g = self._groups[segs[-1]]
            if g.ends[seq] == max(g.ends.values()):  # nobody holds cells past our end in this group
                g.ends[seq] = end
                return
        gid = next(self._ids)
        self._groups[gid] = _Group(start=cur, ends={seq: end})
        segs.append(gid)

    def fork(self, src: int, dst: int, n: int) -> None:
        """dst (empty) now shares src's cells for positions [0, n)."""
        assert not self._segments.get(dst), f"fork into non-empty sequence {dst}"
        segs = []
        for gid in self._segments.get(src, ()):
            g = self._groups[gid]
            if g.start >= n:
                break
            g.ends[dst] = min(g.ends[src], n)
            segs.append(gid)
        self._segments[dst] = segs

    def trim(self, seq: int, n: int) -> None:
        """seq keeps only positions [0, n)."""
        segs = self._segments.get(seq, [])
        while segs:
            g = self._groups[segs[-1]]
            if g.start < n:
                g.ends[seq] = min(g.ends[seq], n)
                break
            del g.ends[seq]
            if not g.ends:
                del self._groups[segs[-1]]
            segs.pop()

    def free(self, seq: int) -> None:
        self.trim(seq, 0)
        self._segments.pop(seq, None)
