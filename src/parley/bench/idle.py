"""idle: decode speed while many idle conversations are cached, with and without parley's idle-cell cap.

With one unified KV buffer, llama.cpp attends every decoded token over every used cell of the context (the cells
of other sequences are masked, but still scanned), so a server that keeps every finished conversation's KV warm
in the context gets slower for everyone as they pile up. parley keeps at most `--kv-idle-cells` (0) idle
cells in the context while anyone is generating: past that, it moves the idle conversations to the RAM tier (least
recently used first), from where a returning one is restored with a memory copy instead of a re-read.

One Parley (RAM tier on, disk tier off) reads N conversations (each its own prompt) and leaves them idle. Then,
repetition by repetition and in alternating order, two states are measured on the same engine:
  kept   the cap is off (`idle_kv_cells=-1`, what a unified-KV server does) and every conversation is brought
         back into the context (each re-sent: a live takeover, or a restore from RAM);
  moved  the default cap is set and the scheduler moves the idle conversations to RAM while a short request
         decodes.
In each state: decode tok/s of a fresh stream, and TTFT of a returning conversation (its prompt + 16 new tokens:
live in the context when kept, restored from RAM when moved). Ratios are medians of the paired repetitions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from parley.bench.common import (
    BenchContext,
    Row,
    ScenarioResult,
    Timed,
    greedy,
    median,
    rotate,
    settle,
    timed_parley,
)
from parley.bench.content import story_tokens
from parley.scheduler.settings import IDLE_CELLS

WHAT = "decode tok/s while idle conversations fill the context: every idle cell kept vs moved to RAM past the cap"


@dataclass(frozen=True)
class Sizes:
    conversations: int
    conv_tokens: int
    prompt: int
    gen: int
    reps: int


FULL = Sizes(conversations=24, conv_tokens=500, prompt=64, gen=128, reps=5)
QUICK = Sizes(conversations=16, conv_tokens=500, prompt=64, gen=64, reps=3)

CAP = IDLE_CELLS


def run(ctx: BenchContext) -> ScenarioResult:
    from parley.api import Parley

    sz = QUICK if ctx.quick else FULL
    res = ScenarioResult("idle", WHAT, config={
        "conversations": sz.conversations, "tokens_per_conversation": sz.conv_tokens, "prompt_tokens": sz.prompt,
        "generated_tokens": sz.gen, "repetitions": sz.reps, "idle_kv_cells": CAP, "threads": ctx.threads})
    parley = Parley(ctx.model, threads=ctx.threads, kv_size=16384, disk_cache_mb=0, ram_cache_mb=1024,
                    kv_idle_cells=-1)
    sched = parley.scheduler
    tok = parley.engine.tokenize

    def toks(seed: int, n: int) -> list[int]:
        return story_tokens(seed, n, lambda s: tok(s, add_bos=False))

    convs = [toks(ctx.seed + 100 + i, sz.conv_tokens) for i in range(sz.conversations)]
    probe = toks(ctx.seed, sz.prompt)
    decode: dict[str, list[Timed]] = {"kept": [], "moved": []}
    returning: dict[str, list[Timed]] = {"kept": [], "moved": []}
    idle_seen: dict[str, list[int]] = {"kept": [], "moved": []}

    def moving() -> bool:  # the probe that just ran is idle too, until the next request moves it out
        st = sched.stats()
        return st.kv_idle_moving or st.kv_cells_idle > CAP + sz.prompt + 16

    def enter(state: str) -> None:
        if state == "kept":
            sched.tune(kv_idle_cells=-1)
            for c in convs:
                timed_parley(sched, c, greedy(1))
        else:
            sched.tune(kv_idle_cells=CAP)
            while moving():  # moves happen while decoding
                timed_parley(sched, probe, greedy(16))
        idle_seen[state].append(sched.stats().kv_cells_idle)

    try:
        timed_parley(sched, probe, greedy(8))  # warm-up
        t0 = time.perf_counter()
        for c in convs:
            timed_parley(sched, c, greedy(1))
        res.data["fill_seconds"] = round(time.perf_counter() - t0, 2)
        for i in range(sz.reps):
            for state in rotate(["kept", "moved"], i):
                enter(state)
                settle()
                decode[state].append(timed_parley(sched, probe, greedy(sz.gen).replace(ignore_eos=True)))
                j = (i * 7 + (state == "moved")) % sz.conversations
                settle()
                returning[state].append(timed_parley(sched, convs[j] + toks(ctx.seed + 900 + i, 16), greedy(1)))
            ctx.log(f"idle: repetition {i + 1}/{sz.reps}: " + ", ".join(
                f"{s} {idle_seen[s][-1]} idle cells: decode {decode[s][-1].decode_tps:.1f} tok/s, returning TTFT "
                f"{returning[s][-1].ttft_s * 1000:.0f} ms ({returning[s][-1].source})" for s in ("kept", "moved")))
        res.data["idle_cells"] = idle_seen
        res.data["idle_trims"] = sched.stats().cache.idle_trims
    finally:
        parley.close(save=False)

    res.data["runs"] = {f"{kind}/{s}": [t.as_dict() for t in v]
                        for kind, d in (("decode", decode), ("returning", returning)) for s, v in d.items()}
    kept = f"{median(idle_seen['kept']):.0f} idle cells kept"
    res.rows = [
        Row(f"decode tok/s, idle conversations moved to RAM (--kv-idle-cells {CAP})", "tok/s",
            median([t.decode_tps for t in decode["moved"]]), kept, median([t.decode_tps for t in decode["kept"]]),
            pairs=[(a.decode_tps, b.decode_tps) for a, b in zip(decode["moved"], decode["kept"], strict=True)],
            note="every decode scans every cell in use"),
        Row("TTFT, returning conversation: restored from RAM vs live", "ms",
            median([t.ttft_s * 1000 for t in returning["moved"]]), "kept live in the context",
            median([t.ttft_s * 1000 for t in returning["kept"]]), higher_is_better=False,
            pairs=[(a.ttft_s, b.ttft_s) for a, b in zip(returning["moved"], returning["kept"], strict=True)],
            note="the cap's price, paid once when a conversation returns"),
    ]
    return res
