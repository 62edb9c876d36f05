"""multiturn: one long chat, time to first token per turn (issue #3).

A made-up persona of ~1,500 tokens as the system prompt, then short user turns (greedy replies, capped at
`max_tokens`). Each turn's prompt is built once by parley's Conversation and the very same token ids go to:
    parley     Chat.send() on a Parley with its default tiers (RAM + disk under the temporary PARLEY_HOME)
    naive (a)  the same tokens on a second parley whose idle sequences are dropped before every turn
    Llama (b)  Llama.create_completion(tokens) with its live context and llama.set_cache(LlamaRAMCache(1 GiB))
Within a turn the three sides run one after another, the order rotating turn by turn. Each repetition replays
the same conversation (greedy replies) on a new Parley and a new Llama, so nothing is cached across
repetitions and every repetition measures the same work; TTFT medians per turn. The naive side, ~30x slower,
runs every turn in the first `naive_reps` repetitions and only the last turn in the others.
"""

from __future__ import annotations

from dataclasses import dataclass

from parley.bench.common import (
    BenchContext,
    NaiveRunner,
    Row,
    ScenarioResult,
    Timed,
    make_llama,
    median,
    now,
    rotate,
    settle,
    timed_llama_completion,
    warm_up_llama,
    warm_up_parley,
)
from parley.bench.content import persona, user_turns

WHAT = "time to first token per turn of a long chat (1,500-token persona) vs re-prefill and Llama's prompt cache"
N_CTX = 4096
LLAMA_CACHE_BYTES = 1 << 30   # the same as parley's default RAM tier (--ram-cache-mb 1024)


@dataclass(frozen=True)
class Sizes:
    persona: int      # system prompt tokens
    turns: int
    max_tokens: int   # per reply
    reps: int
    naive_reps: int   # repetitions in which the naive side runs every turn (else: turn 1 and the last only)


FULL = Sizes(persona=1500, turns=10, max_tokens=32, reps=5, naive_reps=2)
QUICK = Sizes(persona=1500, turns=3, max_tokens=16, reps=1, naive_reps=1)


def timed_send(chat, text: str) -> Timed:
    """One turn through the public chat API, timed as the user sees it."""
    t0 = now()
    first = None
    for _ in chat.send(text):
        if first is None:
            first = now()
    end = now()
    r = chat.last.result
    return Timed((first or end) - t0, end - t0, r.generated_tokens, r.prompt_tokens, r.cached_tokens, r.cache_source)


def one_conversation(ctx: BenchContext, sz: Sizes, rep: int, naive: NaiveRunner) -> list[dict[str, Timed]]:
    from llama_cpp import LlamaRAMCache

    from parley.api import Parley

    seed = ctx.seed + 100
    p = Parley(ctx.model, threads=ctx.threads, kv_size=N_CTX)
    llama = make_llama(ctx, N_CTX)
    try:
        warm_up_parley(p)
        warm_up_llama(llama)
        llama.set_cache(LlamaRAMCache(capacity_bytes=LLAMA_CACHE_BYTES))
        system = persona(seed, sz.persona, p.engine.tokenize)
        chat = p.chat(system=system, temperature=0, max_tokens=sz.max_tokens, repeat_penalty=1.0)
        turns = []
        for k, text in enumerate(user_turns(seed, sz.turns)):
            tokens = chat.prompt_for(text)
            out: dict[str, Timed] = {}
            sides = ["parley", "naive", "llama"]
            if k == 0 and ctx.quick:  # turn 1 is a full prefill for every side: quick runs skip its naive twin
                sides.remove("naive")
            elif rep >= sz.naive_reps and 0 < k < sz.turns - 1:
                sides.remove("naive")
            for side in rotate(sides, k + rep):
                settle()
                if side == "parley":
                    out[side] = timed_send(chat, text)
                    if out[side].prompt_tokens != len(tokens):
                        raise RuntimeError("Chat.send built a different prompt than Conversation.prepare")
                elif side == "naive":
                    out[side] = naive.run(tokens, chat.params)
                else:
                    out[side] = timed_llama_completion(llama, tokens, sz.max_tokens)
            turns.append(out)
            ctx.log(f"multiturn: repetition {rep + 1}/{sz.reps}, turn {k + 1}/{sz.turns} ({len(tokens)} tokens): "
                    + ", ".join(f"{s} {out[s].ttft_s * 1000:.0f} ms" for s in sides))
        return turns
    finally:
        llama.close()
        p.close(save=False)


def run(ctx: BenchContext) -> ScenarioResult:
    sz = QUICK if ctx.quick else FULL
    res = ScenarioResult("multiturn", WHAT, config={
        "persona_tokens": sz.persona, "turns": sz.turns, "max_tokens_per_reply": sz.max_tokens,
        "repetitions": sz.reps, "naive_every_turn_repetitions": sz.naive_reps, "n_ctx": N_CTX, "threads": ctx.threads, "llama_ram_cache_bytes": LLAMA_CACHE_BYTES,
        "sampling": "greedy, no penalties"})
    naive = NaiveRunner(ctx, N_CTX)
    try:
        warm_up_parley(naive.parley)
        reps = [one_conversation(ctx, sz, r, naive) for r in range(sz.reps)]
    finally:
        naive.close()

    sides = ("parley", "naive", "llama")
    per_turn = []
    for k in range(sz.turns):
        row = {"turn": k + 1, "prompt_tokens": reps[0][k]["parley"].prompt_tokens,
               "parley_cached_tokens": reps[0][k]["parley"].cached_tokens}
        for s in sides:
            row[f"{s}_ttft_s"] = median([rep[k][s].ttft_s for rep in reps if s in rep[k]])
        per_turn.append(row)
    res.data = {"per_turn": per_turn,
                "runs": [[{s: t[s].as_dict() for s in t} for t in rep] for rep in reps]}

    def row(metric: str, turns: range, base: str, **kw) -> Row:
        """parley vs `base` over `turns`: medians of each side, and the median of the paired ratios (the two
        sides measured back to back on the same turn of the same repetition)."""
        cells = [rep[k] for rep in reps for k in turns if base in rep[k]]
        pairs = [(c["parley"].ttft_s, c[base].ttft_s) for c in cells]
        name = "naive re-prefill (a)" if base == "naive" else "Llama + prompt cache (b)"
        return Row(metric, "s", median([p for p, _ in pairs]), name, median([b for _, b in pairs]), False,
                   pairs=pairs, **kw)

    last = range(sz.turns - 1, sz.turns)
    middle = range(1, sz.turns)
    first = range(1)
    res.rows = [] if ctx.quick else [row("TTFT, turn 1 (nothing cached)", first, "naive")]
    res.rows += [
        row("TTFT, turn 1 (nothing cached)", first, "llama"),
        row(f"TTFT, last turn ({sz.turns})", last, "naive", target=10),
        row(f"TTFT, last turn ({sz.turns})", last, "llama", target=1, slack=0.05),
        row(f"TTFT, turns 2-{sz.turns}", middle, "naive"),
        row(f"TTFT, turns 2-{sz.turns}", middle, "llama"),
    ]
    return res
