"""KV leaving the engine and coming back, with the real model: RAM and disk tiers, a process restart, a
corrupted file. Deterministic mode, so "continues as if it had never left" is checked token for token."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import parley
from parley.sampling import SamplingParams
from parley.scheduler.prefix_cache import SAVE_MIN_TOKENS
from parley.scheduler.request import Chunk, Result
from tests.conftest import chatml

G = SamplingParams(temperature=0, max_tokens=16)
SYSTEM = "You are a ship's log. " * 10


def conversation(p) -> tuple[list[int], list[int]]:
    """Turn 1 of a conversation, then the prompt of turn 2 (turn 1's prompt + reply + a new user message)."""
    first = p.tokenize(chatml("Where are we sailing?", SYSTEM))
    r1 = p.scheduler.generate(first, G)
    second = first + r1.token_ids + p.tokenize("<|im_end|>\n<|im_start|>user\nAnd then?<|im_end|>\n<|im_start|>assistant\n")
    return first, second


def reference(second: list[int]) -> list[int]:
    cold = parley.load(deterministic=True, disk_cache_mb=0, kv_size=2048)
    try:
        return cold.scheduler.generate(second, G).token_ids
    finally:
        cold.close(save=False)


def evict_everything(p) -> None:
    p.scheduler.drop_cached(save=True)


def test_evicted_to_ram_then_disk_continues_exactly(tmp_path):
    p = parley.load(deterministic=True, home=str(tmp_path), kv_size=2048, ram_cache_mb=0, disk_cache_mb=256)
    try:
        first, second = conversation(p)
        evict_everything(p)  # RAM budget 0: straight to disk
        st = p.scheduler.stats()
        assert st.live_sequences == 0 and st.disk_states == 1
        res = p.scheduler.generate(second, G)
        assert res.cache_source == "disk"
        assert res.cached_tokens >= len(first)  # the whole first turn came back, not recomputed
        assert res.token_ids == reference(second)
    finally:
        p.close(save=False)


def test_ram_tier_restores(tmp_path):
    p = parley.load(deterministic=True, disk_cache_mb=0, kv_size=2048, ram_cache_mb=256)
    try:
        first, second = conversation(p)
        evict_everything(p)
        assert p.scheduler.stats().ram_states == 1
        res = p.scheduler.generate(second, G)
        assert res.cache_source == "ram" and res.cached_tokens >= len(first)
        assert res.token_ids == reference(second)
        assert p.scheduler.stats().ram_states == 0  # live again: the RAM copy was released
    finally:
        p.close(save=False)


def test_idle_conversations_leave_the_context_while_others_decode():
    """Past --kv-idle-cells idle cells, a decoding step moves idle conversations to RAM (every decode scans every
    cell in use); a returning one is restored from RAM and continues exactly."""
    p = parley.load(deterministic=True, disk_cache_mb=0, kv_size=2048, ram_cache_mb=256, kv_idle_cells=32)
    try:
        first, second = conversation(p)
        # decodes while the first one idles (which may also have left already, the engine being quiet a moment)
        p.scheduler.generate(p.tokenize(chatml("Count to three.")), G)
        st = p.scheduler.stats()
        assert st.cache.idle_trims >= 1 and st.ram_states >= 1
        res = p.scheduler.generate(second, G)
        assert res.cache_source == "ram" and res.cached_tokens >= len(first)
        assert res.token_ids == reference(second)
    finally:
        p.close(save=False)


def wait_for(p, check, timeout: float = 20.0):
    """The scheduler's stats once `check` holds (polled every 0.2 s: longer than the quiet it waits for)."""
    deadline = time.monotonic() + timeout
    while not check(st := p.scheduler.stats()):
        assert time.monotonic() < deadline, st
        time.sleep(0.2)
    return st


def test_a_quiet_engine_moves_idle_conversations_out_and_keeps_short_ones():
    """Nothing to run for a moment: an idle conversation goes to RAM then, not when the next request arrives
    (whose first token would wait for the copy); it comes back from RAM and continues exactly. A conversation
    too short to be worth saving stays live (moving it out would drop it)."""
    p = parley.load(deterministic=True, disk_cache_mb=0, kv_size=2048, ram_cache_mb=256, kv_idle_cells=0)
    try:
        first, second = conversation(p)
        st = wait_for(p, lambda st: st.ram_states == 1)
        assert st.live_sequences == 0 and st.cache.idle_trims == 1
        res = p.scheduler.generate(second, G)
        assert res.cache_source == "ram" and res.cached_tokens >= len(first)
        assert res.token_ids == reference(second)
        wait_for(p, lambda st: st.live_sequences == 0)
        short = p.tokenize(chatml("Hi."))
        assert len(short) + 2 < SAVE_MIN_TOKENS
        two = SamplingParams(temperature=0, max_tokens=2)
        reply = p.scheduler.generate(short, two)
        time.sleep(1.0)
        st = p.scheduler.stats()
        assert st.live_sequences == 1 and st.cache.idle_trims == 2
        assert p.scheduler.generate(short + reply.token_ids, two).cache_source == "live"
    finally:
        p.close(save=False)


def test_a_short_fork_of_a_shared_prefix_moves_after_the_next_forks_first_token():
    """Two questions about one long prefix: the first question's idle fork adds a few cells to the prefix the
    second one shares, so it is moved out after the second one's first token, not before it (saving it would
    copy the whole prefix while the user waits)."""
    p = parley.load(deterministic=True, disk_cache_mb=0, kv_size=2048, ram_cache_mb=256, kv_idle_cells=0)
    try:
        doc = "The ship's log records wind, course, depth and every harbour reached. " * 24

        def ask(q: str) -> list[int]:
            return p.tokenize(chatml(f"{doc}\n\n{q}"))

        p.scheduler.generate(ask("Which harbour?"), SamplingParams(temperature=0, max_tokens=24))
        trims = p.scheduler.cache.counters
        at_first: list[int] = []
        done = threading.Event()

        def sink(event) -> None:  # the scheduler thread, where the cache's counters live
            if isinstance(event, Chunk) and not at_first:
                at_first.append(trims.idle_trims)
            if isinstance(event, Result):
                done.set()

        req = p.scheduler.submit(ask("What depth?"), G, sink)
        assert done.wait(60) and req is not None
        assert at_first == [0]                         # nothing moved before the first token
        st = p.scheduler.stats()
        assert st.cache.idle_trims >= 1                # but on a later step, while it decoded
        assert st.cache.hits_live >= 1 and st.live_sequences == 1
    finally:
        p.close(save=False)


def test_a_forked_prefix_is_re_placed_once_its_source_moved_out_and_continues_exactly():
    """A new conversation forks the system prompt of an idle one; the idle one moves to RAM as the new one
    places its first cells, and the fork's cells, which sat where the idle one's were, are copied out and back
    in to land low. The reply is token for token a cold run's."""
    p = parley.load(deterministic=True, disk_cache_mb=0, kv_size=2048, ram_cache_mb=256, kv_idle_cells=0)
    try:
        first, _ = conversation(p)
        other = p.tokenize(chatml("Which stars guide us?", SYSTEM))
        assert other[:32] == first[:32]
        res = p.scheduler.generate(other, G)
        st = p.scheduler.stats()
        assert res.cache_source == "live" and res.cached_tokens >= 32
        assert st.cache.compactions == 1 and st.cache.idle_trims >= 1
        assert res.token_ids == reference(other)
    finally:
        p.close(save=False)


def test_no_store_means_idle_conversations_stay():
    p = parley.load(disk_cache_mb=0, kv_size=2048, ram_cache_mb=0, kv_idle_cells=0)
    try:
        first, second = conversation(p)
        p.scheduler.generate(p.tokenize(chatml("Count to three.")), G)
        assert p.scheduler.stats().cache.idle_trims == 0  # nowhere to keep them: not thrown away
        assert p.scheduler.generate(second, G).cache_source == "live"
    finally:
        p.close(save=False)


RESTART = textwrap.dedent("""
    import json, sys
    import parley
    from parley.sampling import SamplingParams
    p = parley.load(deterministic=True, home=str(sys.argv[1]), kv_size=2048)
    tokens = json.loads(sys.argv[2])
    r = p.scheduler.generate(tokens, SamplingParams(temperature=0, max_tokens=16))
    print(json.dumps({"source": r.cache_source, "cached": r.cached_tokens, "ids": r.token_ids,
                      "note": r.cache_note, "corrupt": p.scheduler.stats().corrupt_cache_files}))
    p.close()
""")


def run_process(cache_dir, tokens) -> dict:
    import json

    out = subprocess.run([sys.executable, "-c", RESTART, str(cache_dir), json.dumps(tokens)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_restart_restores_from_disk_and_rejects_corruption(tmp_path, det):
    first = det.tokenize(chatml("Where are we sailing?", SYSTEM))
    one = run_process(tmp_path, first)  # process 1: turn 1, then exits (saving its KV)
    assert one["source"] == "none"
    second = first + one["ids"] + det.tokenize("<|im_end|>\n<|im_start|>user\nAnd then?<|im_end|>\n<|im_start|>assistant\n")
    files = list(tmp_path.glob("kv/*/*.kv"))
    assert len(files) == 1
    saved = files[0].read_bytes()

    two = run_process(tmp_path, second)  # process 2: a new process finds turn 1 on disk
    assert two["source"] == "disk" and two["cached"] >= len(first)
    expected = reference(second)
    assert two["ids"] == expected

    for f in tmp_path.glob("kv/*/*.kv"):  # put back turn 1's file, with one payload byte flipped
        f.unlink()
    bad = bytearray(saved)
    bad[-100] ^= 0x55
    files[0].write_bytes(bytes(bad))
    three = run_process(tmp_path, second)
    assert three["source"] == "none" and three["corrupt"] == 1 and "failed its checks" in three["note"]
    assert three["ids"] == expected  # recomputed, same answer
    assert not files[0].exists() or files[0].read_bytes() != bytes(bad)


def test_a_state_llama_cpp_refuses_is_reported_as_refused(tmp_path, det):
    """Issue 8 item 9: a state file that passes its checks but that llama.cpp cannot read (here: its payload cut
    in half, under a checksum that matches) was reported as "no free KV cells" while cells were free. Now the
    note says llama.cpp refused it, the state is dropped, and the prompt is recomputed to the same answer."""
    from parley.scheduler.kv_store import model_fingerprint, read_state_file, write_state_file

    first = det.tokenize(chatml("Where are we sailing?", SYSTEM))
    p = parley.load(deterministic=True, home=str(tmp_path), kv_size=2048, ram_cache_mb=0)
    try:
        r1 = p.scheduler.generate(first, G)
    finally:
        p.close()  # turn 1 goes to disk
    second = first + r1.token_ids + det.tokenize("<|im_end|>\n<|im_start|>user\nAnd then?<|im_end|>\n<|im_start|>assistant\n")
    [path] = tmp_path.glob("kv/*/*.kv")
    model_hash = model_fingerprint(det.engine.model_path, tmp_path)
    tokens, payload = read_state_file(path, model_hash)
    write_state_file(path, model_hash, tokens, payload[: len(payload) // 2])
    p = parley.load(deterministic=True, home=str(tmp_path), kv_size=2048, ram_cache_mb=0)
    try:
        res = p.scheduler.generate(second, G)
        assert res.cache_source == "none" and "refused" in res.cache_note and "free KV cells" not in res.cache_note
        st = p.scheduler.stats()
        assert st.cache.restore_failures == 1 and st.disk_states == 0
    finally:
        p.close(save=False)
    assert res.token_ids == reference(second)


def test_large_buffers_are_mapped_so_freed_states_return_their_memory():
    """On glibc the KV store fixes malloc's mmap threshold (scheduler/heap.py), so freed multi-MB states leave
    the process even when small allocations sit between them (without it, glibc's raised threshold puts them in
    the heap, where ~8 MB of these 32 stayed). In a fresh process, RSS read from /proc."""
    import platform

    import pytest

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    script = textwrap.dedent("""
        from parley.scheduler.heap import map_large_buffers
        assert map_large_buffers()
        def rss_kb():
            with open("/proc/self/status") as f:
                return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        for _ in range(3):   # what raises glibc's dynamic mmap threshold to 8 MB
            b = bytearray(8 << 20)
            del b
        before = rss_kb()
        big, small = [], []
        for _ in range(4):
            big.append(bytearray(b"\\x01" * (8 << 20)))
            small.append(bytearray(b"\\x02" * 200_000))
        grew = rss_kb() - before
        del big
        print(grew, rss_kb() - before)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    grew, kept = (int(x) for x in out.stdout.split())
    assert grew > 30_000 and kept < 4_000, (grew, kept)
