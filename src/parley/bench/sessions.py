"""sessions: many conversations taking turns in random order on one engine whose KV holds only a few (issue #3).

16 conversations, each with its own made-up persona, take `turns` turns each in a seeded random order. Parley's
KV budget (--kv-size) is set to hold 4 of them at their longest, so the others are evicted to its RAM tier
(saved KV state) and restored when they come back. A "returning" turn is any turn after a conversation's
first. The same token ids go to:
    parley     Chat.send() on one Parley (KV room for 4 conversations, default RAM tier of 1 GiB, disk tier)
    naive (a)  the same tokens on a second parley whose idle sequences are dropped before every request
    Llama (b)  one Llama (same n_ctx) with llama.set_cache(LlamaRAMCache(1 GiB)): it reloads a returning
               conversation's saved state, then reads the new tokens
The three sides run one after another for each turn, the order rotating; naive runs on returning turns only.
"""

from __future__ import annotations

import collections
import random
from dataclasses import dataclass

from parley.bench.common import (
    BenchContext,
    NaiveRunner,
    Row,
    ScenarioResult,
    Timed,
    make_llama,
    median,
    percentile,
    rotate,
    settle,
    timed_llama_completion,
    warm_up_llama,
    warm_up_parley,
)
from parley.bench.content import persona, user_turns
from parley.bench.multiturn import LLAMA_CACHE_BYTES, timed_send

WHAT = "TTFT of a returning conversation: 16 chats in random order, KV room for 4, vs re-prefill and Llama's cache"


@dataclass(frozen=True)
class Sizes:
    conversations: int
    room: int         # conversations the KV budget holds at once
    persona: int      # system prompt tokens of each conversation
    turns: int        # turns per conversation
    max_tokens: int   # per reply


FULL = Sizes(conversations=16, room=4, persona=500, turns=3, max_tokens=32)
QUICK = Sizes(conversations=8, room=2, persona=200, turns=2, max_tokens=16)

USER_TOKENS_MAX = 40   # a user turn with its template markup (content.user_turns stays well below)


def kv_room(sz: Sizes, persona_tokens: int) -> tuple[int, int]:
    """(the longest a conversation gets, the KV budget that holds `room` of them at that length)."""
    longest = persona_tokens + 40 + sz.turns * (USER_TOKENS_MAX + sz.max_tokens + 8)
    return longest, sz.room * longest


def run(ctx: BenchContext) -> ScenarioResult:
    from llama_cpp import LlamaRAMCache

    from parley.api import Parley

    sz = QUICK if ctx.quick else FULL
    probe = Parley(ctx.model, threads=1, kv_size=256, disk_cache_mb=0, ram_cache_mb=0)
    try:
        personas = [persona(ctx.seed + 200 + c, sz.persona, probe.engine.tokenize) for c in range(sz.conversations)]
        longest_persona = max(len(probe.engine.tokenize(p)) for p in personas)
    finally:
        probe.close(save=False)
    longest, kv_size = kv_room(sz, longest_persona)
    order = [c for c in range(sz.conversations) for _ in range(sz.turns)]
    random.Random(ctx.seed).shuffle(order)
    res = ScenarioResult("sessions", WHAT, config={
        "conversations": sz.conversations, "kv_room_conversations": sz.room, "persona_tokens": sz.persona,
        "turns_per_conversation": sz.turns, "max_tokens_per_reply": sz.max_tokens,
        "longest_conversation_tokens": longest, "kv_size": kv_size, "threads": ctx.threads,
        "parley_ram_tier_bytes": 1 << 30, "llama_ram_cache_bytes": LLAMA_CACHE_BYTES, "order": order,
        "sampling": "greedy, no penalties"})

    p = Parley(ctx.model, threads=ctx.threads, kv_size=kv_size)
    naive = NaiveRunner(ctx, kv_size)
    llama = make_llama(ctx, kv_size)
    steps: list[dict] = []
    try:
        warm_up_parley(p)
        warm_up_parley(naive.parley)
        warm_up_llama(llama)
        llama.set_cache(LlamaRAMCache(capacity_bytes=LLAMA_CACHE_BYTES))
        chats = [p.chat(system=personas[c], temperature=0, max_tokens=sz.max_tokens, repeat_penalty=1.0)
                 for c in range(sz.conversations)]
        users = [user_turns(ctx.seed + 200 + c, sz.turns) for c in range(sz.conversations)]
        done = collections.Counter()
        for i, c in enumerate(order):
            k = done[c]
            done[c] += 1
            chat, text = chats[c], users[c][k]
            tokens = chat.prompt_for(text)
            out: dict[str, Timed] = {}
            sides = ["parley", "llama"] + (["naive"] if k > 0 else [])
            for side in rotate(sides, i):
                settle()
                if side == "parley":
                    out[side] = timed_send(chat, text)
                elif side == "naive":
                    out[side] = naive.run(tokens, chat.params)
                else:
                    out[side] = timed_llama_completion(llama, tokens, sz.max_tokens)
            steps.append({"conversation": c, "turn": k + 1, "returning": k > 0, **out})
            ctx.log(f"sessions: step {i + 1}/{len(order)}: conversation {c} turn {k + 1} ({len(tokens)} tokens, "
                    f"parley cache: {out['parley'].source}): "
                    + ", ".join(f"{s} {out[s].ttft_s * 1000:.0f} ms" for s in sides))
        stats = p.scheduler.stats()
    finally:
        llama.close()
        naive.close()
        p.close(save=False)

    back = [s for s in steps if s["returning"]]
    first = [s for s in steps if not s["returning"]]

    def ttfts(rows: list[dict], side: str) -> list[float]:
        return [s[side].ttft_s for s in rows]

    res.data = {
        "returning_cache_source": dict(collections.Counter(s["parley"].source for s in back)),
        "scheduler_stats": {k: v for k, v in stats.as_dict().items()
                            if k == "cache" or k.startswith(("ram_", "disk_", "kv_"))},
        "steps": [{k: (v.as_dict() if isinstance(v, Timed) else v) for k, v in s.items()} for s in steps],
    }
    N, L = "naive re-prefill (a)", "Llama + prompt cache (b)"

    def row(metric: str, rows: list[dict], base: str, **kw) -> Row:
        pairs = [(s["parley"].ttft_s, s[base].ttft_s) for s in rows]
        return Row(metric, "s", median([p for p, _ in pairs]), N if base == "naive" else L,
                   median([b for _, b in pairs]), False, pairs=pairs, **kw)

    evicted = [s for s in back if s["parley"].source in ("ram", "disk")]
    res.rows = [
        row(f"TTFT, returning conversation ({len(back)} turns)", back, "naive", target=5),
        row(f"TTFT, returning conversation ({len(back)} turns)", back, "llama"),
    ]
    if evicted:  # the returning turns whose KV had left the engine: the tiers at work
        res.rows.append(row(f"TTFT, returning after eviction ({len(evicted)} turns)", evicted, "naive"))
        res.rows.append(row(f"TTFT, returning after eviction ({len(evicted)} turns)", evicted, "llama"))
    res.rows += [
        Row("TTFT p95, returning conversation", "s", percentile(ttfts(back, "parley"), 95), N,
            percentile(ttfts(back, "naive"), 95), False),
        row(f"TTFT, first visit ({len(first)} turns)", first, "llama"),
    ]
    return res
