"""speculate: decode tok/s with n-gram drafts from the context (--draft-max 16) vs without (--draft-max 0).

A reply that rewrites code or quotes a document copies long runs of its prompt; drafting them by n-gram lookup
and verifying the draft in one batched decode emits several tokens per decode. On a CPU a batched decode is not
free, and what it costs depends on the weights' type, so the same tasks run on the embedded model (Q4_1:
llama.cpp has no batched x86 kernel for it) and on a copy requantized to Q8_0 (written to this run's temporary
directory; `parley bench batch` shows the two types' batch scaling). Tasks, greedy, the model's chat template:
  refactor  give a 40-line Python function back with one variable renamed
  quote     quote a paragraph of a 500-token document word for word
  story     write a short story (nothing to copy: drafting must cost nothing measurable)
  chat      a short question (the same)
One Parley per model (one after the other: two llama.cpp thread teams in one process slow each other); on it
each repetition runs every task with drafts on and off, in alternating order, the prompt already cached (the
first repetition is a warm-up). Ratios are medians of the paired repetitions; "same tokens" is the share of
replies identical token for token to the plain decode (greedy verification keeps them identical up to the
last-bit differences any batch shape makes outside --deterministic).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from parley.bench.batch import _catch, requantize
from parley.bench.common import (
    BenchContext,
    Row,
    ScenarioResult,
    Timed,
    greedy,
    median,
    now,
    rotate,
    settle,
    timed_parley,
    timed_stream,
)
from parley.bench.content import narrative

WHAT = "decode tok/s with n-gram drafts from the context vs plain decoding: refactor, quote, story, chat; Q4_1 and Q8_0"

FUNCTION = '''def summarize_orders(orders, tax_rate, discounts):
    """Total each customer's orders, apply their discount and the tax, and list the big spenders."""
    totals = {}
    for order in orders:
        customer = order["customer"]
        amount = order["quantity"] * order["unit_price"]
        if order.get("coupon"):
            amount -= order["coupon"]
        totals[customer] = totals.get(customer, 0) + amount
    report = []
    for customer, amount in sorted(totals.items()):
        discount = discounts.get(customer, 0.0)
        amount = amount * (1 - discount)
        tax = amount * tax_rate
        report.append({"customer": customer, "net": round(amount, 2), "tax": round(tax, 2),
                       "gross": round(amount + tax, 2)})
    big = [row["customer"] for row in report if row["gross"] > 1000]
    return report, big
'''


def tasks(seed: int) -> dict[str, str]:
    paragraphs = [narrative(seed + i, 5) for i in range(4)]
    document = "\n\n".join(paragraphs)
    return {
        "refactor": f"Rename the variable `totals` to `spent_by_customer` in this function and give back the "
                    f"whole function, nothing else:\n\n```python\n{FUNCTION}```",
        "quote": f"{document}\n\nQuote the second paragraph of the text above word for word.",
        "story": "Write a short story about a lighthouse keeper who finds a message in a bottle.",
        "chat": "What should I pack for a weekend hiking trip in the mountains?",
    }


COPYING = ("refactor", "quote")
SPEEDUP = 1.5   # issue 19: >= 1.5x on copying tasks, on a model where the batch cost allows it
NO_WORSE = 0.97  # and >= 0.97x everywhere else


@dataclass(frozen=True)
class Sizes:
    gen: int
    reps: int
    models: tuple[str, ...]


FULL = Sizes(gen=256, reps=4, models=("Q4_1", "Q8_0"))
QUICK = Sizes(gen=96, reps=2, models=("Q4_1", "Q8_0"))


def run(ctx: BenchContext) -> ScenarioResult:
    sz = QUICK if ctx.quick else FULL
    res = ScenarioResult("speculate", WHAT, config={"generated_tokens": sz.gen, "repetitions": sz.reps,
                                                     "draft_max": 16, "threads": ctx.threads})
    files = {"Q4_1": ctx.model}
    if "Q8_0" in sz.models:
        files["Q8_0"] = requantize(ctx.model, ctx.home / "model-q8_0.gguf", "Q8_0")
    runs: dict[str, dict[str, list[Timed]]] = {}
    same: dict[str, list[bool]] = {}
    drafted: dict[str, dict] = {}

    def measure(name: str, path) -> None:
        from parley.api import Parley

        parley = Parley(path, threads=ctx.threads, kv_size=4096, disk_cache_mb=0, ram_cache_mb=256)
        try:
            sched = parley.scheduler
            prompts = {t: parley.chat_prompt([{"role": "user", "content": text}], max_tokens=sz.gen).tokens
                       for t, text in tasks(ctx.seed).items()}
            params = greedy(sz.gen)
            for p in prompts.values():  # warm-up: every prompt read once, both ways
                for d in (0, 16):
                    sched.tune(draft_max=d)
                    timed_parley(sched, p, params.replace(max_tokens=8))
            before = sched.stats().totals
            for i in range(sz.reps):
                for t, p in prompts.items():
                    outs = {}
                    for d in rotate([0, 16], i):
                        sched.tune(draft_max=d)
                        settle()
                        t0 = now()
                        stream = sched.stream(p, params)
                        timed = timed_stream(stream, t0, "parley request")
                        runs.setdefault(f"{name}/{t}/{'on' if d else 'off'}", []).append(timed)
                        outs[d] = stream.result.token_ids
                    same.setdefault(f"{name}/{t}", []).append(outs[0] == outs[16])
                ctx.log(f"speculate: {name} repetition {i + 1}/{sz.reps}: " + ", ".join(
                    f"{t} {runs[f'{name}/{t}/on'][-1].decode_tps:.0f} vs {runs[f'{name}/{t}/off'][-1].decode_tps:.0f}"
                    f" tok/s" for t in prompts))
            after = sched.stats().totals
            drafted[name] = {"drafted_tokens": after.drafted_tokens - before.drafted_tokens,
                             "accepted_tokens": after.accepted_tokens - before.accepted_tokens}
        finally:
            parley.close(save=False)

    for name, path in files.items():
        failed: list[BaseException] = []
        t = threading.Thread(target=_catch, args=(failed, measure, name, path))  # see bench/batch.py
        t.start()
        t.join()
        if failed:
            raise failed[0]
    res.data["runs"] = {k: [x.as_dict() for x in v] for k, v in runs.items()}
    res.data["same_tokens"] = same
    res.data["drafts"] = drafted
    for name in files:
        for t in tasks(ctx.seed):
            on, off = runs[f"{name}/{t}/on"], runs[f"{name}/{t}/off"]
            share = sum(same[f"{name}/{t}"]) / len(same[f"{name}/{t}"])
            target = SPEEDUP if t in COPYING and name == "Q8_0" else NO_WORSE
            res.rows.append(Row(
                f"decode tok/s, {t}, drafts from the context ({name})", "tok/s", median([x.decode_tps for x in on]),
                "no drafts", median([x.decode_tps for x in off]), target=target,
                pairs=[(a.decode_tps, b.decode_tps) for a, b in zip(on, off, strict=True)],
                note=f"same tokens {share:.0%}; {median([x.generated for x in on]):.0f} tokens"))
    return res
