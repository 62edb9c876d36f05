"""roleplay: a long persona chat in the transcript format with a 10-message window (issue #10).

A made-up ~1,000-token narrative (content.narrative, cut to whole sentences) is the persona's description; the
persona speaks in the transcript format ("Name: line", the reply ends at a newline or at another name) and the
conversation keeps `window` messages (max_messages, as narrative model cards advise: "the narrative plus the
last ~10 messages"). Short user turns (content.user_turns), greedy replies capped at `max_tokens`. Each turn:
    parley     Chat.send() on a Parley (default tiers): the narrative is pinned first, the window drops old
               turns in blocks, so most turns only append and the narrative's KV is reused when a block goes
    naive (a)  the model card's recipe: the narrative + the last `window` messages re-rendered as one text and
               re-prefilled from scratch (a second parley whose idle sequences are dropped before every turn)
    Llama (b)  the recipe's very prompts sent to llama-cpp-python's Llama with its live context and a 1 GiB
               LlamaRAMCache (its prefix reuse keeps the narrative; the window slides by one message a turn)
    Llama (b') parley's own prompt ids (Chat.prompt_for) sent to a second Llama the same way: the same llama.cpp
               work as parley on every turn, for reference (no target)
The sides run one after another within a turn, the order rotating turn by turn. Tokens prefilled: parley's are
the scheduler's own count (Parley.stats().totals, read-ahead included) from one turn to the next; the recipe's
are its whole prompt every turn, by construction (the naive side checks it reads no cached token). With --quick
the naive side is timed on every `naive_every`-th turn only (its prefilled tokens still count every turn), and
neither it nor b' on turn 1 (a full prefill on every side: Llama's turn 1 gives that number).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial

from parley.bench.common import (
    BenchContext,
    NaiveRunner,
    Row,
    ScenarioResult,
    Timed,
    greedy,
    make_llama,
    median,
    rotate,
    settle,
    timed_llama_completion,
    warm_up_llama,
    warm_up_parley,
)
from parley.bench.content import NAMES, Tokenize, narrative, user_turns
from parley.bench.multiturn import LLAMA_CACHE_BYTES, timed_send

WHAT = ("tokens prefilled and TTFT per turn of a 40-turn persona chat (1,000-token narrative, 10-message window) "
        "vs the model card's recipe re-prefilled and sent to Llama's prompt cache")
N_CTX = 4096
USER = "Traveller"
SIDES = ("parley", "naive", "llama", "llama_same")
BASELINES = {"naive": "model card recipe, re-prefilled (a)", "llama": "recipe prompts, Llama + prompt cache (b)",
             "llama_same": "parley's prompts, Llama + prompt cache (b')"}


@dataclass(frozen=True)
class Sizes:
    narrative: int    # tokens of the persona's description
    turns: int
    window: int       # messages kept (max_messages)
    max_tokens: int   # per reply
    naive_every: int  # the naive side is timed on turns 1, 1 + k, 1 + 2k, ... and the last
    first_twins: bool = True   # time the naive and b' sides on turn 1 too (a full prefill, as Llama's there)


FULL = Sizes(narrative=1000, turns=40, window=10, max_tokens=24, naive_every=1)
QUICK = Sizes(narrative=1000, turns=12, window=10, max_tokens=8, naive_every=6, first_twins=False)


def scene(seed: int, n_tokens: int, tokenize: Tokenize) -> str:
    """The longest content.narrative(seed, n) of at most n_tokens tokens (whole sentences)."""
    hi = 8
    while len(tokenize(narrative(seed, hi))) <= n_tokens:
        hi *= 2
    lo = 1                          # narrative(seed, n) grows with n (the same sentences, one more each time)
    while lo < hi - 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if len(tokenize(narrative(seed, mid))) <= n_tokens else (lo, mid)
    return narrative(seed, lo)


def recipe_text(description: str, speaker: str, history: list[dict], new: str, window: int) -> str:
    """The model card's prompt: the narrative, the last `window` messages (the new one included) as "Name:
    line" lines, then "Speaker:" (the transcript parley renders, without its block window)."""
    lines = [(USER if m["role"] == "user" else speaker, m["content"]) for m in history]
    lines.append((USER, new))
    return f"{description}\n\n" + "".join(f"{name}: {text}\n" for name, text in lines[-window:]) + f"{speaker}:"


