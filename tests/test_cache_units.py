"""Unit tests of the cache bookkeeping, no model: the cell ledger against an explicit cell model, the prefix
index against brute force, the RAM/disk store's budgets and file checks, the thread governor's choices."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.engine.threads import ThreadGovernor
from parley.scheduler.cells import CellLedger
from parley.scheduler.kv_store import KVStore, model_fingerprint
from parley.scheduler.prefix_index import BLOCK, PrefixIndex, chain_hashes, common_prefix, prefix_key


class CellModel:
    """What llama.cpp does with a unified KV cache: cells tagged with (sequence set, position)."""

    def __init__(self):
        self.cells: list[tuple[set[int], int]] = []

    def extend(self, seq, start, end):
        self.cells += [({seq}, p) for p in range(start, end)]

    def fork(self, src, dst, n):
        for seqs, pos in self.cells:
            if src in seqs and pos < n:
                seqs.add(dst)

    def trim(self, seq, n):
        for seqs, pos in self.cells:
            if seq in seqs and pos >= n:
                seqs.discard(seq)
        self.cells = [c for c in self.cells if c[0]]

    def length(self, seq):
        return max((p + 1 for s, p in self.cells if seq in s), default=0)

    @property
    def used(self):
        return len(self.cells)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["extend", "fork", "trim", "free"]),
                          st.integers(0, 4), st.integers(0, 4), st.integers(0, 40)), max_size=60))
def test_ledger_counts_cells_like_llama_cpp(ops):
    ledger, model = CellLedger(), CellModel()
    for op, a, b, n in ops:
        if op == "extend":
            start = model.length(a)
            ledger.extend(a, start + n)
            model.extend(a, start, start + n)
        elif op == "fork" and a != b and model.length(b) == 0:
            n = min(n, model.length(a))
            ledger.fork(a, b, n)
            model.fork(a, b, n)
        elif op == "trim":
            ledger.trim(a, n)
            model.trim(a, n)
        elif op == "free":
            ledger.free(a)
            model.trim(a, 0)
        assert ledger.used == model.used
        for s in range(5):
            assert ledger.length(s) == model.length(s)
        for group in ({0}, {1, 2}, {0, 3, 4}):
            assert ledger.held_by(group) == sum(1 for seqs, _ in model.cells if seqs & group)
        for src, k in ((a, n), (b, n // 2)):  # what stays once a fork of src's first k positions is made
            assert ledger.held_by({1, 2}, prefix=(src, k)) == sum(
                1 for seqs, pos in model.cells if seqs & {1, 2} or (src in seqs and pos < k))


def test_fork_then_evicting_the_source_frees_only_its_private_cells():
    """Admission forks a shared prefix from an idle sequence, then may evict that source: the fork keeps the
    shared cells, the source's private tail is freed, and room() predicted exactly that before the fork."""
    ledger = CellLedger()
    ledger.extend(0, 600)                       # an idle conversation: 30 shared tokens + 570 of its own
    predicted = ledger.held_by([], prefix=(0, 30))
    ledger.fork(0, 1, 30)
    ledger.free(0)
    assert predicted == ledger.used == 30 and ledger.length(1) == 30


def test_ledger_private_cells():
    ledger = CellLedger()
    ledger.extend(0, 100)
    ledger.fork(0, 1, 60)
    ledger.extend(1, 80)
    assert ledger.used == 120
    assert ledger.private(0) == 40 and ledger.private(1) == 20


class H:
    def __init__(self, tokens):
        self.tokens = list(tokens)
        self.hashes = chain_hashes(self.tokens)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 3), max_size=70), max_size=6), st.lists(st.integers(0, 3), max_size=70))
def test_index_finds_the_longest_prefix(holders, prompt):
    index = PrefixIndex()
    hs = [H(t) for t in holders]
    for h in hs:
        index.add(h)
    best, n = index.match(prompt, chain_hashes(prompt))
    expect = max((common_prefix(prompt, h.tokens) for h in hs), default=0)
    assert n == expect
    if expect:
        assert common_prefix(prompt, best.tokens) == expect


def test_index_set_tokens_and_remove():
    index = PrefixIndex()
    a = H(range(50))
    index.add(a)
    index.set_tokens(a, list(range(20)) + [99] * 30)
    best, n = index.match(list(range(50)), chain_hashes(list(range(50))))
    assert best is a and n == 20
    index.remove(a)
    assert index.match(list(range(50)), chain_hashes(list(range(50)))) == (None, 0)


def test_accept_filter_backs_off_to_shallower_holders():
    index = PrefixIndex()
    deep, shallow = H(range(64)), H(list(range(20)) + [7])
    index.add(deep)
    index.add(shallow)
    best, n = index.match(list(range(64)), chain_hashes(list(range(64))), accept=lambda h: h is shallow)
    assert best is shallow and n == 20


def test_prefix_key_is_exact():
    t = list(range(40))
    assert prefix_key(t) == prefix_key(list(t))
    assert prefix_key(t) != prefix_key(t[:-1]) != prefix_key(t + [0])
    assert len(chain_hashes(t)) == 40 // BLOCK


def make_store(tmp_path, ram=1000, disk=3000):
    return KVStore(ram_bytes=ram, disk_bytes=disk, disk_dir=tmp_path / "kv", model_hash="m" * 64)


def test_store_budgets_and_spill(tmp_path):
    store = make_store(tmp_path)
    entries = []
    for i in range(8):
        s, dropped = store.put(list(range(i, i + 40)), bytes([i]) * 400)
        entries.append(s)
        assert store.ram_used <= 1000 and store.disk_used <= 3000
    store.close()
    files = list((tmp_path / "kv").glob("*.kv"))
    assert 0 < len(files) <= 7 and sum(f.stat().st_size for f in files) <= 3000 + 7 * 400
    kept = [e for e in entries if not e.deleted]
    for e in kept:
        data = store.load(e)
        assert data == bytes([entries.index(e)]) * 400


