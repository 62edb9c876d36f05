"""constrained: what structured output, n choices and a tool loop cost or save, each against a baseline run here.

Three measurements, in one run:
    JSON schema     decode tok/s of a reply under a JSON schema (llguidance's mask in the logits) vs the same
                    chat prompt unconstrained, generating exactly as many tokens (max_tokens = the constrained
                    reply's count, ignore_eos). Greedy, no penalties; schemas that make the model write a fair
                    number of tokens (arrays of 8-12 short strings, nested objects). The two sides alternate
                    (constrained, plain, constrained, plain ...), each from an empty cache; medians and the
                    median of paired ratios. Also the constraint's compile time, timed as Scheduler.submit of
                    the request (where it compiles): the first constrained request of the engine (llguidance's
                    tokenizer is built then), the first request of each further schema, and a cached one.
    n=4             Parley.samples(prompt, n=4) (the prompt read once, four forks decoded side by side) vs four
                    requests of the same prompt one after another (what a client without n sends), the same
                    total tokens (ignore_eos, n_gen each, temperature 0.8, choice i seeded seed + i on both
                    sides); also four separate requests submitted at once (no target). Each run has a fresh
                    ~600-token story prompt and starts from an empty cache (requests 2-4 of the sequential side
                    do find the first one's prompt in the cache, as they would on a real server: the data
                    records each request's cached tokens).
    tool loop       an agent loop over HTTP (`parley serve`, POST /v1/chat/completions with `tools` and a named
                    `tool_choice`): the model calls a tool, the client appends the assistant message with its
                    tool_calls and a role "tool" message with the result, 5 rounds. Prefilled tokens = sum of
                    usage.prompt_tokens - prompt_tokens_details.cached_tokens; the baseline is the sum of
                    prompt_tokens, what a server without a KV cache reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from parley.bench.common import (
    BenchContext,
    Row,
    ScenarioResult,
    Timed,
    greedy,
    median,
    now,
    settle,
    timed_stream,
)
from parley.bench.content import story_tokens

WHAT = ("JSON-schema decode tok/s vs unconstrained, n=4 vs four requests, a 5-round tool loop's prefilled "
        "tokens vs re-reading the history")
N_CTX = 4096


@dataclass(frozen=True)
class Sizes:
    schemas: int        # how many of SCHEMAS are measured
    reps: int           # constrained / plain pairs per schema
    max_json: int       # max_tokens of a constrained reply
    n_prompt: int       # prompt tokens of the n=4 runs
    n_gen: int          # tokens of each of the 4 choices
    n_reps: int         # repetitions of each n=4 side
    rounds: int         # rounds of the tool loop


FULL = Sizes(schemas=3, reps=3, max_json=320, n_prompt=600, n_gen=48, n_reps=3, rounds=5)
QUICK = Sizes(schemas=2, reps=2, max_json=200, n_prompt=600, n_gen=48, n_reps=1, rounds=5)

_SHORT = {"type": "string", "maxLength": 16}
SCHEMAS: list[tuple[str, str, dict]] = [
    ("packing list", "List what to pack for a week of hiking in the mountains, as JSON.", {
        "type": "object", "properties": {
            "trip": {"type": "string", "maxLength": 40},
            "items": {"type": "array", "items": _SHORT, "minItems": 10, "maxItems": 12},
            "days": {"type": "integer", "minimum": 1, "maximum": 14}},
        "required": ["trip", "items", "days"]}),
    ("book", "Describe a made-up adventure book as JSON: its author, chapters and tags.", {
        "type": "object", "properties": {
            "title": {"type": "string", "maxLength": 40},
            "author": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 24},
                                                        "country": {"type": "string", "maxLength": 20}},
                       "required": ["name", "country"]},
            "chapters": {"type": "array", "minItems": 3, "maxItems": 4, "items": {
                "type": "object", "properties": {"title": {"type": "string", "maxLength": 24},
                                                 "pages": {"type": "integer", "minimum": 1, "maximum": 99}},
                "required": ["title", "pages"]}},
            "tags": {"type": "array", "items": _SHORT, "minItems": 8, "maxItems": 10}},
        "required": ["title", "author", "chapters", "tags"]}),
    ("city guide", "Write a short city guide for Lisbon as JSON.", {
        "type": "object", "properties": {
            "city": {"type": "string", "maxLength": 20},
            "sights": {"type": "array", "items": _SHORT, "minItems": 8, "maxItems": 10},
            "food": {"type": "array", "items": _SHORT, "minItems": 8, "maxItems": 10},
            "transport": {"type": "object", "properties": {"metro": {"type": "boolean"},
                                                           "tram_lines": {"type": "integer", "minimum": 0,
                                                                          "maximum": 30}},
                          "required": ["metro", "tram_lines"]}},
        "required": ["city", "sights", "food", "transport"]}),
]


# ---- 1. decode under a JSON schema -------------------------------------------------------------------------
def _timed_submit(parley, tokens, params) -> tuple[Timed, float, object]:
    """A request timed from before submission; also how long submission itself took (a grammar compiles there)."""
    sched = parley.scheduler
    sched.drop_cached(save=False)
    settle()
    t0 = now()
    stream = sched.stream(tokens, params)
    submit_s = now() - t0
    t = timed_stream(stream, t0, "constrained bench request")
    return t, submit_s, stream.result


def measure_schemas(parley, sz: Sizes, log) -> dict:
    from parley.sampling import Grammar

    out: dict = {"schemas": [], "compile": {}}
    first_submit = None
    for k, (name, ask, schema) in enumerate(SCHEMAS[:sz.schemas]):
        prompt = parley.chat_prompt([{"role": "user", "content": ask}], max_tokens=sz.max_json).tokens
        grammar = Grammar("json_schema", json.dumps(schema))
        cons = greedy(sz.max_json).replace(grammar=grammar)
        entry: dict = {"name": name, "prompt_tokens": len(prompt), "constrained": [], "plain": [],
                       "submit_s": []}
        n_tokens = None
        for r in range(sz.reps):
            t, submit_s, result = _timed_submit(parley, prompt, cons)
            entry["constrained"].append(t)
            entry["submit_s"].append(submit_s)
            if r == 0:
                if k == 0:
                    first_submit = submit_s
                else:
                    out["compile"].setdefault("new_schema_s", []).append(submit_s)
                n_tokens = t.generated
                entry["finish_reason"] = result.finish_reason
                try:
                    json.loads(result.text)
                    entry["parses"] = True
                except ValueError:
                    entry["parses"] = False
                entry["text"] = result.text
            else:
                out["compile"].setdefault("cached_s", []).append(submit_s)
            if t.generated != n_tokens:
                entry.setdefault("lengths_differ", []).append(t.generated)
            plain = greedy(t.generated).replace(ignore_eos=True)   # the same number of tokens, unconstrained
            p, _, _ = _timed_submit(parley, prompt, plain)
            if p.generated != t.generated:
                raise RuntimeError(f"{name}: the plain run wrote {p.generated} tokens, not {t.generated}")
            entry["plain"].append(p)
            log(f"constrained: {name} {r + 1}/{sz.reps}: {t.generated} tokens, {t.decode_tps:.1f} tok/s with the "
                f"schema, {p.decode_tps:.1f} tok/s without")
        entry["tokens"] = n_tokens
        out["schemas"].append(entry)
    out["compile"]["first_s"] = first_submit
    return out


# ---- 2. n=4 vs four requests -------------------------------------------------------------------------------
def measure_n(parley, sz: Sizes, seed: int, log) -> dict:
    from parley.sampling import SamplingParams

    n = 4
    sched = parley.scheduler
    tok = parley.engine.tokenize
    base = SamplingParams(temperature=0.8, max_tokens=sz.n_gen, ignore_eos=True, seed=seed)
    each = [base.replace(seed=seed + i) for i in range(n)]

    def samples(prompt):
        return [s.wait() for s in parley.samples(prompt, base, n=n)]

    def sequential(prompt):
        return [parley.generate(prompt, each[i]).wait() for i in range(n)]

    def rereading(prompt):   # a server without a prefix cache: each request reads the prompt itself
        out = []
        for i in range(n):
            sched.drop_cached(save=False)
            out.append(parley.generate(prompt, each[i]).wait())
        return out

    def concurrent(prompt):
        streams = [parley.generate(prompt, each[i]) for i in range(n)]
        return [s.wait() for s in streams]

    sides = {"samples": samples, "sequential": sequential, "rereading": rereading, "concurrent": concurrent}
    runs: dict[str, list[dict]] = {k: [] for k in sides}
    fresh = iter(range(10_000))
    for fn in sides.values():   # warm-up, not counted
        sched.drop_cached(save=False)
        fn(story_tokens(seed + 900_000 + next(fresh), 64, lambda s: tok(s, add_bos=False)))
    order = list(sides)
    for r in range(sz.n_reps):
        for name in order[r % len(order):] + order[:r % len(order)]:
            prompt = story_tokens(seed + 100_000 + next(fresh), sz.n_prompt, lambda s: tok(s, add_bos=False))
            sched.drop_cached(save=False)
            settle()
            t0 = now()
            results = sides[name](prompt)
            wall = now() - t0
            for res in results:
                if res.finish_reason == "error":
                    raise RuntimeError(f"n=4 bench, {name}: {res.error}")
            gen = [res.generated_tokens for res in results]
            if gen != [sz.n_gen] * n:
                raise RuntimeError(f"n=4 bench, {name}: generated {gen} tokens, not {sz.n_gen} each")
            runs[name].append({"wall_s": wall, "tokens": sum(gen), "tps": sum(gen) / wall,
                               "prompt_tokens": len(prompt), "first_ttft_s": results[0].ttft_s,
                               "cached_tokens": [res.cached_tokens for res in results],
                               "prefilled_tokens": [res.prefilled_tokens for res in results],
                               "distinct_replies": len({tuple(res.token_ids) for res in results})})
            log(f"constrained: n=4 {r + 1}/{sz.n_reps}, {name}: {wall:.2f} s for {sum(gen)} tokens, prefilled "
                f"{sum(runs[name][-1]['prefilled_tokens'])} prompt tokens")
    return runs


# ---- 3. a tool loop over HTTP ------------------------------------------------------------------------------
TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "The weather forecast for a city on a given day.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "maxLength": 20},
            "day": {"type": "integer", "minimum": 1, "maximum": 7},
            "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "day", "unit"]}}},
    {"type": "function", "function": {
        "name": "find_hotels", "description": "Hotels in a city under a price per night.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "maxLength": 20},
            "max_price": {"type": "integer", "minimum": 10, "maximum": 1000}},
            "required": ["city", "max_price"]}}},
    {"type": "function", "function": {
        "name": "convert_currency", "description": "Convert an amount between two currencies.",
        "parameters": {"type": "object", "properties": {
            "amount": {"type": "number"}, "from": {"type": "string", "maxLength": 3},
            "to": {"type": "string", "maxLength": 3}},
            "required": ["amount", "from", "to"]}}},
]
SYSTEM = ("You are a travel planner. Use the tools to check the weather for every day of the trip before you "
          "answer, one call at a time.")
ASK = "I am going to {city} for five days next week. What will the weather be like each day?"
FORECASTS = ["light rain, 9 C, wind from the west", "cloudy, 11 C, dry", "sunny spells, 14 C, light breeze",
             "showers in the afternoon, 10 C", "clear and cold, 6 C, frost at night"]


def tool_result(name: str, args: dict, round_: int) -> str:
    if name == "get_weather":
        return json.dumps({"city": args.get("city"), "day": args.get("day"), "forecast": FORECASTS[round_ % 5]})
    if name == "find_hotels":
        return json.dumps({"hotels": [{"name": "Fjord Inn", "price": 120}, {"name": "Harbour Rooms", "price": 95}]})
    return json.dumps({"amount": 42.0})


def tool_loop(url: str, rounds: int, city: str, log) -> list[dict]:
    import httpx

    messages: list[dict] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": ASK.format(city=city)}]
    out = []
    with httpx.Client(timeout=httpx.Timeout(600.0)) as client:
        for r in range(rounds):
            body = {"model": "parley", "messages": messages, "tools": TOOLS, "temperature": 0, "max_tokens": 60,
                    "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
            settle()
            t0 = now()
            resp = client.post(url + "/v1/chat/completions", json=body)
            total = now() - t0
            if resp.status_code != 200:
                raise RuntimeError(f"tool loop round {r + 1}: {resp.status_code} {resp.text[:300]}")
            doc = resp.json()
            usage = doc["usage"]
            message = doc["choices"][0]["message"]
            calls = message.get("tool_calls") or []
            if not calls:
                raise RuntimeError(f"tool loop round {r + 1}: no tool call in {message!r}")
            cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
            call = calls[0]
            args = json.loads(call["function"]["arguments"])
            messages.append({"role": "assistant", "content": message.get("content"), "tool_calls": calls})
            messages.append({"role": "tool", "tool_call_id": call["id"],
                             "content": tool_result(call["function"]["name"], args, r)})
            out.append({"round": r + 1, "prompt_tokens": usage["prompt_tokens"], "cached_tokens": cached,
                        "prefilled_tokens": usage["prompt_tokens"] - cached,
                        "completion_tokens": usage.get("completion_tokens"), "total_s": total,
                        "finish_reason": doc["choices"][0].get("finish_reason"),
                        "call": {"name": call["function"]["name"], "arguments": args}})
            log(f"constrained: tool loop ({city}) round {r + 1}/{rounds}: {usage['prompt_tokens']} prompt tokens, "
                f"{cached} cached, {total * 1000:.0f} ms")
    return out


# ---- the scenario ------------------------------------------------------------------------------------------
def run(ctx: BenchContext) -> ScenarioResult:
    from parley.api import Parley
    from parley.bench.servers import start_parley

    sz = QUICK if ctx.quick else FULL
    res = ScenarioResult("constrained", WHAT, config={
        "schemas": [s[0] for s in SCHEMAS[:sz.schemas]], "schema_pairs_each": sz.reps,
        "max_json_tokens": sz.max_json, "n_prompt_tokens": sz.n_prompt, "n_gen_tokens_each": sz.n_gen,
        "n_repetitions": sz.n_reps, "tool_rounds": sz.rounds, "n_ctx": N_CTX, "threads": ctx.threads,
        "sampling": "schemas and tool loop: temperature 0, no penalties; n=4: temperature 0.8, ignore_eos"})
    parley = Parley(ctx.model, threads=ctx.threads, kv_size=N_CTX, disk_cache_mb=0, ram_cache_mb=0)
    try:
        parley.scheduler.generate(parley.engine.tokenize("Warm-up: count to three."), greedy(4))
        schemas = measure_schemas(parley, sz, ctx.log)
        n_runs = measure_n(parley, sz, ctx.seed, ctx.log)
    finally:
        parley.close(save=False)
    server = start_parley(ctx, N_CTX, 4)
    try:
        server.wait_ready()
        loop = tool_loop(server.url, sz.rounds, "Oslo", ctx.log)
        # the same agent's next task: its system message and tools block are the first one's
        loop2 = tool_loop(server.url, sz.rounds, "Lisbon", ctx.log)
    finally:
        server.stop()

    # 1. schemas
    cons = [t for e in schemas["schemas"] for t in e["constrained"]]
    plain = [t for e in schemas["schemas"] for t in e["plain"]]
    comp = schemas["compile"]
    bad = [e["name"] for e in schemas["schemas"] if not e["parses"] or e["finish_reason"] != "stop"]
    if bad:
        res.notes.append(f"constrained replies that did not close as JSON within max_tokens: {bad}")
    # 2. n=4
    med_n = {k: median([x["wall_s"] for x in v]) for k, v in n_runs.items()}
    # 3. tool loop
    sent = sum(x["prompt_tokens"] for x in loop)
    prefilled = sum(x["prefilled_tokens"] for x in loop)
    sent2 = sum(x["prompt_tokens"] for x in loop2)
    prefilled2 = sum(x["prefilled_tokens"] for x in loop2)

    res.data = {
        "schemas": [{**{k: v for k, v in e.items() if k not in ("constrained", "plain")},
                     "constrained": [t.as_dict() for t in e["constrained"]],
                     "plain": [t.as_dict() for t in e["plain"]]} for e in schemas["schemas"]],
        "compile": comp,
        "n4": {"runs": n_runs, "median_wall_s": med_n},
        "tool_loop": {"rounds": loop, "prompt_tokens": sent, "prefilled_tokens": prefilled},
        "tool_loop_second_task": {"rounds": loop2, "prompt_tokens": sent2, "prefilled_tokens": prefilled2},
    }
    res.rows = [
        Row("decode tok/s under a JSON schema", "tok/s", median([t.decode_tps for t in cons]),
            "unconstrained, same tokens", median([t.decode_tps for t in plain]), target=0.9,
            pairs=[(a.decode_tps, b.decode_tps) for a, b in zip(cons, plain, strict=True)],
            note=f"{len(cons)} pairs over {len(schemas['schemas'])} schemas, "
                 f"{'/'.join(str(e['tokens']) for e in schemas['schemas'])} tokens"),
        Row("constraint compile at submit, cached", "s", median(comp.get("cached_s", [])),
            "first constrained request (cold, tokenizer built)", comp["first_s"], False),
    ]
    if comp.get("new_schema_s"):
        res.rows.append(Row("constraint compile at submit, cached", "s", median(comp.get("cached_s", [])),
                            "a new schema's first request", median(comp["new_schema_s"]), False))
    def n_row(base: str, name: str, **kw) -> Row:
        return Row(f"n=4 x {sz.n_gen} tokens, {sz.n_prompt}-token prompt: wall", "s", med_n["samples"], name,
                   med_n[base], False, pairs=[(a["wall_s"], b["wall_s"]) for a, b in
                                              zip(n_runs["samples"], n_runs[base], strict=True)], **kw)

    res.rows += [
        n_row("sequential", "4 requests one after another (2-4 from the prefix cache)", target=2),
        n_row("rereading", "4 requests one after another, each reading the prompt", target=2),
        n_row("concurrent", "4 separate requests at once"),
        Row(f"{len(loop)}-round tool loop: prompt tokens prefilled", "tok", prefilled,
            "re-reading the history (no KV cache)", sent, False, target=5,
            note="sum of prompt_tokens - cached_tokens vs sum of prompt_tokens, over HTTP"),
        Row(f"{len(loop2)}-round tool loop, the agent's next task: prompt tokens prefilled", "tok", prefilled2,
            "re-reading the history (no KV cache)", sent2, False,
            note="a second conversation with the same system message and tools: its first round finds them cached"),
    ]
    read = median([x["first_ttft_s"] for x in n_runs["sequential"]])
    res.notes.append(
        f"n=4: the sequential side reads the {sz.n_prompt}-token prompt once too (its first request: "
        f"{read * 1000:.0f} ms to the first token) and requests 2-4 find it in the cache, so even an n=4 that "
        f"took no time past that read would be at most {med_n['sequential'] / read:.2f}x faster than it")
    return res