def _timed(side: str, k: int, sz: Sizes) -> bool:
    if k == 0 and side in ("naive", "llama_same"):
        return sz.first_twins
    return side != "naive" or k % sz.naive_every == 0 or k == sz.turns - 1


def _prefilled(p) -> int:
    return p.stats().totals.prefilled_tokens


def _settled(p, timeout: float = 10.0) -> int:
    """The scheduler's prefilled-token total once nothing runs (the last turn's read-ahead included)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = p.stats()
        if s.running == 0 and s.waiting == 0:
            return s.totals.prefilled_tokens
        time.sleep(0.02)
    return _prefilled(p)


def run_sides(sides: dict, which: list[str], k: int) -> dict[str, Timed]:
    """Each side in `which` once, one after another, the order rotated by k, a pause before each."""
    out: dict[str, Timed] = {}
    for side in rotate(which, k):
        settle()
        out[side] = sides[side]()
    return out


def conversation(ctx: BenchContext, sz: Sizes, naive: NaiveRunner) -> tuple[list[dict], dict]:
    """One chat of sz.turns turns, every side each turn: per-turn records, and the setup's numbers."""
    from llama_cpp import LlamaRAMCache

    from parley.api import Parley, Persona

    seed = ctx.seed + 300
    p = Parley(ctx.model, threads=ctx.threads, kv_size=N_CTX)
    llamas = {"llama": make_llama(ctx, N_CTX), "llama_same": make_llama(ctx, N_CTX)}
    try:
        warm_up_parley(p)
        for llama in llamas.values():
            warm_up_llama(llama)
            llama.set_cache(LlamaRAMCache(capacity_bytes=LLAMA_CACHE_BYTES))
        description = scene(seed, sz.narrative, p.tokenize)
        speaker = NAMES[seed % len(NAMES)]
        persona = Persona(name=speaker, format="transcript", user_name=USER, description=description)
        chat = p.chat(persona=persona, temperature=0, max_tokens=sz.max_tokens, repeat_penalty=1.0,
                      max_messages=sz.window)
        stops = ("\n", f"{USER}:")
        head = p.tokenize(description)[:-1]   # the narrative's tokens (its last may merge with what follows)
        turns: list[dict] = []
        before = _prefilled(p)
        for k, text in enumerate(user_turns(seed, sz.turns)):
            if k:  # the previous turn's prefill and the read-ahead after it
                now = _prefilled(p)
                turns[-1]["prefilled"], before = now - before, now
            ids = chat.prompt_for(text)
            recipe = p.tokenize(recipe_text(description, speaker, chat.messages, text, sz.window))
            sides = {"parley": partial(timed_send, chat, text),
                     "naive": partial(naive.run, recipe, greedy(sz.max_tokens, stops)),
                     "llama": partial(timed_llama_completion, llamas["llama"], recipe, sz.max_tokens),
                     "llama_same": partial(timed_llama_completion, llamas["llama_same"], ids, sz.max_tokens)}
            out = run_sides(sides, [s for s in SIDES if _timed(s, k, sz)], k)
            if out["parley"].prompt_tokens != len(ids):
                raise RuntimeError("Chat.send built a different prompt than Chat.prompt_for")
            r = chat.last.result
            turns.append({"turn": k + 1, "sides": out, "prompt_tokens": len(ids), "recipe_tokens": len(recipe),
                          "request_prefilled": r.prefilled_tokens, "window_start": chat.last.dropped,
                          "narrative_kept": ids[:len(head)] == head, "stop": r.stop_string})
            ctx.log(f"roleplay: turn {k + 1}/{sz.turns} ({len(ids)} tokens, window from message "
                    f"{chat.last.dropped}): " + ", ".join(f"{s} {t.ttft_s * 1000:.0f} ms" for s, t in out.items()))
        turns[-1]["prefilled"] = _settled(p) - before
        return turns, {"narrative_tokens": len(head) + 1, "speaker": speaker}
    finally:
        for llama in llamas.values():
            llama.close()
        p.close(save=False)


