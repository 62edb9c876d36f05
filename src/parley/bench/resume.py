"""resume: stored conversations resumed in a new process, with their KV from the disk tier (issue #9).

One shared PARLEY_HOME (a temporary directory) and two processes in turn:
    write  a Parley (default tiers) holds `conversations` chats one after another, each with its own short
           persona (content.persona) as the system prompt and `turns` short user turns (content.user_turns),
           greedy replies capped at `max_tokens`; every message goes to $PARLEY_HOME/parley.db as it happens.
           Then it closes with save=True: the conversations' KV (in the context or the RAM tier) goes to
           $PARLEY_HOME/kv. Before closing it records, per conversation, the prompt the next message would get.
    read   a new process with the same PARLEY_HOME resumes each conversation from the store
           (Parley.chat(resume=id)) and sends one new message (parley, timed with Chat.send), and sends the very
           same prompt token ids (Chat.prompt_for) to a second parley with no tiers and no cached sequence (naive
           re-prefill: what a store-backed UI does with its history today). Both engines are warmed up first;
           the two sides alternate which goes first, conversation by conversation. Every resumed turn must find
           its KV on disk (cache_source "disk"); anything else is reported in the notes.
Then the store alone, in the bench process (no model loaded), on the same parley.db: per turn, get the
conversation, load its branch, add the user row and the partial reply row, finish the reply (the Store calls
Turns.send and its recording make), copying the rows of each conversation's last turn (same text, token ids,
stats). Once with the file opened and closed around each turn, once on a connection kept open.
The state files were just written, so they are read from the OS page cache: a cold disk adds its read time.
Run as `python -m parley.bench.resume write|read SPEC OUT` by the scenario itself.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from parley.bench.common import (
    WORKER_LOG_PREFIX,
    BenchContext,
    NaiveRunner,
    Row,
    ScenarioResult,
    median,
    now,
    percentile,
    rotate,
    run_worker,
    settle,
    warm_up_parley,
)
from parley.bench.content import persona, user_turns
from parley.bench.multiturn import timed_send

WHAT = ("TTFT of stored conversations resumed in a new process (KV from disk) vs re-prefilling their history, "
        "and the store's own cost per turn")
N_CTX = 4096
WORKER_TIMEOUT_S = 900
STORE_BUDGET_MS = 5.0   # issue #9: the store's own cost per turn (open, load the branch, write two rows)
LOG_PREFIX = WORKER_LOG_PREFIX


@dataclass(frozen=True)
class Sizes:
    conversations: int
    turns: int          # stored turns per conversation (the resumed message comes on top)
    persona: int        # system prompt tokens per conversation
    max_tokens: int     # per reply
    store_turns: int    # timed store turns, each way (file opened per turn / kept open)


FULL = Sizes(conversations=16, turns=20, persona=200, max_tokens=12, store_turns=320)
QUICK = Sizes(conversations=6, turns=8, persona=100, max_tokens=8, store_turns=96)


def _say(msg: str) -> None:
    print(f"{LOG_PREFIX}resume: {msg}", file=sys.stderr, flush=True)


# ---- the two worker processes ----------------------------------------------------------------------------
def _write(spec: dict) -> dict:
    from parley.api import Parley

    p = Parley(spec["model"], threads=spec["threads"], kv_size=N_CTX)
    closed = False
    convs = []
    t0 = now()
    try:
        for c in range(spec["conversations"]):
            seed = spec["seed"] + c
            system = persona(seed, spec["persona"], p.tokenize)
            chat = p.chat(system=system, temperature=0, max_tokens=spec["max_tokens"], repeat_penalty=1.0)
            users = user_turns(seed, spec["turns"] + 1)
            for text in users[:-1]:
                chat.ask(text)
            convs.append({"id": chat.id, "next_user": users[-1], "next_tokens": chat.prompt_for(users[-1]),
                          "held_tokens": chat.held_tokens(), "messages": len(chat.messages)})
            _say(f"wrote conversation {c + 1}/{spec['conversations']} ({spec['turns']} turns, "
                 f"{len(convs[-1]['next_tokens'])} tokens with the next message)")
        write_s = now() - t0
        t0 = now()
        p.close(save=True)
        closed = True
        save_s = now() - t0
    finally:
        if not closed:
            p.close(save=False)
    kv = Path(os.environ["PARLEY_HOME"]) / "kv"
    files = [f.stat().st_size for f in kv.rglob("*.kv")]
    return {"conversations": convs, "write_s": write_s, "save_s": save_s, "kv_files": len(files),
            "kv_bytes": sum(files)}


def _first_difference(a: list[int], b: list[int]) -> int | None:
    if a == b:
        return None
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def _read(spec: dict, written: dict) -> dict:
    from parley.api import Parley

    ctx = BenchContext(model=Path(spec["model"]), threads=spec["threads"], quick=True,
                       home=Path(os.environ["PARLEY_HOME"]))
    t0 = now()
    p = Parley(spec["model"], threads=spec["threads"], kv_size=N_CTX)
    startup_s = now() - t0
    naive = NaiveRunner(ctx, N_CTX)
    out = []
    try:
        warm_up_parley(p)
        warm_up_parley(naive.parley)
        for k, conv in enumerate(written["conversations"]):
            t0 = now()
            chat = p.chat(resume=conv["id"])  # from the store, as `parley chat --resume ID` does
            resume_s = now() - t0
            held = chat.held_tokens()
            tokens = chat.prompt_for(conv["next_user"])
            row: dict = {}
            for side in rotate(["parley", "naive"], k):
                settle()
                if side == "parley":
                    row[side] = timed_send(chat, conv["next_user"]).as_dict()
                else:
                    row[side] = naive.run(tokens, chat.params).as_dict()
            if row["parley"]["prompt_tokens"] != len(tokens):
                raise RuntimeError("Chat.send built a different prompt than Chat.prompt_for")
            row.update({"conversation": k + 1, "prompt_tokens": len(tokens), "resume_s": resume_s,
                        "tokens_identical": tokens == conv["next_tokens"],
                        "first_difference": _first_difference(tokens, conv["next_tokens"]),
                        "held_tokens": len(held), "held_identical": held == conv["held_tokens"]})
            out.append(row)
            pr, nv = row["parley"], row["naive"]
            _say(f"conversation {k + 1}/{len(written['conversations'])} ({len(tokens)} tokens): parley "
                 f"{pr['ttft_s'] * 1000:.0f} ms ({pr['cached_tokens']} cached, from {pr['source']}), naive "
                 f"{nv['ttft_s'] * 1000:.0f} ms")
    finally:
        naive.close()
        p.close(save=False)
    return {"turns": out, "startup_s": startup_s}


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


# ---- the store on its own ----------------------------------------------------------------------------------
def _store_turn(path: Path, kept, cid: str, template: tuple) -> dict[str, float]:
    """One turn's Store calls (those of Turns.send and its recording), timed call by call. `kept`: a Store
    kept open, or None to open (and close) the file around the turn."""
    from parley.store import NewMessage, Store

    user, reply = template
    t0 = now()
    store = kept if kept is not None else Store(path)
    t1 = now()
    conv = store.get_conversation(cid)
    store.branch(conv.leaf_id)
    t2 = now()
    _, row = store.add_messages(cid, [
        NewMessage("user", user.content, parent_id=conv.leaf_id, meta=user.meta, tokens=user.tokens,
                   tokens_text=user.tokens_text, tokens_key=user.tokens_key),
        NewMessage("assistant", "", partial=True, meta=reply.meta)])
    t3 = now()
    store.finish_message(row.id, content=reply.content, finish_reason=reply.finish_reason, partial=False,
                         stats=reply.stats, tokens=reply.tokens, tokens_text=reply.tokens_text,
                         tokens_key=reply.tokens_key, meta=reply.meta)
    t4 = now()
    if kept is None:
        store.close()
    t5 = now()
    return {"total": t5 - t0, "open": t1 - t0, "load": t2 - t1, "add": t3 - t2, "finish": t4 - t3,
            "close": t5 - t4}


def store_costs(path: Path, conversation_ids: list[str], turns: int) -> dict:
    """The store's own cost per turn on the real file, both ways, interleaved turn by turn (milliseconds)."""
    from parley.store import Store

    kept = Store(path)
    try:
        templates = {}
        for cid in conversation_ids:
            branch = kept.branch(kept.get_conversation(cid).leaf_id)
            user = next(m for m in reversed(branch) if m.role == "user")
            reply = next(m for m in reversed(branch) if m.role == "assistant")
            templates[cid] = (user, reply)
        first_branch = len(kept.branch(kept.get_conversation(conversation_ids[0]).leaf_id))
        times: dict[str, list[dict[str, float]]] = {"opened": [], "kept_open": []}
        for i in range(turns):
            cid = conversation_ids[i % len(conversation_ids)]
            for mode in rotate(["opened", "kept_open"], i):
                times[mode].append(_store_turn(path, None if mode == "opened" else kept, cid, templates[cid]))
        last_branch = len(kept.branch(kept.get_conversation(conversation_ids[0]).leaf_id))
    finally:
        kept.close()
    out: dict = {"turns_each": turns, "branch_messages": [first_branch, last_branch],
                 "db_bytes": path.stat().st_size}
    for mode, samples in times.items():
        totals = [s["total"] * 1000 for s in samples]
        out[mode] = {"median_ms": median(totals), "p95_ms": percentile(totals, 95), "max_ms": max(totals),
                     "median_ms_by_call": {k: median([s[k] * 1000 for s in samples])
                                           for k in ("open", "load", "add", "finish", "close")}}
    return out


