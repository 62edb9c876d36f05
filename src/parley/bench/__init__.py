"""`parley bench`: parley against its baselines, measured in the same run on the same model and threads.

Scenarios (each a module with run(ctx) -> ScenarioResult, and FULL / QUICK sizes):
    decode      prefill and decode tok/s vs llama-cpp-python's Llama (issue #2)
    multiturn   TTFT per turn of a 10-turn chat with a 1,500-token persona vs re-prefill and Llama's prompt cache
    sessions    16 conversations in random order, KV room for 4: TTFT of a returning conversation
    concurrent  8 HTTP clients at once: aggregate tok/s and p50/p95 TTFT vs one stream and llama_cpp.server
    restart     the same conversation after a process restart (disk KV cache) vs re-prefill
    roleplay    a 40-turn transcript persona chat, 10-message window: tokens prefilled and TTFT vs the model card's
                recipe re-prefilled and sent to Llama's prompt cache
    resume      16 stored conversations resumed in a new process (KV from disk) vs re-prefill; the store per turn
    docqa       questions about a 6,000-token document, before and after a restart (KV from disk) vs re-prefill and
                Llama's prompt cache; side by side vs one after another; the document's KV held once
    threads     decode tok/s of the default thread setting vs fixed counts, quiet and with a core taken
    idle        decode tok/s while idle conversations fill the context, with and without the idle-cell cap
    batch       what llama.cpp gains from 8 sequences in one batch (the ceiling of concurrent), also on Q8_0/Q4_0
    soak        a live `parley serve` under mixed traffic for a bounded time: errors by kind, RSS, p95 TTFT
    models      several models in one process: first token loaded / unloaded / restored, a q8_0 copy's size and
                speed, a second model's stream beside the first
    constrained decode tok/s under a JSON schema vs unconstrained (and the constraint's compile, cold vs cached);
                n=4 choices of one prompt vs four requests; a 5-round tool loop's prefilled tokens vs re-reading
    peer        parley serve vs llama.cpp's own llama-server (built once from the vendored llama.cpp), both up,
                alternating: one stream, a cold prompt, multi-turn, rotating conversations, 8 clients, a restart
    speculate   decode tok/s with n-gram drafts from the context vs without: refactor, quote, story, chat on the
                embedded Q4_1 model and a Q8_0 copy
    upstream    parley serve --upstream in front of llama-server vs calling it directly, alternating: one stream,
                8 clients, a first token, a returning chat's prompt share cached upstream
    cluster     parley's engine replicas on a local Ray Serve cluster: a returning conversation's TTFT with the
                affinity router vs Ray's default one; 2 replicas vs 1 on the same cores (needs parley[cluster])
Baselines: (a) naive re-prefill of the whole history on the same engine, (b) llama-cpp-python's Llama with its
prompt cache, (c) llama-cpp-python's OpenAI server. See bench/README.md for what each one does exactly.
Timings live here only; the tests check the output's shape, never a speed.
"""

from __future__ import annotations

import importlib
import os
import traceback

from parley.bench.common import BenchContext, OtherLoad, ScenarioResult, loadavg, now
from parley.engine.llamacpp import default_threads

SCENARIOS = ("decode", "multiturn", "sessions", "concurrent", "restart",
             "roleplay", "resume", "docqa", "threads", "idle", "batch", "soak", "models",
             "constrained", "peer", "speculate", "upstream", "cluster")
NOISY_CORES = 0.25   # other processes' average use above which a scenario's timings get a warning


def noise_note(busy: float | None, threads: int, when: str) -> str | None:
    """A warning when other processes took enough CPU to distort the timings (None when they did not)."""
    if busy is None or busy <= NOISY_CORES:
        return None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        cores = os.cpu_count() or 1
    text = f"other processes kept {busy:.2f} of {cores} cores busy {when}, so these timings are lower and noisier"
    if threads + busy > cores and threads > 1:
        return (text + f": with {threads} threads, llama.cpp's spin-waiting OpenMP threads lose most of their "
                "speed when a core is taken. Rerun on a quiet machine, with --threads 1, or with "
                "OMP_WAIT_POLICY=passive.")
    return text + " than on a quiet machine."


def resolve_model(model: str | None):
    """The GGUF file a run measures (the embedded model when None); errors name the path."""
    from parley.engine.model_path import resolve_model_path
    return resolve_model_path(model)


def model_info(path) -> dict:
    from parley.engine.gguf import read_metadata
    from parley.engine.model_path import model_display_name
    return {"path": str(path), "name": model_display_name(path, read_metadata(path)), "bytes": path.stat().st_size}


def scenario_module(name: str):
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}, all")
    return importlib.import_module(f"parley.bench.{name}")


def run_scenario(name: str, ctx: BenchContext) -> ScenarioResult:
    """Run one scenario; a failure becomes a result with `error` set (the other scenarios still run)."""
    mod = scenario_module(name)
    ctx.log(f"{name}: {mod.WHAT} ({'quick' if ctx.quick else 'full'} run)")
    t0 = now()
    before = loadavg()
    other = OtherLoad()
    try:
        res = mod.run(ctx)
    except Exception as e:
        ctx.log(f"{name}: failed: {e!r}")
        res = ScenarioResult(name, mod.WHAT, error=f"{type(e).__name__}: {e}")
        res.data["traceback"] = traceback.format_exc()
    res.seconds = now() - t0
    busy = other.cores()
    res.data["loadavg_before"] = before
    res.data["loadavg_after"] = loadavg()
    res.data["other_processes_cores"] = busy
    note = noise_note(busy, ctx.threads, "during this scenario")
    if note:
        res.notes.append(note)
    ctx.log(f"{name}: done in {res.seconds:.1f} s")
    return res


__all__ = ["SCENARIOS", "BenchContext", "ScenarioResult", "default_threads", "model_info", "resolve_model",
           "run_scenario", "scenario_module"]
