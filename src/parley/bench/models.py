"""models: several models in one process (issue #17), measured in one run on the same machine and threads.

The bench model is registered twice in a temporary PARLEY_HOME (as "base", and as "base-q8", a q8_0 copy made
by `parley models quantize`), and one Parley serves both:
    first token     a conversation's next turn with its model loaded, vs the same after the model was unloaded
                    (load + the KV restored from the disk tier), vs a cold model reading the prompt from scratch
    returning       the share of a returning conversation's prompt its model restored after an unload (the
                    issue's target: >= 80%)
    q8_0 copy       its size and decode tok/s beside the original's (the two alternate, greedy, no end token)
    two models      decode tok/s of one model alone vs while the other model streams at the same time
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from parley.bench.common import BenchContext, NaiveRunner, Row, ScenarioResult, median, now, settle
from parley.bench.content import persona, user_turns
from parley.sampling import SamplingParams

WHAT = ("first token with the model loaded / unloaded / restored; a q8_0 copy's size and speed; a second "
        "model's stream beside the first")
N_CTX = 4096


@dataclass(frozen=True)
class Sizes:
    persona: int
    turns: int
    max_tokens: int
    decode_tokens: int
    reps: int


FULL = Sizes(persona=1200, turns=4, max_tokens=16, decode_tokens=96, reps=3)
QUICK = Sizes(persona=600, turns=2, max_tokens=8, decode_tokens=48, reps=1)


def first_token(stream) -> tuple[float, object]:
    t0, first = now(), None
    for chunk in stream:
        if first is None and chunk.token_ids:
            first = now()
    end = now()
    return (first or end) - t0, stream.result


def decode_tps(door, n: int) -> float:
    params = SamplingParams(temperature=0, max_tokens=n, ignore_eos=True)
    return door.generate("Count slowly from one to a thousand:", params).wait().decode_tps


def run(ctx: BenchContext) -> ScenarioResult:
    import parley
    from parley.api import models

    sz = QUICK if ctx.quick else FULL
    res = ScenarioResult("models", WHAT, config={"n_ctx": N_CTX, "threads": ctx.threads, "persona_tokens": sz.persona,
                                                 "turns": sz.turns, "decode_tokens": sz.decode_tokens,
                                                 "repetitions": sz.reps})
    home = ctx.home / "models-bench"
    lib = models(home)
    lib.add(ctx.model, name="base")
    t0 = now()
    q8 = lib.quantize("base", "q8_0", out="base-q8")
    quantize_s = now() - t0
    base_size = lib.show("base").size_bytes
    ctx.log(f"models: q8_0 copy {q8.size_bytes / 1e6:.1f} MB (from {base_size / 1e6:.1f} MB) in {quantize_s:.1f} s")
    p = parley.load("base", home=str(home), kv_size=N_CTX, threads=ctx.threads)
    naive = NaiveRunner(ctx, N_CTX)
    try:
        base = p.using("base")
        system = persona(ctx.seed + 17, sz.persona, p.tokenize)
        loaded_ttft, restored_ttft, naive_ttft, load_s, shares = [], [], [], [], []
        for rep in range(sz.reps):
            chat = base.chat(system=system, temperature=0, max_tokens=sz.max_tokens, repeat_penalty=1.0)
            turns = user_turns(ctx.seed + rep, sz.turns + 2)
            for text in turns[:sz.turns]:
                chat.ask(text)
            settle()
            t, r = first_token(p.conversations.send(chat.id, turns[sz.turns]))
            loaded_ttft.append(t)
            prompt = chat.prompt_for(turns[sz.turns + 1])
            p.models.unload("base")                      # its conversation's KV goes to the disk tier
            settle()
            t_load = now()
            p.models.load("base")
            load_s.append(now() - t_load)
            settle()
            t, r = first_token(p.conversations.send(chat.id, turns[sz.turns + 1]))
            restored_ttft.append(t)
            shares.append(r.cached_tokens / r.prompt_tokens)
            settle()
            naive_ttft.append(naive.run(prompt, SamplingParams(temperature=0, max_tokens=sz.max_tokens)).ttft_s)
            ctx.log(f"models: repetition {rep + 1}/{sz.reps}: first token loaded {loaded_ttft[-1] * 1000:.0f} ms, "
                    f"after an unload {restored_ttft[-1] * 1000:.0f} ms (load {load_s[-1]:.2f} s, "
                    f"{shares[-1]:.0%} of {r.prompt_tokens} prompt tokens restored), read again "
                    f"{naive_ttft[-1] * 1000:.0f} ms")
        q = p.using("base-q8")
        pairs_speed, alone, beside = [], [], []
        for _ in range(sz.reps):
            settle()
            a = decode_tps(base, sz.decode_tokens)
            settle()
            b = decode_tps(q, sz.decode_tokens)
            pairs_speed.append((b, a))
            settle()
            alone.append(decode_tps(base, sz.decode_tokens))
            other = threading.Thread(target=decode_tps, args=(q, sz.decode_tokens * 3))
            other.start()
            settle()
            beside.append(decode_tps(base, sz.decode_tokens))
            other.join()
        ctx.log(f"models: decode q8_0 {median([b for b, _ in pairs_speed]):.1f} tok/s vs "
                f"{median([a for _, a in pairs_speed]):.1f}; one model {median(alone):.1f} tok/s alone, "
                f"{median(beside):.1f} while the other streams")
    finally:
        naive.close()
        p.close(save=False)
    res.data = {"first_token_loaded_s": loaded_ttft, "first_token_after_unload_s": restored_ttft,
                "load_s": load_s, "restored_share": shares, "read_again_s": naive_ttft,
                "quantize_s": quantize_s, "q8_0_bytes": q8.size_bytes, "base_bytes": base_size,
                "decode_q8_vs_base": pairs_speed, "decode_alone": alone, "decode_beside_another": beside}
    res.rows = [
        Row("returning conversation after its model was unloaded: prompt restored from disk", "%",
            100 * median(shares), "the issue's target share", 80.0, target=1.0),
        Row("first token of a returning conversation, model reloaded: KV restored vs read again", "s",
            median(restored_ttft), "the same prompt read from scratch (a)", median(naive_ttft), False,
            pairs=list(zip(restored_ttft, naive_ttft, strict=True))),
        Row("first token of a returning conversation: model loaded vs reloaded (load time apart)", "s",
            median(loaded_ttft), "after an unload and a reload", median(restored_ttft), False,
            note=f"loading the model took {median(load_s):.2f} s (median)"),
        Row("q8_0 copy: file size", "MB", q8.size_bytes / 1e6, "the original", base_size / 1e6, False),
        Row("q8_0 copy: decode tok/s", "tok/s", median([b for b, _ in pairs_speed]), "the original",
            median([a for _, a in pairs_speed]), pairs=pairs_speed),
        Row("one model's decode tok/s while a second model streams", "tok/s", median(beside), "alone",
            median(alone), pairs=list(zip(beside, alone, strict=True))),
    ]
    return res
