"""The benchmark's output: a plain table for people, one JSON document for machines."""

from __future__ import annotations

import json
import math
import os
import platform
import sys

from parley.bench.common import Row, ScenarioResult

HEADER = ("scenario", "metric", "parley", "baseline", "baseline value", "ratio", "target", "met?")


def machine_info(threads: int) -> dict:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:  # pragma: no cover - not Linux
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        usable = os.cpu_count()
    try:
        import llama_cpp
        llama_version = llama_cpp.__version__
    except Exception:  # pragma: no cover
        llama_version = None
    from parley import __version__
    return {
        "cpu": cpu or platform.processor(), "cores": os.cpu_count(), "usable_cores": usable, "threads": threads,
        "platform": platform.platform(), "python": sys.version.split()[0], "parley": __version__,
        "llama_cpp_python": llama_version,
        "env": {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "GGML_", "LLAMA_"))},
    }


def fmt(v: float | None, unit: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, int) and not isinstance(v, bool):  # a count
        return f"{v} {unit}".strip()
    if unit == "s":
        if v < 0.01:   # sub-millisecond timings (a cached grammar) would all print as "0 ms"
            return f"{v * 1000:.2f} ms"
        return f"{v * 1000:.0f} ms" if v < 10 else f"{v:.1f} s"
    if unit == "tok/s":
        return f"{v:.1f} tok/s"
    return f"{v:.3g} {unit}".strip()


def row_cells(scenario: str, r: Row) -> tuple[str, ...]:
    ratio = r.ratio
    met = {True: "met", False: "MISSED", None: ""}[r.met]
    return (scenario, r.metric, fmt(r.parley, r.unit), r.baseline, fmt(r.baseline_value, r.unit),
            "-" if ratio is None else f"{ratio:.2f}x", r.target_text, met)


def table(results: list[ScenarioResult]) -> str:
    rows = [HEADER]
    for res in results:
        if res.error:
            rows.append((res.name, "ERROR: " + res.error.splitlines()[-1][:80], "", "", "", "", "", ""))
        rows.extend(row_cells(res.name, r) for r in res.rows)
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(results: list[ScenarioResult]) -> str:
    """The same table in Markdown (for the README)."""
    out = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for res in results:
        for r in res.rows:
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in row_cells(res.name, r)) + " |")
    return "\n".join(out)


def document(results: list[ScenarioResult], *, command: str, machine: dict, model: dict, quick: bool,
             load_before: list[float], load_after: list[float]) -> dict:
    rows = [r for res in results for r in res.rows]
    return {
        "command": command,
        "quick": quick,
        "machine": {**machine, "loadavg_before": load_before, "loadavg_after": load_after},
        "model": model,
        "ratio_means": "how many times better parley is than the baseline (>1: parley better); "
                       "throughput: parley / baseline, latency: baseline / parley",
        "scenarios": {res.name: res.as_dict() for res in results},
        "summary": {
            "targets": sum(1 for r in rows if r.met is not None),
            "met": sum(1 for r in rows if r.met is True),
            "missed": [f"{res.name}: {r.metric} vs {r.baseline}" for res in results for r in res.rows
                       if r.met is False],
            "errors": {res.name: res.error for res in results if res.error},
        },
    }


def clean(v):
    """JSON-safe: NaN and infinities become null, floats keep 4 decimals, tuples become lists."""
    if isinstance(v, float):
        return round(v, 4) if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [clean(x) for x in v]
    return v


def dumps(doc: dict) -> str:
    return json.dumps(clean(doc), indent=2, allow_nan=False, default=str)
