"""What every scenario shares: the run context, timed runs seen from the consumer's side, result rows.

Timing is always taken where a user would take it: from the moment a request is handed over (before
submission) to the first text chunk (TTFT) and to the last (total). Decode tokens/s = (tokens - 1) / (last -
first): the first token belongs to the prompt's time.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from parley.sampling import SamplingParams

now = time.perf_counter


@dataclass
class BenchContext:
    """One `parley bench` run: the model and thread count every side uses, and where temporary data goes."""

    model: Path
    threads: int
    quick: bool
    home: Path                       # temporary PARLEY_HOME of this run
    seed: int = 1234
    deterministic: bool = False      # parley's --deterministic (the decode scenario: what it costs)
    log: Callable[[str], None] = lambda msg: print(f"bench: {msg}", file=sys.stderr, flush=True)


SETTLE_S = 0.1   # pause before every timed request, on every side (see settle)


def settle() -> None:
    """Pause before a timed request. Several llama.cpp contexts share this process (and two servers share the
    machine): right after one side's last decode, its threads still spin for a moment and would slow the next
    side's first decode. Users pause between turns; the benchmark pauses the same for every side."""
    time.sleep(SETTLE_S)


# ---- numbers -------------------------------------------------------------------------------------------------
def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else math.nan


def percentile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), as numpy's default."""
    if not xs:
        return math.nan
    s = sorted(xs)
    k = (len(s) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def rotate(items: list, k: int) -> list:
    """items rotated by k: interleaved repetitions run the sides in A, B, C / B, C, A / ... order."""
    k %= len(items)
    return items[k:] + items[:k]


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return []


class OtherLoad:
    """How many cores other processes kept busy between start() and stop(): the machine's busy time
    (/proc/stat) minus this process's and its finished children's (os.times). llama.cpp's OpenMP threads
    spin-wait, so with `threads` = cores, a process holding one core can cut throughput tenfold."""

    def __init__(self):
        self._t0 = now()
        self._busy0 = self._machine_busy()
        self._ours0 = self._ours()

    @staticmethod
    def _machine_busy() -> float | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):  # pragma: no cover - not Linux
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _ours() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def cores(self) -> float | None:
        busy = self._machine_busy()
        if busy is None or self._busy0 is None:
            return None
        elapsed = now() - self._t0
        if elapsed <= 0:
            return None
        return max(0.0, (busy - self._busy0) - (self._ours() - self._ours0)) / elapsed


def other_load_now(seconds: float = 1.0) -> float | None:
    """Cores other processes keep busy right now (sampled over `seconds`)."""
    meter = OtherLoad()
    time.sleep(seconds)
    return meter.cores()


# ---- one timed request ---------------------------------------------------------------------------------------
@dataclass
class Timed:
    ttft_s: float
    total_s: float
    generated: int
    prompt_tokens: int = 0
    cached_tokens: int | None = None
    source: str | None = None        # parley: where the cached prefix came from (live / ram / disk / none)

    @property
    def decode_tps(self) -> float:
        span = self.total_s - self.ttft_s
        return (self.generated - 1) / span if self.generated > 1 and span > 0 else math.nan

    @property
    def prefill_tps(self) -> float:
        return self.prompt_tokens / self.ttft_s if self.ttft_s > 0 else math.nan

    def as_dict(self) -> dict:
        d = asdict(self)
        d["decode_tps"] = _round(self.decode_tps)
        return {k: _round(v) for k, v in d.items()}


def greedy(max_tokens: int, stop: Sequence[str] = ()) -> SamplingParams:
    """Greedy decoding without penalties: the same work as llama-cpp-python's defaults with temperature 0."""
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, repeat_penalty=1.0, stop=tuple(stop))


def timed_parley(scheduler, tokens: Sequence[int], params: SamplingParams) -> Timed:
    """One request through parley's scheduler, timed from before submission to each chunk's arrival."""
    t0 = now()
    return timed_stream(scheduler.stream(tokens, params), t0, "parley request")


