"""PrefixCache: which engine sequence holds which tokens, and how a new prompt gets the most KV for free.

Narrow API, used only by the scheduler thread:
    attach(request)      give the request a sequence already holding the longest cached prefix of its prompt
                         (forked zero-copy from a live sequence, or restored from RAM/disk) -> Attach; None
                         only when it cannot fit beside running requests and pinned prefixes
    room()               free cells once every idle sequence is evicted
    advance(slot, toks)  the engine decoded `toks` into the slot: tokens, cell ledger and index move together
    release(request)     the request is done: its sequence stays as a cache entry (LRU), pinned if asked
    make_room(cells)     evict idle, unpinned sequences (saved to RAM/disk first) until `cells` are free
    trim_idle(cap)       once idle cells exceed `cap`, move idle sequences to RAM/disk, one per call (all at
                         once before a request places its first cells), until none
    unpin(slot)          let a pinned prefix be evicted again
    save_all()           at shutdown: every idle sequence to disk

Invariants: a Slot's `tokens` are exactly the positions its sequence holds in the KV cache; the ledger counts
cells; every live slot and every saved state is in the PrefixIndex under its block hashes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from parley.engine.llamacpp import StateRejected
from parley.scheduler.cells import CellLedger
from parley.scheduler.kv_store import KVStore, Saved
from parley.scheduler.prefix_index import BLOCK, PrefixIndex, chain_hashes

RESTORE_MIN_GAIN = 16   # restore a saved state only when it covers this many more tokens than a live fork
SAVE_MIN_TOKENS = 32    # shorter sequences are cheaper to recompute than to save
FORK_TAIL_TOKENS = 1024  # a fork of a persisted prefix with fewer own tokens than this is not saved
COMPACT_MAX_TOKENS = 512  # a forked prefix at most this long is re-placed low once its source moved out
DEFER_TAIL_CELLS = 256   # an idle fork adding fewer cells than this to a new request's is moved after its first token


@dataclass(eq=False)
class Slot:
    """A live engine sequence."""

    seq: int
    tokens: list[int] = field(default_factory=list)
    hashes: list[bytes] = field(default_factory=list)
    owner: Any = None          # the running Request, None when idle
    pins: int = 0
    used: float = field(default_factory=time.monotonic)
    tier = "live"


@dataclass
class Attach:
    n_cached: int
    source: str      # "live" | "ram" | "disk" | "none"
    note: str        # why the cache did not cover the whole prompt ("" when it did)


class _Match(NamedTuple):
    """What the cache holds for a prompt: the best live sequence and saved state, and how far each matches."""

    live: Slot | None
    n_live: int
    saved: Saved | None
    n_saved: int
    limit: int       # at most this many prompt tokens may come from the cache (one is left to decode)
    total: int       # cells the request holds at its end: prompt + max_new

    @property
    def restore(self) -> bool:
        return self.saved is not None and self.n_saved >= self.n_live + RESTORE_MIN_GAIN


@dataclass
class CacheCounters:
    hits_live: int = 0
    hits_ram: int = 0
    hits_disk: int = 0
    misses: int = 0
    evictions: int = 0
    saved_states: int = 0
    idle_trims: int = 0
    retired: int = 0             # sequences moved out because their conversation's window moved past them
    restore_failures: int = 0
    compactions: int = 0         # running requests' forked prefixes re-placed low in the buffer (compact)


class PrefixCache:
    def __init__(self, engine, *, kv_budget: int, store: KVStore | None):
        self.engine = engine
        self.kv_budget = kv_budget
        self.store = store
        self.ledger = CellLedger()
        self.index = PrefixIndex()
        self.slots: dict[int, Slot] = {}
        self.free_seqs = list(range(engine.n_seq_max - 1, -1, -1))
        self.counters = CacheCounters()
        self._flushing = False
        if store is not None:
            for s in store.scan_disk():
                self.index.add(s)

    # ---- accounting --------------------------------------------------------------------------------------
    @property
    def cells_used(self) -> int:
        return self.ledger.used

    def idle_slots(self) -> list[Slot]:
        return sorted((s for s in self.slots.values() if s.owner is None and not s.pins), key=lambda s: s.used)

    def _active_seqs(self) -> list[int]:
        return [s.seq for s in self.slots.values() if s.owner is not None or s.pins]

    @property
    def flushing(self) -> bool:
        """trim_idle is moving idle sequences out (until none is left)."""
        return self._flushing

    def idle_cells(self) -> int:
        """Cells held only by idle, unpinned sequences."""
        return self.ledger.used - self.ledger.held_by(self._active_seqs())

    # ---- attach ------------------------------------------------------------------------------------------
    def attach(self, req, protect_cells: int) -> Attach | None:
        """Bind `req` to a sequence holding the longest cached prefix of its prompt. `protect_cells` is how many
        free cells must remain for requests already running. Returns None (nothing changed) only when the
        request cannot fit beside what running requests and pinned prefixes hold: idle sequences give way
        (evicted LRU first, a fork's source included once the fork holds the shared cells), and a saved state
        whose restore does not fit yields to a live fork or to computing the prompt from scratch."""
        m = self._lookup(req)
        got = None
        if m.restore:
            got = self._attach_restored(req, m, protect_cells)
        if got is None and m.live is not None and m.n_live > 0:
            got = self._attach_live(req, m, protect_cells)
        if got is None:
            got = self._attach_fresh(req, m, protect_cells)
        if got is None:
            return None
        slot, source, n_from, note = got
        if m.restore and source not in ("ram", "disk") and not note:
            note = (f"the {m.saved.tier} cache holds {m.n_saved} tokens of this prompt, but restoring its "
                    f"{len(m.saved.tokens)} tokens does not fit beside the running requests; recomputed")
        return self._bind(req, slot, source, n_from, note, m)

    def _lookup(self, req) -> _Match:
        prompt = req.prompt
        hashes = req.hashes or chain_hashes(prompt)
        limit = len(prompt) - 1 if req.max_new > 0 else len(prompt)  # keep one token to decode for logits
        live, n_live = self.index.match(prompt, hashes, accept=lambda h: isinstance(h, Slot))
        saved, n_saved = self.index.match(prompt, hashes, accept=lambda h: isinstance(h, Saved) and not h.deleted)
        n_live, n_saved = min(n_live, limit), min(n_saved, limit)
        return _Match(live, n_live, saved, n_saved, limit, len(prompt) + req.max_new)

    def room(self, keep: Sequence[int] = (), prefix: tuple[int, int] | None = None) -> int:
        """Free cells once every idle, unpinned sequence is evicted, except those in `keep` and the cells of
        `prefix` = (seq, n), positions [0, n) of a sequence (a fork about to be made)."""
        return self.kv_budget - self.ledger.held_by([*self._active_seqs(), *keep], prefix=prefix)

    def _seq_available(self, spare: Slot | None = None) -> bool:
        """A sequence id is free, or an idle sequence other than `spare` can be evicted for one."""
        return bool(self.free_seqs) or any(s is not spare for s in self.idle_slots())

    def _new_slot(self, req, spare: Slot | None = None) -> Slot:
        """A fresh sequence owned by `req` (evicting the least recently used idle one other than `spare` when
        no id is free)."""
        if not self.free_seqs:
            self.evict(next(s for s in self.idle_slots() if s is not spare))
        slot = Slot(seq=self.free_seqs.pop(), owner=req)
        self.slots[slot.seq] = slot
        return slot

    def _attach_restored(self, req, m: _Match, reserve: int):
        """Restore the saved state (whole, then trimmed): it needs room for all its tokens at once."""
        need = max(len(m.saved.tokens), m.total)
        if self.room() < need + reserve or not self._seq_available():
            return None
        self.make_room(need + reserve)
        slot = self._new_slot(req)
        if m.saved.deleted:  # the evictions that made room pushed it out of the store
            source, n_from, note = "none", 0, ""
        else:
            source, n_from, note = self._restore(slot, m.saved, m.n_saved)
        if source != "none":
            return slot, source, n_from, note
        live = m.live
        if live is not None and m.n_live > 0 and self.slots.get(live.seq) is live:  # fall back to a live fork
            self._fork(live, slot, req.prompt, m.n_live)
            return slot, "live", m.n_live, note
        self.counters.misses += 1
        return slot, "none", 0, note

    def _attach_live(self, req, m: _Match, reserve: int):
        """Take over the idle sequence that holds exactly the prefix (the previous turn), or fork it: the fork
        shares its cells, after which the source is just another idle sequence that may be evicted."""
        live, n = m.live, m.n_live
        need = m.total - n
        if live.owner is None and not live.pins and n == len(live.tokens):
            if self.room(keep=[live.seq]) < need + reserve:
                return None
            self.make_room(need + reserve, protect={live}, need_seq=False)
            live.owner = req
            self.counters.hits_live += 1
            return live, "live", n, ""
        if self.room(prefix=(live.seq, n)) < need + reserve or not self._seq_available(spare=live):
            return None
        slot = self._new_slot(req, spare=live)
        self._fork(live, slot, req.prompt, n)
        self.make_room(need + reserve, need_seq=False)  # the source's private cells may go now
        return slot, "live", n, ""

    def _attach_fresh(self, req, m: _Match, reserve: int):
        if self.room() < m.total + reserve or not self._seq_available():
            return None
        self.make_room(m.total + reserve)
        slot = self._new_slot(req)
        self.counters.misses += 1
        return slot, "none", 0, ""

    def _fork(self, src: Slot, dst: Slot, prompt: list[int], n: int) -> None:
        self.engine.kv_copy(src.seq, dst.seq, 0, n)
        self.ledger.fork(src.seq, dst.seq, n)
        dst.tokens = prompt[:n]
        self.counters.hits_live += 1

    def _bind(self, req, slot: Slot, source: str, n_from: int, note: str, m: _Match) -> Attach:
        prompt = req.prompt
        if n_from < len(slot.tokens):
            self.engine.kv_remove(slot.seq, n_from, -1)
            self.ledger.trim(slot.seq, n_from)
            slot.tokens = slot.tokens[:n_from]
        slot.owner = req
        slot.used = time.monotonic()
        self.index.remove(slot)
        slot.hashes = chain_hashes(slot.tokens)
        self.index.add(slot)
        req.slot = slot
        req.n_past = n_from
        req.cached_tokens = n_from
        req.cache_source = source
        if not note and n_from < m.limit:
            note = self._miss_note(prompt, n_from, m.live if m.n_live >= m.n_saved else m.saved)
        req.cache_note = note
        return Attach(n_from, source, note)

    def _restore(self, slot: Slot, saved: Saved, n: int) -> tuple[str, int, str]:
        data = self.store.load(saved)
        if data is None:
            self.index.remove(saved)
            self.counters.restore_failures += 1
            return "none", 0, f"the {saved.tier} cache file failed its checks and was deleted; recomputed"
        try:
            self.engine.state_set(slot.seq, data)
        except StateRejected:  # room was made for it (the ledger counts cells): the state itself is refused
            self.counters.restore_failures += 1
            self.store.discard(saved)
            self.index.remove(saved)
            return "none", 0, (f"llama.cpp refused the saved {saved.tier} KV state ({len(data)} bytes: saved by "
                               f"another build or context layout, or damaged); it was dropped and the prompt "
                               f"recomputed")
        self.ledger.extend(slot.seq, len(saved.tokens))
        slot.tokens = list(saved.tokens)
        tier = saved.tier
        if tier == "ram":  # live again: the RAM copy would only double the memory
            self.store.discard(saved)
            self.index.remove(saved)
            self.counters.hits_ram += 1
        else:
            self.counters.hits_disk += 1
        return tier, n, ""

    @staticmethod
    def _miss_note(prompt: list[int], n: int, best) -> str:
        """Only a cache that held more than it could give is worth a note: a prompt that shares a start with a
        cached sequence and then departs from it (n > 0). New tokens are simply new."""
        if best is None or n == 0:
            return ""
        if n < len(best.tokens) and n < len(prompt) - 1:
            return f"the prompt differs from the cached tokens at position {n} of {len(best.tokens)}"
        return ""

    def advance(self, slot: Slot, tokens, *, index: bool = False) -> None:
        """The engine just decoded `tokens` into `slot`'s sequence: its token list, the cell ledger and (with
        `index`, or whenever a block fills up) the prefix index move together."""
        before = len(slot.tokens)
        slot.tokens.extend(tokens)
        self.ledger.extend(slot.seq, len(slot.tokens))
        if index or len(slot.tokens) // BLOCK > before // BLOCK:
            self.index.set_tokens(slot, slot.tokens)

    # ---- release -----------------------------------------------------------------------------------------
    def release(self, req, *, pin: bool = False) -> Slot:
        slot = req.slot
        slot.owner = None
        slot.used = time.monotonic()
        if pin:
            slot.pins += 1
        self.index.set_tokens(slot, slot.tokens)
        self._drop_dominated(slot)
        if not slot.tokens and not slot.pins:
            self._free(slot)
        return slot

    def _drop_dominated(self, slot: Slot) -> None:
        """Idle, unpinned live sequences whose tokens are a prefix of `slot`'s add nothing: free them."""
        toks = slot.tokens
        for other in list(self.slots.values()):
            if other is slot or other.owner is not None or other.pins:
                continue
            n = len(other.tokens)
            if n <= len(toks) and toks[:n] == other.tokens:
                self._free(other)

    def unpin(self, slot: Slot) -> None:
        slot.pins = max(0, slot.pins - 1)
        slot.used = time.monotonic()

    # ---- eviction ----------------------------------------------------------------------------------------
    def make_room(self, cells: int, *, protect: set = frozenset(), need_seq: bool = True) -> bool:
        """Evict idle, unpinned sequences (LRU first, saving their state) until `cells` cells and, if need_seq,
        one sequence id are free. False when that cannot be reached."""
        def enough() -> bool:
            return self.kv_budget - self.ledger.used >= cells and (self.free_seqs or not need_seq)
        if enough():
            return True
        for victim in self.idle_slots():
            if victim in protect:
                continue
            self.evict(victim)
            if enough():
                return True
        return enough()

    def trim_idle(self, cap: int, *, all_now: bool = False, save_only: bool = False) -> int:
        """With a unified KV buffer every decode scans every cell up to the highest one in use (other sequences'
        cells are masked, but still scanned), so idle conversations kept in the context slow down everyone
        decoding: beside 400-2,000 idle cells a lone stream ran 8-20% slower, beside 4,800 24%, beside 15,600
        45% (`parley bench idle`), while moving a 400-token conversation out costs 2-5 ms and restoring it about
        1 ms. Once idle cells exceed `cap` (default 0: any), move every idle, unpinned sequence to the RAM/disk
        tier, least recently used first. Only emptying the context lets llama.cpp place new cells low again (it
        restarts its search at cell 0 when enough cells are free below its head), which is what brings the
        scanned range down. One sequence per call, so a copy never stalls running streams for long, except with
        `all_now` (a request is about to place its first cells): then all of them go first, so the new cells
        land low and stay there, except a fork that adds fewer than DEFER_TAIL_CELLS to the cells of a longer
        prefix running requests hold (the last question about a document while the next one starts): it barely
        widens the scan, and its state would copy the whole prefix (40 ms for 3,100 cells here), so it moves on a
        later step, after the new request's first token. `save_only` (the engine is quiet, nobody waits for
        room): only sequences worth saving move; one shorter than SAVE_MIN_TOKENS stays, since dropping it
        would lose a short conversation's next turn for nothing. Only with a store: without one, eviction
        would throw the KV away. Returns how many sequences moved."""
        if self.store is None or (not self._flushing and self.ledger.used <= cap):
            return 0  # (the cheap checks first: this runs every decoding step)
        idle = self.idle_slots()
        if not idle:
            self._flushing = False
            return 0
        active = self._active_seqs()
        held = self.ledger.held_by(active)
        if not self._flushing:
            if self.ledger.used - held <= cap:
                return 0
            self._flushing = True
        moved, deferred = 0, False
        for victim in idle:
            added = self.ledger.held_by([*active, victim.seq]) - held  # cells it holds that nobody running does
            if added <= 0:
                continue
            if all_now and added < DEFER_TAIL_CELLS and len(victim.tokens) - added >= DEFER_TAIL_CELLS:
                deferred = True  # a short tail past a prefix the new request shares: it barely widens the scan,
                continue         # and saving it copies the whole prefix, so it goes after the first token
            if self.ledger.private(victim.seq) < SAVE_MIN_TOKENS:
                if save_only:
                    continue
                self.drop(victim)   # a short tail past a running fork of it: cheaper to recompute than save
            else:
                self.evict(victim)
            self.counters.idle_trims += 1
            moved += 1
            if not all_now:
                return moved
        self._flushing = deferred
        return moved

    def compact(self, slot: Slot) -> bool:
        """Re-place a request's cached cells at the low end of the buffer: a prefix forked from an idle sequence
        keeps that sequence's cells, wherever they sat (high, after many conversations), and one high cell
        makes every decode scan up to it. Once trim_idle has moved the source out and the cells are the
        request's alone, a copy out and back in (3,100 cells copy out in 40 ms here) lets llama.cpp place them from
        cell 0. Short prefixes only: a long one is a document or a returning conversation, placed on purpose.
        False when it was not worth it; raises StateRejected (the cells gone: the caller recomputes them)."""
        n = len(slot.tokens)
        if not 0 < n <= COMPACT_MAX_TOKENS or self.ledger.private(slot.seq) < n:
            return False
        data = self.engine.state_get(slot.seq)
        self.engine.kv_remove(slot.seq)
        try:
            self.engine.state_set(slot.seq, data)
        except StateRejected:
            self.ledger.trim(slot.seq, 0)
            self.index.remove(slot)
            slot.tokens, slot.hashes = [], []
            raise
        self.counters.compactions += 1
        return True

    def retire(self, tokens: Sequence[int]) -> int:
        """A conversation's window moved past the prompt `tokens`: the idle sequences holding it (and the reply
        and read-ahead after it) will not be continued, yet every decode would still scan their cells. Move
        them to the RAM/disk tier (a retry of an earlier message restores them). Returns how many moved; none
        without a store (eviction would throw the KV away)."""
        if self.store is None or not tokens:
            return 0
        tokens = list(tokens)
        n = len(tokens)
        moved = 0
        for slot in self.idle_slots():
            if len(slot.tokens) >= n and slot.tokens[:n] == tokens:
                self.evict(slot)
                self.counters.retired += 1
                moved += 1
        return moved

    def evict(self, slot: Slot) -> None:
        if self.store is not None and len(slot.tokens) >= SAVE_MIN_TOKENS:
            self.save(slot)
        self.counters.evictions += 1
        self._free(slot)

    def persist(self, slot: Slot) -> bool:
        """Make sure the disk tier holds `slot`'s exact tokens (writing them now if it does not). False without
        a writable disk tier."""
        if self.store is None:
            return False
        toks = list(slot.tokens)
        saved, n = self.index.match(toks, slot.hashes or chain_hashes(toks),
                                    accept=lambda h: isinstance(h, Saved) and h.tier == "disk" and not h.deleted)
        if saved is not None and n == len(toks) == len(saved.tokens):
            saved.keep = True  # (written by a shutdown save: from now on it is this prefix's persisted copy)
            return True
        stored, dropped = self.store.put_disk(toks, self.engine.state_get(slot.seq))
        for d in dropped:
            self.index.remove(d)
        if stored is None:
            return False
        self.index.add(stored)
        self.counters.saved_states += 1
        return True

    def save(self, slot: Slot) -> Saved | None:
        """Copy a sequence's KV into the store (RAM first), replacing saved states it extends. A short fork of a
        persisted prefix (a question about a pinned document) is not saved: its few own tokens are cheaper to
        recompute than a second copy of the whole document's KV, and the persisted prefix stays."""
        toks = list(slot.tokens)
        kept = [old for old in self.store.entries() if old.keep and len(old.tokens) <= len(toks)
                and toks[:len(old.tokens)] == old.tokens]
        if kept and len(toks) - max(len(k.tokens) for k in kept) < FORK_TAIL_TOKENS:
            return None
        data = self.engine.state_get(slot.seq)
        for old in self.store.entries():
            n = len(old.tokens)
            if not old.keep and n <= len(toks) and toks[:n] == old.tokens:
                self.store.discard(old)
                self.index.remove(old)
        saved, dropped = self.store.put(toks, data)
        for d in dropped:
            self.index.remove(d)
        if saved is not None:
            self.index.add(saved)
            self.counters.saved_states += 1
        return saved

    def drop(self, slot: Slot) -> None:
        """Forget an idle sequence without saving it."""
        self._free(slot)

    def _free(self, slot: Slot) -> None:
        self.engine.kv_remove(slot.seq)
        self.ledger.free(slot.seq)
        self.index.remove(slot)
        del self.slots[slot.seq]
        self.free_seqs.append(slot.seq)

    def discard_owner(self, req) -> None:
        """A request failed mid-way: forget what its sequence holds (its KV may be incomplete)."""
        slot = req.slot
        if slot is not None and slot.seq in self.slots:
            self._free(slot)

    def save_all(self) -> int:
        """Save every idle sequence and every RAM state to disk (shutdown). Returns how many states were saved."""
        if self.store is None:
            return 0
        n = 0
        for slot in list(self.slots.values()):
            if slot.owner is None and len(slot.tokens) >= SAVE_MIN_TOKENS:
                if self.save(slot) is not None:
                    n += 1
        for d in self.store.flush_ram_to_disk():
            self.index.remove(d)
        return n
