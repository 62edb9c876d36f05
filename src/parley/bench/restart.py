"""restart: the same conversation after a process restart, served from parley's disk KV cache (issue #3).

Each repetition uses a fresh shared PARLEY_HOME (a temporary directory) and two processes in turn:
    write  a Parley (default tiers) holds a chat: the ~1,500-token persona and `turns - 1` turns; then it closes
           with save=True, which writes the conversation's KV to $PARLEY_HOME/kv
    read   a new process with the same PARLEY_HOME resumes the stored conversation (Parley.chat(resume=id))
           and sends the next user turn (parley), and sends the very same prompt tokens to a second parley
           with no tiers and no cached sequence (naive re-prefill). Both engines are warmed up first with an
           unrelated prompt; the order of the two alternates between repetitions.
The state files were just written, so they are read from the OS page cache: a cold disk adds its read time.
Run as `python -m parley.bench.restart write|read SPEC OUT` by the scenario itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from parley.bench.common import (
    BenchContext,
    NaiveRunner,
    Row,
    ScenarioResult,
    median,
    now,
    settle,
    warm_up_parley,
)
from parley.bench.content import persona, user_turns
from parley.bench.multiturn import timed_send

WHAT = "TTFT of the same conversation after a process restart (disk KV cache) vs re-prefill"
N_CTX = 4096
WORKER_TIMEOUT_S = 900


@dataclass(frozen=True)
class Sizes:
    persona: int
    turns: int        # including the one sent after the restart
    max_tokens: int
    reps: int


FULL = Sizes(persona=1500, turns=4, max_tokens=32, reps=3)
QUICK = Sizes(persona=1500, turns=2, max_tokens=16, reps=1)


# ---- the two worker processes ----------------------------------------------------------------------------
def _write(spec: dict) -> dict:
    from parley.api import Parley

    p = Parley(spec["model"], threads=spec["threads"], kv_size=N_CTX)
    closed = False
    try:
        system = persona(spec["seed"], spec["persona"], p.engine.tokenize)
        chat = p.chat(system=system, temperature=0, max_tokens=spec["max_tokens"], repeat_penalty=1.0)
        users = user_turns(spec["seed"], spec["turns"])
        for text in users[:-1]:
            chat.ask(text)
        next_tokens = chat.prompt_for(users[-1])
        t0 = now()
        p.close(save=True)
        closed = True
        save_s = now() - t0
    finally:
        if not closed:
            p.close(save=False)
    kv = Path(os.environ["PARLEY_HOME"]) / "kv"
    files = [f.stat().st_size for f in kv.rglob("*.kv")]
    return {"conversation_id": chat.id, "next_user": users[-1],
            "next_tokens": next_tokens, "save_s": save_s, "kv_files": len(files), "kv_bytes": sum(files)}


def _read(spec: dict, written: dict) -> dict:
    from parley.api import Parley

    ctx = BenchContext(model=Path(spec["model"]), threads=spec["threads"], quick=True,
                       home=Path(os.environ["PARLEY_HOME"]))
    t0 = now()
    p = Parley(spec["model"], threads=spec["threads"], kv_size=N_CTX)
    startup_s = now() - t0
    naive = NaiveRunner(ctx, N_CTX)
    try:
        warm_up_parley(p)
        warm_up_parley(naive.parley)
        chat = p.chat(resume=written["conversation_id"])  # from the store, as `parley chat --resume` does
        tokens = chat.prompt_for(written["next_user"])
        out = {}
        for side in (("parley", "naive") if spec["parley_first"] else ("naive", "parley")):
            settle()
            if side == "parley":
                out[side] = timed_send(chat, written["next_user"]).as_dict()
            else:
                out[side] = naive.run(tokens, chat.params).as_dict()
    finally:
        naive.close()
        p.close(save=False)
    return {**out, "startup_s": startup_s, "prompt_tokens": len(tokens),
            "tokens_identical": tokens == written["next_tokens"],
            "first_difference": next((i for i, (a, b) in enumerate(zip(tokens, written["next_tokens"], strict=False))
                                      if a != b), None)}


def main(argv: list[str]) -> int:
    phase, spec_path, out_path = argv
    spec = json.loads(Path(spec_path).read_text())
    if phase == "write":
        result = _write(spec)
    elif phase == "read":
        result = _read(spec, json.loads(Path(spec["written"]).read_text()))
    else:
        raise SystemExit(f"unknown phase {phase!r}; known: write, read")
    Path(out_path).write_text(json.dumps(result))
    return 0


# ---- the scenario ----------------------------------------------------------------------------------------
def _worker(ctx: BenchContext, phase: str, spec_path: Path, out_path: Path, home: Path) -> dict:
    env = {**os.environ, "PARLEY_HOME": str(home)}
    t0 = now()
    proc = subprocess.run([sys.executable, "-m", "parley.bench.restart", phase, str(spec_path), str(out_path)],
                          env=env, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"the {phase} process failed ({proc.returncode}): {proc.stderr[-1500:]}")
    result = json.loads(out_path.read_text())
    result["process_s"] = now() - t0
    return result


def run(ctx: BenchContext) -> ScenarioResult:
    sz = QUICK if ctx.quick else FULL
    res = ScenarioResult("restart", WHAT, config={**asdict(sz), "n_ctx": N_CTX, "threads": ctx.threads,
                                                  "sampling": "greedy, no penalties"})
    reps = []
    for r in range(sz.reps):
        home = ctx.home / f"restart-{r}"
        home.mkdir(parents=True)
        spec = {"model": str(ctx.model), "threads": ctx.threads, "seed": ctx.seed + 300 + r, "persona": sz.persona,
                "turns": sz.turns, "max_tokens": sz.max_tokens, "parley_first": r % 2 == 0,
                "written": str(home / "written.json")}
        spec_path = home / "spec.json"
        spec_path.write_text(json.dumps(spec))
        written = _worker(ctx, "write", spec_path, home / "written.json", home)
        read = _worker(ctx, "read", spec_path, home / "read.json", home)
        reps.append({"write": {k: v for k, v in written.items() if k in ("save_s", "kv_files", "kv_bytes",
                                                                          "process_s")},
                     "read": read})
        ctx.log(f"restart: repetition {r + 1}/{sz.reps}: parley {read['parley']['ttft_s'] * 1000:.0f} ms "
                f"({read['parley']['cached_tokens']}/{read['prompt_tokens']} tokens from "
                f"{read['parley']['source']}), naive {read['naive']['ttft_s'] * 1000:.0f} ms")
    res.data = {"runs": reps}
    reads = [x["read"] for x in reps]
    if not all(r["tokens_identical"] for r in reads):
        res.notes.append("rebuilding the chat from its messages after the restart gave different prompt tokens "
                         "than the first process had (first difference at "
                         f"{[r['first_difference'] for r in reads]}): the cache covered only the common prefix")
    if any(r["parley"]["source"] != "disk" for r in reads):
        res.notes.append(f"parley's cache source after the restart: {[r['parley']['source'] for r in reads]}")
    pairs = [(r["parley"]["ttft_s"], r["naive"]["ttft_s"]) for r in reads]
    res.rows = [
        Row("TTFT after a process restart", "s", median([p for p, _ in pairs]), "naive re-prefill (a)",
            median([b for _, b in pairs]), False, target=5, pairs=pairs),
    ]
    return res


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
