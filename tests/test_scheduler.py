"""The scheduler with the real model: continuous batching, cancellation, budgets, pinned prefixes."""

from __future__ import annotations

import threading
import time

import numpy as np

import parley
from parley.sampling import SamplingParams
from parley.scheduler.prefix_index import common_prefix
from tests.conftest import chatml

GREEDY = SamplingParams(temperature=0, max_tokens=24)


def test_eight_concurrent_conversations_match_alone(det):
    eng, sched = det.engine, det.scheduler
    system = "You are a patient maths teacher. " * 12  # a shared prefix worth sharing (> 64 tokens)
    prompts = [eng.tokenize(chatml(f"Give me one fact about the number {i}.", system)) for i in range(8)]
    alone = []
    for p in prompts:
        alone.append(sched.generate(p, GREEDY).token_ids)
        sched.drop_cached(save=False)  # nothing cached between
    streams = [sched.stream(p, GREEDY) for p in prompts]
    together = [s.wait() for s in streams]
    assert [r.token_ids for r in together] == alone
    assert sum(1 for r in together if r.cached_tokens >= 64) == 7  # all but the first forked the system prompt


def test_batching_overlaps_requests(det):
    """Requests submitted together are decoded in shared steps, not one after another."""
    eng, sched = det.engine, det.scheduler
    before = sched.stats()
    prompts = [eng.tokenize(chatml(f"Say a word about {w}.")) for w in ("rain", "snow", "wind", "sun")]
    results = [s.wait() for s in [sched.stream(p, SamplingParams(temperature=0, max_tokens=16)) for p in prompts]]
    after = sched.stats()
    generated = sum(r.generated_tokens for r in results)
    calls = after.totals.decode_calls - before.totals.decode_calls
    assert calls < generated  # several requests shared each decode call


def test_cancel_mid_stream_frees_the_sequence(det):
    sched = det.scheduler
    prompt = det.engine.tokenize(chatml("Write a very long story about a lighthouse keeper."))
    stream = sched.stream(prompt, SamplingParams(temperature=0.7, max_tokens=400, seed=1))
    got = 0
    for _ in stream:
        got += 1
        if got == 3:
            stream.cancel()
    res = stream.result
    assert res.finish_reason == "cancelled"
    assert res.generated_tokens < 50  # stopped within a step or two, not at max_tokens
    stats = sched.stats()
    assert stats.running == 0
    assert stats.busy_sequences == 0 and stats.live_sequences > 0  # its sequence stays cached, owned by no one


def test_leaving_a_stream_cancels(det):
    sched = det.scheduler
    prompt = det.engine.tokenize(chatml("List every country you know."))
    stream = sched.stream(prompt, SamplingParams(temperature=0.7, max_tokens=400, seed=2))
    for _ in stream:
        break  # the consumer walks away (a closed connection, Ctrl-C)
    deadline = time.time() + 10
    while sched.stats().running and time.time() < deadline:
        time.sleep(0.05)
    assert sched.stats().running == 0


def test_budgets_are_never_exceeded(tmp_path):
    """A small KV budget, RAM tier and disk tier under 12 conversations: every budget holds at every step."""
    p = parley.load(deterministic=False, kv_size=640, ram_cache_mb=4, disk_cache_mb=12, home=str(tmp_path))
    try:
        sched = p.scheduler
        seen = []
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                seen.append(sched.stats())
                time.sleep(0.01)

        w = threading.Thread(target=watch)
        w.start()
        chats = [p.chat(system=f"You are assistant number {i}.", temperature=0, max_tokens=24) for i in range(12)]
        for rnd in range(2):
            for c in chats:
                c.ask(f"Round {rnd}: say hello.")
        stop.set()
        w.join()
        seen.append(sched.stats())
        assert seen and all(s.kv_cells_used <= s.kv_cells_budget for s in seen)
        assert all(s.ram_bytes <= 4 << 20 for s in seen)
        assert all(s.disk_bytes <= 12 << 20 for s in seen)
        final = seen[-1]
        assert final.cache.evictions > 0 and final.cache.saved_states > 0
        assert final.cache.hits_ram + final.cache.hits_disk > 0
        on_disk = sum(f.stat().st_size for f in tmp_path.glob("kv/*/*.kv"))
        assert on_disk <= 12 << 20
    finally:
        p.close(save=False)


def test_request_larger_than_kv_budget_fails_clearly(tmp_path):
    """With most cells pinned, a request that cannot fit gets an error naming the budget; nothing hangs."""
    p = parley.load(kv_size=512, disk_cache_mb=0)
    try:
        eng, sched = p.engine, p.scheduler
        sched.pin(eng.tokenize("You are a pinned persona. " * 60)[:400])
        res = sched.generate(eng.tokenize(chatml("hi " * 100)), SamplingParams(max_tokens=100))
        assert res.finish_reason == "error" and "KV budget" in res.error
        small = sched.generate(eng.tokenize(chatml("hi")), SamplingParams(max_tokens=4))
        assert small.finish_reason in ("stop", "length")  # the engine still works
    finally:
        p.close(save=False)


