"""idle: decode speed while many idle conversations are cached, with and without parley's idle-cell cap.

With one unified KV buffer, llama.cpp attends every decoded token over every used cell of the context (the cells
of other sequences are masked, but still scanned), so a server that keeps every finished conversation's KV warm
in the context gets slower for everyone as they pile up. parley keeps at most `--kv-idle-cells` (2048) idle
cells in the context while anyone is generating: past that, it moves the idle conversations to the RAM tier (least
recently used first), from where a returning one is restored with a memory copy instead of a re-read.

One Parley (RAM tier on, disk tier off) measures, in this order: decode tok/s of a fresh stream on an empty
cache; N conversations are then read (each its own prompt, left idle in the context) and the same stream is
measured with the cap off (every idle cell kept, what other unified-KV servers do); the cap is then set to the
default, the scheduler trims, and the stream is measured again. TTFT of a returning conversation is measured
in both states (live in the context vs restored from RAM). The states are consecutive, not interleaved
(trimming cannot be undone without re-reading), so these ratios are ratios of medians.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from parley.bench.common import BenchContext, Row, ScenarioResult, Timed, greedy, median, settle, timed_parley
from parley.bench.content import story_tokens
from parley.scheduler.scheduler import SchedulerConfig

WHAT = "decode tok/s while idle conversations fill the context: every idle cell kept vs parley's idle-cell cap"


@dataclass(frozen=True)
class Sizes:
    conversations: int
    conv_tokens: int
    prompt: int
    gen: int
    reps: int


FULL = Sizes(conversations=24, conv_tokens=500, prompt=64, gen=128, reps=3)
QUICK = Sizes(conversations=16, conv_tokens=500, prompt=64, gen=64, reps=2)

CAP = SchedulerConfig().idle_kv_cells


def run(ctx: BenchContext) -> ScenarioResult:
    from parley.api import Parley

    sz = QUICK if ctx.quick else FULL
    res = ScenarioResult("idle", WHAT, config={
        "conversations": sz.conversations, "tokens_per_conversation": sz.conv_tokens, "prompt_tokens": sz.prompt,
        "generated_tokens": sz.gen, "repetitions": sz.reps, "idle_kv_cells": CAP, "threads": ctx.threads})
    parley = Parley(ctx.model, threads=ctx.threads, kv_size=16384, cache_dir=False, ram_cache_mb=1024,
                    idle_kv_cells=-1)
    sched = parley.scheduler
    tok = parley.engine.tokenize

    def toks(seed: int, n: int) -> list[int]:
        return story_tokens(seed, n, lambda s: tok(s, add_bos=False))

    convs = [toks(ctx.seed + 100 + i, sz.conv_tokens) for i in range(sz.conversations)]
    probe = toks(ctx.seed, sz.prompt)
    decode: dict[str, list[Timed]] = {}
    returning: dict[str, list[Timed]] = {}

    def measure(state: str) -> None:
        for _ in range(sz.reps):
            settle()
            decode.setdefault(state, []).append(timed_parley(sched, probe, greedy(sz.gen).replace(ignore_eos=True)))
        ctx.log(f"idle: {state}: decode " + ", ".join(f"{t.decode_tps:.1f}" for t in decode[state]) + " tok/s")

    def come_back(state: str, which: list[int]) -> None:
        for i in which:
            settle()
            t = timed_parley(sched, convs[i] + toks(ctx.seed + 900 + i, 16), greedy(1))
            returning.setdefault(state, []).append(t)
        ctx.log(f"idle: {state}: returning TTFT " + ", ".join(
            f"{t.ttft_s * 1000:.0f} ms ({t.source}, {t.cached_tokens} cached)" for t in returning[state]))

    try:
        timed_parley(sched, probe, greedy(8))  # warm-up
        measure("empty")
        t0 = time.perf_counter()
        for c in convs:
            timed_parley(sched, c, greedy(1))
        res.data["fill_seconds"] = round(time.perf_counter() - t0, 2)
        idle_kept = sched.call(parley.scheduler.cache.idle_cells)
        res.data["idle_cells_kept"] = idle_kept
        measure("kept")
        come_back("kept", list(range(sz.conversations - 1, sz.conversations - 1 - sz.reps, -1)))

        def set_cap():
            sched.config = dataclasses.replace(sched.config, idle_kv_cells=CAP)
        sched.call(set_cap)
        t0 = time.perf_counter()
        while sched.call(parley.scheduler.cache.idle_cells) > CAP:  # trimming happens while something decodes
            timed_parley(sched, probe, greedy(16))
        res.data["trim_seconds"] = round(time.perf_counter() - t0, 2)
        res.data["idle_cells_trimmed"] = sched.call(parley.scheduler.cache.idle_cells)
        res.data["idle_trims"] = sched.stats()["cache_idle_trims"]
        measure("trimmed")
        come_back("trimmed", list(range(sz.reps)))
    finally:
        parley.close(save=False)

    res.data["runs"] = {f"decode/{k}": [t.as_dict() for t in v] for k, v in decode.items()}
    res.data["runs"].update({f"returning/{k}": [t.as_dict() for t in v] for k, v in returning.items()})
    tps = {k: median([t.decode_tps for t in v]) for k, v in decode.items()}
    ttft = {k: median([t.ttft_s * 1000 for t in v]) for k, v in returning.items()}
    kept = f"{idle_kept} idle cells kept"
    res.rows = [
        Row(f"decode tok/s, {idle_kept} idle cells kept in the context", "tok/s", tps["kept"], "empty cache",
            tps["empty"], note="what keeping every conversation in a unified KV buffer costs every stream"),
        Row(f"decode tok/s, idle conversations moved to RAM (--kv-idle-cells {CAP})", "tok/s", tps["trimmed"], kept,
            tps["kept"]),
        Row(f"decode tok/s, idle conversations moved to RAM (--kv-idle-cells {CAP})", "tok/s", tps["trimmed"],
            "empty cache", tps["empty"]),
        Row("TTFT, returning conversation restored from RAM", "ms", ttft["trimmed"], "kept live in the context",
            ttft["kept"], higher_is_better=False, note="the cap's price, paid once when a conversation returns"),
    ]
    return res
