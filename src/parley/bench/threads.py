"""threads: decode tok/s of parley's default thread setting (the governor) against fixed thread counts, on a
quiet machine and while another process holds a core (issue #2: the default must not collapse under load).

One engine reads the same prompt and generates greedily under three settings, switched between runs with
`Scheduler.set_threads`: 0 (the default: every core, fewer while another process competes; its governor keeps
what it learnt from run to run, as in a long-running server), every core fixed, and 1 thread fixed. Each runs quiet and while this bench keeps one core busy with a
spinning child process. Medians over interleaved repetitions. (Three engines in one process would disturb each
other's OpenMP teams; one engine is also what a user runs.)
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

from parley.bench.common import (
    BenchContext,
    Row,
    ScenarioResult,
    Timed,
    drop_idle,
    greedy,
    median,
    rotate,
    settle,
    timed_parley,
)
from parley.bench.content import story_tokens
from parley.engine.llamacpp import default_threads

WHAT = "decode tok/s of the default (thread governor) vs fixed thread counts, quiet and with a core taken"


@dataclass(frozen=True)
class Sizes:
    prompt: int
    gen: int
    reps: int


FULL = Sizes(prompt=128, gen=256, reps=3)
QUICK = Sizes(prompt=128, gen=128, reps=2)

SPIN = "import time\nwhile True:\n    pass\n"


def run(ctx: BenchContext) -> ScenarioResult:
    from parley.api import Parley

    sz = QUICK if ctx.quick else FULL
    cores = default_threads()
    res = ScenarioResult("threads", WHAT, config={"prompt_tokens": sz.prompt, "generated_tokens": sz.gen,
                                                    "repetitions": sz.reps, "cores": cores})
    if cores < 2:
        res.notes.append("one usable core: there is nothing for the governor to choose")
        return res
    settings = {"auto": 0, "all cores": cores, "1 thread": 1}
    parley = Parley(ctx.model, threads=0, kv_size=1024, disk_cache_mb=0, ram_cache_mb=0)
    sched = parley.scheduler
    runs: dict[tuple[str, str], list[Timed]] = {}
    switches: dict[str, int] = {}
    try:
        tok = parley.engine.tokenize
        prompt = story_tokens(ctx.seed, sz.prompt, lambda s: tok(s, add_bos=False))
        timed_parley(sched, prompt, greedy(8))  # warm-up
        drop_idle(sched)
        for load in ("quiet", "one core taken"):
            spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if load != "quiet" else None
            try:
                for i in range(sz.reps):
                    for name in rotate(list(settings), i):
                        sched.set_threads(settings[name])
                        settle()
                        t = timed_parley(sched, prompt, greedy(sz.gen))
                        drop_idle(sched)
                        runs.setdefault((load, name), []).append(t)
                        if name == "auto":
                            switches[load] = parley.engine.governor.switches
                    ctx.log(f"threads: {load}, repetition {i + 1}/{sz.reps}: " + ", ".join(
                        f"{n} {runs[(load, n)][-1].decode_tps:.1f} tok/s" for n in settings))
            finally:
                if spinner is not None:
                    spinner.kill()
                    spinner.wait()
        res.data["governor_switches"] = switches
    finally:
        parley.close(save=False)

    med = {f"{load}/{name}": median([t.decode_tps for t in v]) for (load, name), v in runs.items()}
    res.data["median_decode_tps"] = med
    res.data["runs"] = {f"{load}/{name}": [t.as_dict() for t in v] for (load, name), v in runs.items()}

    def row(metric: str, load: str, base: str, **kw) -> Row:
        pairs = [(a.decode_tps, b.decode_tps) for a, b in zip(runs[(load, "auto")], runs[(load, base)], strict=True)]
        return Row(metric, "tok/s", med[f"{load}/auto"], f"{base} fixed", med[f"{load}/{base}"], pairs=pairs, **kw)

    res.rows = [
        row("decode tok/s, default threads, quiet", "quiet", "all cores", target=0.9,
            note="the governor's probes cost little when nothing competes"),
        row("decode tok/s, default threads, quiet", "quiet", "1 thread"),
        row("decode tok/s, default threads, one core taken", "one core taken", "all cores", target=1.0, strict=True,
            note="spinning threads slow down (1.5-10x measured here) when a core is taken; the default must not"),
        row("decode tok/s, default threads, one core taken", "one core taken", "1 thread", target=0.8),
        Row("decode tok/s, default threads, one core taken", "tok/s", med["one core taken/auto"],
            "default threads, quiet", med["quiet/auto"], target=0.5, note="does not collapse (keeps at least half its quiet speed)",
            pairs=[(a.decode_tps, b.decode_tps)
                   for a, b in zip(runs[("one core taken", "auto")], runs[("quiet", "auto")], strict=True)]),
    ]
    return res