def run(ctx: BenchContext) -> ScenarioResult:
    sz = QUICK if ctx.quick else FULL
    res = ScenarioResult("roleplay", WHAT, config={
        "narrative_tokens_max": sz.narrative, "turns": sz.turns, "window_messages": sz.window,
        "max_tokens_per_reply": sz.max_tokens, "naive_timed_every": sz.naive_every,
        "naive_timed_on_turn_1": sz.first_twins, "n_ctx": N_CTX,
        "threads": ctx.threads, "llama_ram_cache_bytes": LLAMA_CACHE_BYTES, "format": "transcript",
        "sampling": "greedy, no penalties"})
    naive = NaiveRunner(ctx, N_CTX)
    try:
        warm_up_parley(naive.parley)
        turns, setup = conversation(ctx, sz, naive)
    finally:
        naive.close()
    res.config.update(setup)
    for t in turns:
        if "naive" in t["sides"] and t["sides"]["naive"].prompt_tokens != t["recipe_tokens"]:
            raise RuntimeError("the naive side read a different prompt than the recipe's")
    parley_total = sum(t["prefilled"] for t in turns)
    recipe_total = sum(t["recipe_tokens"] for t in turns)
    moves = sum(1 for a, b in zip(turns, turns[1:], strict=False) if b["window_start"] != a["window_start"])
    res.data = {
        "per_turn": [{**{k: v for k, v in t.items() if k != "sides"},
                      **{f"{s}_ttft_s": t["sides"][s].ttft_s for s in t["sides"]},
                      "llama_same_prompt_tokens": t["prompt_tokens"]} for t in turns],
        "runs": [{s: x.as_dict() for s, x in t["sides"].items()} for t in turns],
        "prefilled_tokens": {"parley": parley_total, "recipe": recipe_total},
        "window_moves": moves,
        "narrative_kept_every_turn": all(t["narrative_kept"] for t in turns),
    }
    if not res.data["narrative_kept_every_turn"]:
        res.notes.append("a prompt did not start with the narrative's tokens (see per_turn.narrative_kept)")
    later = turns[1:]
    res.rows = [
        Row(f"prompt tokens prefilled, {sz.turns} turns", "tokens", parley_total, BASELINES["naive"], recipe_total,
            False, target=8, note="parley: the scheduler's count, read-ahead included; recipe: every prompt whole"),
        _ttft_row(f"TTFT median, turns 2-{sz.turns}", later, "llama", target=1, slack=0.05),
        _ttft_row(f"TTFT median, turns 2-{sz.turns}", later, "llama_same"),
        _ttft_row(f"TTFT median, turns 2-{sz.turns}" + ("" if sz.naive_every == 1 else " (naive timed on some)"),
                  later, "naive"),
        _ttft_row("TTFT, turn 1 (nothing cached)", turns[:1], "llama"),
    ]
    return res


def _ttft_row(metric: str, turns: list[dict], base: str, **kw) -> Row:
    """parley vs `base`: the medians, and the median of the paired ratios (same turn, back to back)."""
    pairs = [(t["sides"]["parley"].ttft_s, t["sides"][base].ttft_s) for t in turns if base in t["sides"]]
    return Row(metric, "s", median([a for a, _ in pairs]), BASELINES[base], median([b for _, b in pairs]), False,
               pairs=pairs, **kw)