def test_pinned_prefix_survives_pressure(tmp_path):
    p = parley.load(kv_size=700, ram_cache_mb=64, disk_cache_mb=0)
    try:
        eng, sched = p.engine, p.scheduler
        persona = "You are Captain Nemo. " + "You love the sea and its creatures. " * 25
        prefix = eng.tokenize(f"<|im_start|>system\n{persona}<|im_end|>\n")
        handle, _ = sched.pin(prefix)
        assert handle.pins == 1 and handle.tokens == prefix
        for i in range(10):  # other conversations push every unpinned sequence out
            sched.generate(eng.tokenize(chatml(f"Question {i}: what is {i} plus {i}? " * 6)),
                           SamplingParams(temperature=0, max_tokens=16))
        st = sched.stats()
        assert st.pinned_sequences == 1 and st.cache.evictions > 0  # still live: the others were evicted, not it
        res = sched.generate(prefix + eng.tokenize("<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n"),
                             SamplingParams(temperature=0, max_tokens=8))
        assert res.cached_tokens >= len(prefix) and res.cache_source == "live"
        sched.unpin(handle)
        assert handle.pins == 0
    finally:
        p.close(save=False)


def test_queue_and_prompt_limits(det):
    import pytest

    from parley.errors import InvalidRequest, LimitExceeded

    with pytest.raises(LimitExceeded, match="too many"):
        det.scheduler.submit([1] * (det.context_size + 5), GREEDY, lambda ev: None)
    with pytest.raises(InvalidRequest, match="empty"):
        det.scheduler.submit([], GREEDY, lambda ev: None)


def record_logits(engine) -> tuple[dict, list[int]]:
    """Watch the real engine: the logits every sampler drew from (by sampler) and the size of every decode call."""
    rows: dict = {}
    sizes: list[int] = []
    sample, decode = engine.sample, engine.decode

    def sampling(sampler, i):
        rows.setdefault(sampler, []).append(engine.logits(i))
        return sample(sampler, i)

    def decoding(tokens, *rest):
        sizes.append(len(tokens))
        return decode(tokens, *rest)

    engine.sample, engine.decode = sampling, decoding
    return rows, sizes


def test_deterministic_request_joining_seven_running_streams_matches_its_lone_run():
    """Issue 8 item 8. A request joining 7 decoding streams is read in the same batch as their 7 tokens: with
    57 prompt tokens left that is 64 tokens, which llama.cpp cuts into ubatches of 63 + 1. The lone last query
    (the one whose logits give the first token) took the KV-split attention path over 512+ cells, whose two
    per-thread partial sums depend on where the sequence's cells fall (its forked header sits low, its own cells
    high): its logits, and then its tokens, drifted from the lone run. Same with 120 left (63 + 63 + 1)."""
    p = parley.load(deterministic=True, disk_cache_mb=0, kv_size=1024, threads=2)  # 2 threads: 2 partial sums
    try:
        eng, sched = p.engine, p.scheduler
        rows, sizes = record_logits(eng)
        stories = [eng.tokenize(chatml(f"Write a long story about dragon number {i}.")) for i in range(7)]
        text = eng.tokenize(chatml("Tell me about the history of bread, with examples from many countries. " * 12))
        shared = max(common_prefix(text, s) for s in stories)  # the chat header, forked from a story
        for left in (57, 120):
            prompt = text[:shared + left - 5] + text[-5:]  # keeps the closing "assistant\n" header
            sched.drop_cached(save=False)
            alone = sched.stream(prompt, GREEDY)
            alone_ids = alone.wait().token_ids
            sched.drop_cached(save=False)
            running = [sched.stream(s, SamplingParams(temperature=0, max_tokens=100, ignore_eos=True))
                       for s in stories]
            while sched.stats().kv_cells_used < 260 - left:  # enough cells that the lone query's view is 512+
                time.sleep(0.01)
            sizes.clear()
            joined = sched.stream(prompt, GREEDY)
            joined_ids = joined.wait().token_ids
            for s in running:
                s.cancel()
            assert [s.wait().finish_reason for s in running] == ["cancelled"] * 7  # all 7 ran beside it
            assert joined.result.cached_tokens == shared and 7 + left in sizes  # the split really happened
            assert joined_ids == alone_ids
            first_alone, first_joined = rows[alone.request.sampler][0], rows[joined.request.sampler][0]
            assert np.array_equal(first_alone, first_joined), "first-token logits differ"
    finally:
        p.close(save=False)