def timed_stream(stream, t0: float, what: str) -> Timed:
    """Read a parley Stream (a completion, a reply, an answer) to its end, timed from `t0` to its first token and its end.
    A request that failed raises, naming `what`."""
    first = None
    for chunk in stream:
        if first is None and chunk.token_ids:
            first = now()
    end = now()
    r = stream.result
    if r.finish_reason == "error":
        raise RuntimeError(f"{what} failed: {r.error}")
    # nothing streamed (an immediate end-of-turn): the first token is the end
    return Timed((first or end) - t0, end - t0, r.generated_tokens, r.prompt_tokens, r.cached_tokens,
                 r.cache_source)


def drop_idle(scheduler) -> None:
    """Forget every idle cached sequence (saved to the store first, if the scheduler has one)."""
    scheduler.drop_cached()


# ---- baselines in this process -------------------------------------------------------------------------------
def make_llama(ctx: BenchContext, n_ctx: int):
    """llama-cpp-python's high-level Llama with parley's settings: same file, threads, context, batch, and
    flash attention on (parley leaves it to llama.cpp, which turns it on for this CPU backend; Llama's own
    default would be off)."""
    from llama_cpp import Llama

    return Llama(model_path=str(ctx.model), n_ctx=n_ctx, n_batch=512, n_ubatch=512, n_threads=ctx.threads,
                 n_threads_batch=ctx.threads, flash_attn=True, seed=0, verbose=False)


def timed_llama_completion(llama, tokens: Sequence[int], max_tokens: int) -> Timed:
    """One greedy completion through Llama.create_completion (its prompt cache and live-context reuse apply)."""
    t0 = now()
    first = None
    n = 0
    for chunk in llama.create_completion(list(tokens), max_tokens=max_tokens, temperature=0.0, repeat_penalty=1.0,
                                         stream=True):
        if chunk["choices"][0].get("finish_reason") is None:  # one chunk per token; the last one closes
            n += 1
            if first is None:
                first = now()
    end = now()
    return Timed((first or end) - t0, end - t0, n, len(tokens))


class NaiveRunner:
    """Baseline (a), naive re-prefill: what the notebooks do. A second parley (same engine settings) with no
    RAM or disk tier; before every request its idle sequences are dropped, so each turn reads the whole history
    from scratch on a fresh sequence. Same engine, same scheduler code path: only the reuse is taken away."""

    def __init__(self, ctx: BenchContext, kv_size: int):
        from parley.api import Parley

        self.parley = Parley(ctx.model, threads=ctx.threads, kv_size=kv_size, disk_cache_mb=0, ram_cache_mb=0)

    def run(self, tokens: Sequence[int], params: SamplingParams) -> Timed:
        sched = self.parley.scheduler
        drop_idle(sched)
        t = timed_parley(sched, tokens, params)
        if t.cached_tokens:
            raise RuntimeError(f"the re-prefill baseline reused {t.cached_tokens} cached tokens")
        return t

    def close(self) -> None:
        self.parley.close(save=False)


def warm_up_parley(parley) -> None:
    """One short request so first-call allocations are not measured."""
    parley.scheduler.generate(parley.engine.tokenize("Warm-up: count to three."), greedy(4))
    drop_idle(parley.scheduler)


def warm_up_llama(llama) -> None:
    for _ in llama.create_completion(llama.tokenize(b"Warm-up: count to three."), max_tokens=4, temperature=0.0,
                                     stream=True):
        pass
    llama.reset()


# ---- results -------------------------------------------------------------------------------------------------
def _round(v: Any) -> Any:
    if isinstance(v, float):
        return None if math.isnan(v) else round(v, 4)
    return v