# ---- the scenario ----------------------------------------------------------------------------------------
def _worker(ctx: BenchContext, phase: str, spec_path: Path, out_path: Path, home: Path) -> dict:
    return run_worker(ctx, "parley.bench.resume", phase, spec_path, out_path, home, WORKER_TIMEOUT_S)


def run(ctx: BenchContext) -> ScenarioResult:
    sz = QUICK if ctx.quick else FULL
    res = ScenarioResult("resume", WHAT, config={**asdict(sz), "n_ctx": N_CTX, "threads": ctx.threads,
                                                 "sampling": "greedy, no penalties",
                                                 "store_budget_ms": STORE_BUDGET_MS})
    home = ctx.home / "resume"
    home.mkdir(parents=True)
    spec = {"model": str(ctx.model), "threads": ctx.threads, "seed": ctx.seed + 400, **asdict(sz),
            "written": str(home / "written.json")}
    spec_path = home / "spec.json"
    spec_path.write_text(json.dumps(spec))
    written = _worker(ctx, "write", spec_path, home / "written.json", home)
    read = _worker(ctx, "read", spec_path, home / "read.json", home)
    turns = read["turns"]
    ids = [c["id"] for c in written["conversations"]]
    ctx.log(f"resume: the store alone, {sz.store_turns} turns each way on {home / 'parley.db'}")
    store = store_costs(home / "parley.db", ids, sz.store_turns)

    opened, kept = store["opened"], store["kept_open"]
    sources = Counter(t["parley"]["source"] for t in turns)
    cached = [t["parley"]["cached_tokens"] or 0 for t in turns]
    prompts = [t["prompt_tokens"] for t in turns]
    fractions = [c / n for c, n in zip(cached, prompts, strict=True)]
    res.data = {
        "write": {k: v for k, v in written.items() if k != "conversations"}
                 | {"messages_per_conversation": [c["messages"] for c in written["conversations"]]},
        "read": {"startup_s": read["startup_s"], "process_s": read["process_s"]},
        "resumed": {"cache_sources": dict(sources), "cached_tokens": sum(cached), "prompt_tokens": sum(prompts),
                    "cached_fraction_median": median(fractions), "cached_fraction_min": min(fractions)},
        "turns": turns,
        "store": store,
    }
    n = len(turns)
    res.notes.append(f"resumed turns: {sum(cached)} of {sum(prompts)} prompt tokens came from the cache "
                     f"(per turn: median {median(fractions):.1%}, lowest {min(fractions):.1%}); KV source: "
                     + ", ".join(f"{s} {k} of {n}" for s, k in sources.most_common()))
    not_disk = [t["conversation"] for t in turns if t["parley"]["source"] != "disk"]
    if not_disk:
        res.notes.append(f"BUG: {len(not_disk)} of {n} resumed conversations did NOT get their KV from the disk "
                         f"tier (conversations {not_disk}: sources "
                         f"{[turns[i - 1]['parley']['source'] for i in not_disk]}); after a restart every one "
                         "should come from $PARLEY_HOME/kv")
    if not all(t["tokens_identical"] for t in turns):
        res.notes.append("the resumed chats' prompts differ from the ones the writing process would have sent "
                         f"(first differences: {[t['first_difference'] for t in turns]}): the cache covered only "
                         "the common prefix")
    if not all(t["held_identical"] for t in turns):
        res.notes.append("Chat.held_tokens() after the restart differs from the writing process's for "
                         f"conversations {[t['conversation'] for t in turns if not t['held_identical']]}")
    if opened["p95_ms"] >= STORE_BUDGET_MS:
        res.notes.append(f"the store's p95 per turn ({opened['p95_ms']:.2f} ms, file opened per turn) is over the "
                         f"{STORE_BUDGET_MS:g} ms budget (its median: {opened['median_ms']:.2f} ms)")
    if written["kv_files"] < len(ids):
        res.notes.append(f"the writing process left {written['kv_files']} KV files for {len(ids)} conversations")

    pairs = [(t["parley"]["ttft_s"], t["naive"]["ttft_s"]) for t in turns]
    p_ttft = [p for p, _ in pairs]
    b_ttft = [b for _, b in pairs]
    budget = f"budget {STORE_BUDGET_MS:g} ms (issue #9)"
    budget_note = f"ratio = {STORE_BUDGET_MS:g} ms / the store's time: above 1 is under budget"
    label = f"{sz.turns} turns stored, {median(prompts):.0f}-token prompt"
    res.rows = [
        Row(f"TTFT, resumed conversation ({label})", "s", median(p_ttft), "naive re-prefill (a)", median(b_ttft),
            False, target=10, pairs=pairs),
        Row("TTFT p95, resumed conversation", "s", percentile(p_ttft, 95), "naive re-prefill (a)",
            percentile(b_ttft, 95), False),
        Row("store per turn, file opened per turn (median)", "ms", opened["median_ms"], budget, STORE_BUDGET_MS,
            False, target=1, strict=True, note=budget_note),
        Row("store per turn, file opened per turn (p95)", "ms", opened["p95_ms"], budget, STORE_BUDGET_MS, False,
            note=budget_note),
        Row("store per turn, connection kept open (median)", "ms", kept["median_ms"], budget, STORE_BUDGET_MS,
            False, note=budget_note),
        Row("store per turn, connection kept open (p95)", "ms", kept["p95_ms"], budget, STORE_BUDGET_MS, False,
            note=budget_note),
    ]
    return res


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
