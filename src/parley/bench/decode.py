"""decode: prefill and decode tokens/s of parley beside llama-cpp-python's high-level Llama (issue #2).

Three sides read the same prompt tokens (a ~512-token made-up story, raw text) and generate greedily:
    Llama              Llama.generate(tokens, temp=0), the path create_completion uses, after Llama.reset()
    parley engine      parley's LlamaCppEngine in a bare loop: one decode of the prompt, then decode + sample
                       per token (an engine of its own, built from the scheduler's engine settings, driven
                       from this thread as Llama is: no other thread may drive the scheduler's)
    parley scheduler   Scheduler.stream(tokens, greedy): what the Python API and the server get
Repetitions are interleaved (the order rotates), each on a fresh prompt and an empty KV cache; medians reported.
Prefill tok/s = prompt tokens / time to first token; decode tok/s = (tokens - 1) / (last - first token).
"""

from __future__ import annotations

from dataclasses import dataclass

from parley.bench.common import (
    BenchContext,
    Row,
    ScenarioResult,
    Timed,
    drop_idle,
    greedy,
    make_llama,
    median,
    now,
    rotate,
    settle,
    timed_parley,
)
from parley.bench.content import story_tokens

WHAT = "prefill and decode tokens/s of one stream: parley's engine loop and scheduler vs llama-cpp-python's Llama"


@dataclass(frozen=True)
class Sizes:
    prompt: int       # prompt tokens
    gen: int          # generated tokens per run
    reps: int         # measured repetitions per side (after one warm-up each)


FULL = Sizes(prompt=512, gen=128, reps=7)
QUICK = Sizes(prompt=512, gen=64, reps=3)


def _llama_run(llama, tokens: list[int], n_gen: int) -> Timed:
    llama.reset()
    t0 = now()
    first = None
    n = 0
    for _tok in llama.generate(tokens, temp=0.0, repeat_penalty=1.0, reset=True):
        n += 1
        if first is None:
            first = now()
        if n >= n_gen:
            break
    end = now()
    return Timed(first - t0, end - t0, n, len(tokens))


def _engine_run(engine, tokens: list[int], n_gen: int) -> Timed:
    """The bare engine loop on an engine no scheduler owns, from an empty KV cache."""
    seq = 0
    sampler = engine.make_sampler(greedy(n_gen))
    n = len(tokens)
    try:
        t0 = now()
        for start in range(0, n, engine.n_batch):
            end = min(n, start + engine.n_batch)
            engine.decode(tokens[start:end], range(start, end), [seq] * (end - start),
                          [False] * (end - start - 1) + [end == n])
        tok = engine.sample(sampler, (n - 1) % engine.n_batch)
        first = now()
        pos = n
        for _ in range(n_gen - 1):
            engine.decode((tok,), (pos,), (seq,), (True,))
            pos += 1
            tok = engine.sample(sampler, 0)
        last = now()
    finally:
        sampler.close()
        engine.kv_remove(seq)
    return Timed(first - t0, last - t0, n_gen, n)


def _scheduler_run(scheduler, tokens: list[int], n_gen: int) -> Timed:
    t = timed_parley(scheduler, tokens, greedy(n_gen))
    drop_idle(scheduler)   # the next repetition starts from an empty KV cache, as Llama's does
    return t


def run(ctx: BenchContext) -> ScenarioResult:
    from parley.api import Parley
    from parley.engine.llamacpp import EngineConfig, LlamaCppEngine

    sz = QUICK if ctx.quick else FULL
    n_ctx = 2048 if sz.prompt + sz.gen <= 2048 else sz.prompt + sz.gen
    res = ScenarioResult("decode", WHAT, config={
        "prompt_tokens": sz.prompt, "generated_tokens": sz.gen, "repetitions": sz.reps, "n_ctx": n_ctx,
        "n_batch": 512, "threads": ctx.threads, "flash_attn": True, "sampling": "greedy, no penalties"})
    parley = Parley(ctx.model, threads=ctx.threads, kv_size=n_ctx, disk_cache_mb=0, ram_cache_mb=0,
                    deterministic=ctx.deterministic)
    s = parley.settings
    bare = LlamaCppEngine(EngineConfig.from_settings(s.engine, batch_tokens=s.scheduler.batch_tokens))
    llama = make_llama(ctx, n_ctx)
    try:
        sched = parley.scheduler
        tok = parley.engine.tokenize
        prompts = [story_tokens(ctx.seed + i, sz.prompt, lambda s: tok(s, add_bos=False)) for i in range(sz.reps + 1)]
        sides = {
            "llama": lambda p: _llama_run(llama, p, sz.gen),
            "engine": lambda p: _engine_run(bare, p, sz.gen),
            "scheduler": lambda p: _scheduler_run(sched, p, sz.gen),
        }
        runs: dict[str, list[Timed]] = {k: [] for k in sides}
        for fn in sides.values():   # warm-up (not counted) on its own prompt
            fn(prompts[0])
        for i in range(sz.reps):
            for name in rotate(list(sides), i):
                settle()
                runs[name].append(sides[name](prompts[i + 1]))
            ctx.log(f"decode: repetition {i + 1}/{sz.reps}: " + ", ".join(
                f"{k} {runs[k][-1].decode_tps:.1f} tok/s" for k in sides))
    finally:
        llama.close()
        bare.close()
        parley.close(save=False)

    med = {k: {"prefill_tps": median([t.prefill_tps for t in v]), "decode_tps": median([t.decode_tps for t in v])}
           for k, v in runs.items()}
    short = [t.generated for t in runs["scheduler"] if t.generated < sz.gen]
    if short:
        res.notes.append(f"the scheduler stopped early (end of turn) in {len(short)} runs: {short} tokens")
    res.data = {"median": med, "runs": {k: [t.as_dict() for t in v] for k, v in runs.items()}}
    L = "Llama (llama-cpp-python)"

    def row(metric: str, side: str, base: str, key: str, name: str, **kw) -> Row:
        pairs = [(getattr(a, key), getattr(b, key)) for a, b in zip(runs[side], runs[base], strict=True)]
        return Row(metric, "tok/s", med[side][key], name, med[base][key], pairs=pairs, **kw)

    res.rows = [
        row("prefill tok/s, engine loop", "engine", "llama", "prefill_tps", L),
        row("prefill tok/s, scheduler", "scheduler", "llama", "prefill_tps", L),
        row("decode tok/s, engine loop", "engine", "llama", "decode_tps", L, target=0.95),
        row("decode tok/s, scheduler", "scheduler", "llama", "decode_tps", L, target=0.95),
        row("decode tok/s, scheduler", "scheduler", "engine", "decode_tps", "parley engine loop",
            note="the scheduler's own cost per token"),
    ]
    return res