@dataclass
class Row:
    """One comparison: parley's number beside a baseline's, the ratio (always 'times better for parley'), and
    the target on that ratio when the issue sets one."""

    metric: str
    unit: str
    parley: float | None
    baseline: str
    baseline_value: float | None
    higher_is_better: bool = True
    target: float | None = None      # the ratio must be >= target (or > target when strict)
    strict: bool = False
    slack: float = 0.0               # "no worse than": both sides do the same llama.cpp work, so the ratio
                                     # is ~1 and a noise band of `slack` (e.g. 0.05) counts as no worse
    note: str = ""
    pairs: list[tuple[float, float]] | None = None   # (parley, baseline) measured back to back: the ratio is
                                                     # the median of their ratios (robust to a load that drifts)

    def _ratio(self, p: float | None, b: float | None) -> float | None:
        if p is None or b is None or math.isnan(p) or math.isnan(b) or p <= 0 or b <= 0:
            return None
        return p / b if self.higher_is_better else b / p

    @property
    def ratio(self) -> float | None:
        if self.pairs:
            ratios = [r for p, b in self.pairs if (r := self._ratio(p, b)) is not None]
            return median(ratios) if ratios else None
        return self._ratio(self.parley, self.baseline_value)

    @property
    def ratio_from(self) -> str:
        return f"median of {len(self.pairs)} paired ratios" if self.pairs else "ratio of the two values"

    @property
    def target_text(self) -> str:
        if self.target is None:
            return ""
        if self.slack:
            return f">= {self.target * (1 - self.slack):g}x (no worse, {self.slack:.0%} noise)"
        return f"{'>' if self.strict else '>='} {self.target:g}x"

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        r = self.ratio
        if r is None:
            return False
        return r > self.target if self.strict else r >= self.target * (1 - self.slack)

    def as_dict(self) -> dict:
        return {
            "metric": self.metric, "unit": self.unit, "parley": _round(self.parley), "baseline": self.baseline,
            "baseline_value": _round(self.baseline_value), "higher_is_better": self.higher_is_better,
            "ratio": _round(self.ratio), "ratio_from": self.ratio_from, "target": self.target_text or None,
            "met": self.met, "note": self.note,
        }


@dataclass
class ScenarioResult:
    name: str
    what: str                                          # one line: what the scenario measures
    config: dict = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    data: dict = field(default_factory=dict)           # every raw measurement
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    def as_dict(self) -> dict:
        return {
            "name": self.name, "what": self.what, "config": self.config,
            "rows": [r.as_dict() for r in self.rows], "data": self.data, "notes": self.notes,
            "seconds": round(self.seconds, 1), "error": self.error,
        }


# ---- worker processes (restart-style scenarios) ----------------------------------------------------------------
WORKER_LOG_PREFIX = "bench: "     # a worker's stderr lines with this prefix are progress, passed on to ctx.log


def run_worker(ctx: BenchContext, module: str, phase: str, spec_path: Path, out_path: Path, home: Path,
               timeout_s: float) -> dict:
    """Run `python -m module phase spec out` with PARLEY_HOME=home and return the JSON it wrote (plus its wall
    time, "process_s"). Its progress lines are passed on, the rest of its stderr kept for an error; a worker
    still running after `timeout_s` is killed."""
    env = {**os.environ, "PARLEY_HOME": str(home)}
    t0 = now()
    tail: deque[str] = deque(maxlen=40)
    with subprocess.Popen([sys.executable, "-m", module, phase, str(spec_path), str(out_path)],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as proc:
        timer = threading.Timer(timeout_s, proc.kill)  # a hung worker ends; its stderr then closes
        timer.start()
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                if line.startswith(WORKER_LOG_PREFIX):
                    ctx.log(line[len(WORKER_LOG_PREFIX):].rstrip("\n"))
                else:
                    tail.append(line)
            rc = proc.wait()
        finally:
            timer.cancel()
    if rc != 0:
        why = f"killed after {timeout_s} s" if rc == -9 else f"exit status {rc}"
        raise RuntimeError(f"the {phase} process failed ({why}): {''.join(tail)[-1500:]}")
    result = json.loads(out_path.read_text())
    result["process_s"] = now() - t0
    return result
