"""`parley bench SCENARIO`: parley beside its baselines, in one run, as a table (or one JSON document).

Every number is measured in the same run, on the same model file and thread count for every side; ratios
say how many times better parley is, and each target from the issues is marked met or missed (a missed
target is reported, never an exit code). Runs never touch the user's cache: PARLEY_HOME points at a
temporary directory for the whole run.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from parley.bench import (
    SCENARIOS,
    BenchContext,
    default_threads,
    model_info,
    noise_note,
    resolve_model,
    run_scenario,
)
from parley.bench.common import loadavg, other_load_now
from parley.bench.report import document, dumps, machine_info, markdown, table


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench", help="benchmark parley against llama-cpp-python on this machine",
        description="Measure parley against its baselines in the same run: llama-cpp-python's Llama (with its "
                    "prompt cache), naive re-prefill of the whole history, and llama-cpp-python's OpenAI server. "
                    "Prints a table with ratios and the issues' targets (met/missed).")
    p.add_argument("scenario", choices=(*SCENARIOS, "all"),
                   help="decode: tok/s vs Llama; multiturn: TTFT per turn of a long chat; sessions: 16 chats "
                        "taking turns, KV room for 4; concurrent: 8 HTTP clients at once; restart: the same chat "
                        "after a process restart; roleplay: a 40-turn persona chat with a 10-message window vs "
                        "the model card's re-prefilled recipe and Llama's prompt cache; "
                        "resume: 16 stored chats resumed in a new process (KV from disk) "
                        "vs re-prefill, and the store's cost per turn; "
                        "docqa: questions about a 6,000-token document before and after a restart vs "
                        "re-prefill and Llama's prompt cache, side by side vs one after another; "
                        "threads: the default thread setting vs fixed counts, quiet and "
                        "with a core taken; idle: decode speed while idle conversations fill the context, with "
                        "and without the idle-cell cap; batch: 8 sequences in one batch vs 1 on the bare engine "
                        "(the ceiling of concurrent); soak: a live parley serve under mixed traffic (streams, "
                        "disconnects, conversations, long prompts) at a small --kv-size: errors by kind, RSS, "
                        "p95 TTFT; models: several models in one process; constrained: decode tok/s under a "
                        "JSON schema vs unconstrained, n=4 vs four requests, a 5-round tool loop's prefilled "
                        "tokens vs re-reading; peer: parley serve vs llama.cpp's own llama-server (built once, "
                        "cached in ~/.cache/parley), both up and alternating; upstream: parley serve --upstream in front of "
                        "llama-server vs calling it directly; cluster: parley's engine replicas on a local Ray Serve "
                        "cluster, affinity vs Ray's default router, 2 replicas vs 1; all: every one")
    p.add_argument("--quick", action="store_true", help="smaller sizes: about a minute per scenario")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document (every number, the machine, the command) instead of the table")
    p.add_argument("--deterministic", action="store_true",
                   help="run parley with --deterministic (the decode scenario; its ratios then give the mode's cost)")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown (for a README)")
    p.add_argument("-m", "--model", metavar="PATH",
                   help="a GGUF model file (default: $PARLEY_MODEL, else the embedded SmolLM2-135M-Instruct)")
    p.add_argument("-t", "--threads", type=int, default=default_threads(),
                   help="CPU threads for parley and every baseline alike (default: every usable core, "
                        f"{default_threads()} here; a fixed count, so parley's thread governor is off)")
    p.set_defaults(func=run)


def command_line(args: argparse.Namespace) -> str:
    parts = ["parley", "bench", args.scenario]
    if args.quick:
        parts.append("--quick")
    if args.json:
        parts.append("--json")
    if args.deterministic:
        parts.append("--deterministic")
    if args.model:
        parts += ["-m", args.model]
    parts += ["--threads", str(args.threads)]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    if args.threads < 1:
        print("parley: error: --threads must be at least 1 (the benchmark needs a fixed count)", file=sys.stderr)
        return 2
    model = resolve_model(args.model)
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    home = Path(tempfile.mkdtemp(prefix="parley-bench-"))
    saved_home = os.environ.get("PARLEY_HOME")
    os.environ["PARLEY_HOME"] = str(home)
    ctx = BenchContext(model=model, threads=args.threads, quick=args.quick, home=home,
                       deterministic=args.deterministic)
    before = loadavg()
    busy = other_load_now(1.0)
    warning = noise_note(busy, args.threads, "before the start")
    if warning:
        ctx.log(f"warning: {warning}")
    try:
        results = [run_scenario(name, ctx) for name in names]
    finally:
        if saved_home is None:
            os.environ.pop("PARLEY_HOME", None)
        else:
            os.environ["PARLEY_HOME"] = saved_home
        shutil.rmtree(home, ignore_errors=True)
    machine = {**machine_info(args.threads), "other_processes_cores_at_start": busy}
    if args.json:
        about = model_info(model)
        print(dumps(document(results, command=command_line(args), machine=machine, model=about,
                             quick=args.quick, load_before=before, load_after=loadavg())))
    else:
        print(f"$ {command_line(args)}")
        print(f"model {model.name}, {args.threads} threads, {machine['cpu']} ({machine['usable_cores']} usable "
              f"cores), load average {before} -> {loadavg()}")
        print(markdown(results) if args.markdown else table(results))
        for res in results:
            for note in res.notes:
                print(f"note ({res.name}): {note}")
    return 1 if any(r.error for r in results) else 0
