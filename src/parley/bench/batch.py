"""batch: how much llama.cpp itself gains from decoding 8 sequences in one batch, the ceiling of `concurrent`.

The bare engine (no scheduler, no HTTP) reads one short prompt into 8 sequences and decodes greedily, 1 sequence
per call vs all 8 per call; then parley's scheduler runs the same as 1 stream vs 8 streams in this process. The
same engine measurement is repeated on copies of the model requantized to Q8_0 and Q4_0 (`llama_model_quantize`,
written to this run's temporary directory): llama.cpp has batched (GEMM) or repacked x86 kernels for those types
and none for Q4_1, which is what the embedded model uses. The copies change the model's outputs, so parley does not
use them; they show where the ceiling comes from. Ratios are medians of interleaved, paired repetitions.
"""

from __future__ import annotations

import ctypes
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from parley.bench.common import BenchContext, Row, ScenarioResult, median, settle
from parley.bench.content import story_tokens

WHAT = "decode tok/s of 8 sequences in one batch vs 1: the bare engine (also on Q8_0/Q4_0 copies) and the scheduler"
N = 8


@dataclass(frozen=True)
class Sizes:
    gen: int
    reps: int


FULL = Sizes(gen=128, reps=3)
QUICK = Sizes(gen=48, reps=2)


def requantize(src: Path, dst: Path, ftype: str) -> Path:
    import llama_cpp as llc

    p = llc.llama_model_quantize_default_params()
    p.ftype = getattr(llc, f"LLAMA_FTYPE_MOSTLY_{ftype}")
    p.allow_requantize = True
    if llc.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(p)) != 0:
        raise RuntimeError(f"llama_model_quantize to {ftype} failed")
    return dst


def engine_tps(engine, prompt: list[int], n_seqs: int, gen: int) -> float:
    """Decode tok/s of `n_seqs` sequences stepping together (one llama_decode per step), greedy."""
    from parley.sampling import SamplingParams

    seqs = list(range(n_seqs))
    for s in seqs:
        engine.kv_remove(s)
        engine.decode(prompt, list(range(len(prompt))), [s] * len(prompt), [False] * (len(prompt) - 1) + [True])
    samplers = [engine.make_sampler(SamplingParams(temperature=0, repeat_penalty=1.0, ignore_eos=True))
                for _ in seqs]
    nxt = [engine.sample(samplers[0], len(prompt) - 1)] * n_seqs  # the same prompt: the same first token
    settle()
    t0 = time.perf_counter()
    for k in range(gen):
        engine.decode(nxt, [len(prompt) + k] * n_seqs, seqs, [True] * n_seqs)
        nxt = [engine.sample(samplers[i], i) for i in range(n_seqs)]
    dt = time.perf_counter() - t0
    for s, smp in zip(seqs, samplers, strict=True):
        smp.close()
        engine.kv_remove(s)
    return n_seqs * gen / dt


def scheduler_tps(parley, prompts: list[list[int]], gen: int) -> float:
    """Aggregate decode tok/s of len(prompts) streams submitted at once to parley's scheduler."""
    from parley.bench.common import greedy

    sched = parley.scheduler
    sched.drop_cached(save=False)
    settle()
    params = greedy(gen).replace(ignore_eos=True)
    streams = [sched.stream(p, params) for p in prompts]
    results = [s.wait() for s in streams]
    first = min(r.ttft_s for r in results)   # from each request's arrival; all arrived together
    last = max(r.total_s for r in results)
    return sum(r.generated_tokens - 1 for r in results) / (last - first)


def _catch(failed: list, fn, *args) -> None:
    try:
        fn(*args)
    except BaseException as e:  # re-raised on the bench's thread
        failed.append(e)


def run(ctx: BenchContext) -> ScenarioResult:
    from parley.api import Parley
    from parley.engine.llamacpp import EngineConfig, LlamaCppEngine

    sz = QUICK if ctx.quick else FULL
    res = ScenarioResult("batch", WHAT, config={"sequences": N, "generated_tokens": sz.gen, "repetitions": sz.reps,
                                                 "threads": ctx.threads})
    copies = {"Q8_0": requantize(ctx.model, ctx.home / "model-q8_0.gguf", "Q8_0"),
              "Q4_0": requantize(ctx.model, ctx.home / "model-q4_0.gguf", "Q4_0")}
    files = {"model": ctx.model, **copies}
    tps: dict[str, list[float]] = {}
    def measure(name: str, path: Path) -> None:
        engine = LlamaCppEngine(EngineConfig(model_path=path, n_ctx=4096, n_threads=ctx.threads))
        try:
            prompt = story_tokens(ctx.seed, 32, lambda s: engine.tokenize(s, add_bos=False))
            engine_tps(engine, prompt, 1, 8)  # warm-up
            for i in range(sz.reps):
                for n in ((1, N) if i % 2 == 0 else (N, 1)):
                    tps.setdefault(f"{name}/{n}", []).append(engine_tps(engine, prompt, n, sz.gen))
            ctx.log(f"batch: {name} engine: 1 sequence {median(tps[f'{name}/1']):.1f} tok/s, {N} sequences "
                    f"{median(tps[f'{name}/{N}']):.1f} tok/s")
        finally:
            engine.close()

    for name, path in files.items():
        # Each engine on a thread of its own that then exits: llama.cpp's OpenMP team belongs to the calling
        # thread, and a second live team in the process (this one, beside the scheduler's) halved the
        # scheduler's speed here. parley itself drives its engine from one thread only.
        failed: list[BaseException] = []
        t = threading.Thread(target=_catch, args=(failed, measure, name, path))
        t.start()
        t.join()
        if failed:
            raise failed[0]
    parley = Parley(ctx.model, threads=ctx.threads, kv_size=4096, disk_cache_mb=0, ram_cache_mb=0)
    try:
        tok = parley.engine.tokenize
        prompts = [story_tokens(ctx.seed + i, 32, lambda s: tok(s, add_bos=False)) for i in range(N)]
        scheduler_tps(parley, prompts[:1], 8)  # warm-up
        for i in range(sz.reps):
            for n in ((1, N) if i % 2 == 0 else (N, 1)):
                tps.setdefault(f"scheduler/{n}", []).append(scheduler_tps(parley, prompts[:n], sz.gen))
        ctx.log(f"batch: scheduler: 1 stream {median(tps['scheduler/1']):.1f} tok/s, {N} streams "
                f"{median(tps[f'scheduler/{N}']):.1f} tok/s")
    finally:
        parley.close(save=False)
    res.data["decode_tps"] = tps

    def row(name: str, what: str, note: str = "") -> Row:
        many, one = tps[f"{name}/{N}"], tps[f"{name}/1"]
        return Row(f"decode tok/s, {N} sequences in one batch, {what}", "tok/s", median(many), "1 sequence",
                   median(one), pairs=list(zip(many, one, strict=True)), note=note)

    res.rows = [
        row("model", f"bare engine, {ctx.model.name}", note="the ceiling of the concurrent scenario"),
        row("scheduler", "parley's scheduler (in process)"),
        row("Q8_0", "bare engine, Q8_0 copy", note="llama.cpp's GEMM kernels; outputs differ from the model's"),
        row("Q4_0", "bare engine, Q4_0 copy", note="repacked kernels; outputs differ from the model's"),
        Row("decode tok/s, 1 sequence, Q4_0 copy", "tok/s", median(tps["Q4_0/1"]), f"1 sequence, {ctx.model.name}",
            median(tps["model/1"]), pairs=list(zip(tps["Q4_0/1"], tps["model/1"], strict=True))),
    ]
    return res