def test_store_finds_its_files_after_restart_and_rejects_bad_ones(tmp_path):
    store = make_store(tmp_path, ram=0, disk=10_000)
    s, _ = store.put([1, 2, 3] * 20, b"abc" * 100)
    store.close()
    (tmp_path / "kv" / "garbage.kv").write_bytes(b"not ours")
    again = make_store(tmp_path, ram=0, disk=10_000)
    found = again.scan_disk()
    assert [f.tokens for f in found] == [[1, 2, 3] * 20]
    assert again.corrupt_files == 1 and not (tmp_path / "kv" / "garbage.kv").exists()
    assert again.load(found[0]) == b"abc" * 100
    # flip one payload byte: the checksum catches it, the file is deleted, nothing is returned
    path = found[0].path
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF
    path.write_bytes(bytes(raw))
    third = make_store(tmp_path, ram=0, disk=10_000)
    [entry] = third.scan_disk()
    assert third.load(entry) is None and third.corrupt_files == 1
    third.close()
    assert not path.exists()


def test_store_rejects_another_models_file(tmp_path):
    store = make_store(tmp_path, ram=0, disk=10_000)
    store.put(list(range(40)), b"x" * 100)
    store.close()
    other = KVStore(ram_bytes=0, disk_bytes=10_000, disk_dir=tmp_path / "kv", model_hash="n" * 64)
    assert other.scan_disk() == [] and other.corrupt_files == 1


def test_model_fingerprint_is_remembered(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF" + bytes(1000))
    h0 = model_fingerprint(f, tmp_path, remember=False)  # a read-only data directory: nothing written
    assert not (tmp_path / "model-hashes.json").exists()
    h1 = model_fingerprint(f, tmp_path)
    assert (tmp_path / "model-hashes.json").exists()
    assert model_fingerprint(f, tmp_path) == h1 == h0 and len(h1) == 64


def test_read_only_store_reads_and_never_writes(tmp_path):
    """A KV folder that cannot be written: valid states are found and loaded, a corrupt file is counted but
    left, states past the RAM budget are dropped instead of written, and nothing is deleted."""
    writer = make_store(tmp_path, ram=0, disk=10_000)
    writer.put([1, 2, 3] * 20, b"abc" * 100)
    writer.close()
    folder = tmp_path / "kv"
    (folder / "broken.kv").write_bytes(b"not ours")
    before = sorted(f.name for f in folder.iterdir())
    store = KVStore(ram_bytes=500, disk_bytes=10_000, disk_dir=folder, model_hash="m" * 64, read_only=True)
    [found] = store.scan_disk()
    assert store.corrupt_files == 1 and store.load(found) == b"abc" * 100
    s, dropped = store.put(list(range(40)), b"x" * 400)
    t, dropped = store.put(list(range(50)), b"y" * 400)  # the RAM budget holds one: the other has nowhere to go
    assert s.deleted and dropped == [s] and not t.deleted
    store.discard(found)
    assert store.flush_ram_to_disk() == [t]
    store.close()
    assert sorted(f.name for f in folder.iterdir()) == before


@pytest.mark.parametrize("contended", [False, True])
def test_thread_governor_follows_measurements(contended):
    """Costs per token as measured here: 2 threads 8 ms quiet / 30 ms contended, 1 thread 12 ms either way."""
    gov = ThreadGovernor(2, period=16, probe=4)
    rng = random.Random(0)
    for _ in range(400):
        t = gov.threads_for_next_call()
        cost = {2: 0.030 if contended else 0.008, 1: 0.012}[t] * rng.uniform(0.9, 1.1)
        gov.record(1, cost)
    assert gov.current == (1 if contended else 2)


def test_thread_governor_returns_when_the_machine_is_quiet_again():
    gov = ThreadGovernor(2, period=16, probe=4)
    for phase, cost2 in (("busy", 0.030), ("quiet", 0.008)):
        for _ in range(2000):
            t = gov.threads_for_next_call()
            gov.record(1, cost2 if t == 2 else 0.012)
        assert gov.current == (1 if phase == "busy" else 2)
    assert gov.switches == 2


def test_single_core_has_no_governor_choices():
    assert not ThreadGovernor(1).active


def test_thread_governor_drops_at_once_when_contention_starts():
    gov = ThreadGovernor(2, period=16, probe=4)
    for _ in range(500):  # quiet: settles on 2 threads, probes back off to long periods
        t = gov.threads_for_next_call()
        gov.record(1, 0.008 if t == 2 else 0.012)
    assert gov.current == 2 and gov.period > 100
    calls = 0
    while gov.current == 2 and calls < 50:  # another process takes a core: 2 threads now cost 3x
        t = gov.threads_for_next_call()
        gov.record(1, 0.025 if t == 2 else 0.012)
        calls += 1
    assert gov.current == 1 and calls <= 8  # a few calls, not the 100+ of the backed-off period


def test_thread_governor_compares_calls_of_the_same_size():
    """A batch shrinking from 8 sequences to 1 costs more per token; that is not contention."""
    gov = ThreadGovernor(2, period=16, probe=4)
    for i in range(300):
        n = 8 if i < 150 else 1
        t = gov.threads_for_next_call()
        gov.record(n, (0.015 if n == 8 else 0.008) * (1.0 if t == 2 else 1.5))
    assert gov.current == 2 and gov.switches == 0
