"""upstream: `parley serve --upstream URL` in front of llama.cpp's llama-server against calling the same
llama-server directly (issue #20), both in the same run, the requests alternating between the two ways in.

One llama-server (built as `peer` builds it; -np 4, 16k context) and one `parley serve --upstream` on it, which
tokenizes with the same GGUF and runs no model of its own. The same OpenAI chat requests go either straight to
llama-server or through parley (each side's with its name in them, so neither finds the other's in the cache).
Twice: on shared cores (llama-server with 2 threads beside parley, as on one machine), and with llama-server on
core 0 with one thread and parley and the clients on core 1 (as an upstream on a machine of its own):

    one stream          decode tok/s of one streamed reply                                  (target >= 0.95x)
    8 clients           aggregate decode tok/s of 8 streams sent at once                    (target >= 0.95x)
    first token         TTFT of a short new prompt (what parley's tokenizing and HTTP hop add)
    returning chat      a multi-turn chat with a persona: TTFT of its later turns, and the share of their prompt
                        llama-server reported cached when parley sent it (target >= 80%)
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from dataclasses import dataclass

from parley.bench.common import SETTLE_S, BenchContext, Row, ScenarioResult, median, now, rotate
from parley.bench.content import persona, story_request, user_turns
from parley.bench.peer import N_CTX, Timed, start_llama_server
from parley.bench.servers import ServerProcess, free_port, stream_chat

WHAT = ("parley serve --upstream in front of llama-server vs llama-server called directly, alternating: one "
        "stream, 8 clients, a first token, a returning chat's cached share")
SIDES = ("parley", "direct")
# llama-server gives each open connection a thread, its slots + 2 of them by default, and a kept-alive idle one
# holds its thread: parley's connections and the direct clients' would take each other's, so both fit here
HTTP_THREADS = ("--threads-http", "32")


@dataclass(frozen=True)
class Sizes:
    stream_tokens: int
    stream_reps: int
    clients: int
    client_tokens: int
    burst_reps: int
    first_reps: int
    turns: int
    persona_tokens: int
    reply_tokens: int


FULL = Sizes(stream_tokens=200, stream_reps=4, clients=8, client_tokens=128, burst_reps=2, first_reps=6,
             turns=8, persona_tokens=400, reply_tokens=32)
QUICK = Sizes(stream_tokens=64, stream_reps=2, clients=8, client_tokens=32, burst_reps=1, first_reps=3,
              turns=4, persona_tokens=150, reply_tokens=12)


def start_front(ctx: BenchContext, upstream: str, prefix: tuple[str, ...] = ()) -> ServerProcess:
    port = free_port()
    home = ctx.home / "front"
    home.mkdir(exist_ok=True)
    argv = [*prefix, sys.executable, "-m", "parley.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port),
            "-m", str(ctx.model), "--upstream", upstream, "--home", str(home)]
    return ServerProcess("parley serve --upstream", argv, port, ctx.home / "parley-front.log")


async def chat(client, url: str, messages: list[dict], max_tokens: int, count, t0: float | None = None):
    """A streamed chat completion (greedy) -> (Timed, the usage its last chunk reported)."""
    r = await stream_chat(client, url, messages, max_tokens, t0, extra={
        "cache_prompt": True, "stream_options": {"include_usage": True}})
    return Timed(r.ttft_s, r.total_s, count(r.text), r.text), r.usage


async def measure(urls: dict[str, str], sz: Sizes, tokenize, count, log) -> dict:
    import httpx

    out: dict[str, dict[str, list]] = {name: {} for name in urls}

    def put(name: str, what: str, value) -> None:
        out[name].setdefault(what, []).append(value)

    async with httpx.AsyncClient(timeout=httpx.Timeout(900.0)) as client:
        for url in urls.values():      # warm-up, not counted
            await chat(client, url, [{"role": "user", "content": "Hello."}], 4, count)
        for r in range(sz.stream_reps):
            for name in rotate(list(urls), r):
                await asyncio.sleep(SETTLE_S)
                t, _ = await chat(client, urls[name], [{"role": "user", "content": f"{story_request(r)} ({name} {r})"}],
                                  sz.stream_tokens, count)
                put(name, "one stream", t)
                log(f"upstream: one stream {r + 1}/{sz.stream_reps}, {name}: {t.decode_tps or 0:.1f} tok/s")
        for r in range(sz.burst_reps):
            for name in rotate(list(urls), r):
                await asyncio.sleep(SETTLE_S)
                t0 = now()
                reps = await asyncio.gather(*(chat(client, urls[name], [{"role": "user", "content":
                                                   f"{story_request(j)} ({name} {r})"}], sz.client_tokens,
                                                   count, t0)
                                              for j in range(sz.clients)))
                wall, first = max(x.total_s for x, _ in reps), min(x.ttft_s for x, _ in reps)
                agg = (sum(x.tokens for x, _ in reps) - 1) / (wall - first)
                put(name, "8 clients", agg)
                log(f"upstream: {sz.clients} clients {r + 1}/{sz.burst_reps}, {name}: {agg:.1f} tok/s aggregate")
        for r in range(sz.first_reps):
            for name in rotate(list(urls), r):
                await asyncio.sleep(SETTLE_S)
                t, _ = await chat(client, urls[name], [{"role": "user", "content": f"Say a word. ({name} {r})"}], 1, count)
                put(name, "first token", t)
        histories = {name: [{"role": "system", "content": persona(60 + k, sz.persona_tokens, tokenize)}]
                     for k, name in enumerate(urls)}   # a persona each: neither reads the other's from the cache
        for k, text in enumerate(user_turns(60, sz.turns)):
            for name in rotate(list(urls), k):
                h = histories[name]
                h.append({"role": "user", "content": text})
                await asyncio.sleep(SETTLE_S)
                t, usage = await chat(client, urls[name], h, sz.reply_tokens, count)
                h.append({"role": "assistant", "content": t.text})
                if k:
                    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
                    put(name, "returning chat", {"ttft_s": t.ttft_s, "cached": cached,
                                                 "prompt": usage.get("prompt_tokens") or 0})
            log(f"upstream: chat turn {k + 1}/{sz.turns}")
    return out


def placements(ctx: BenchContext) -> list[tuple[str, int, tuple[str, ...], tuple[str, ...], set[int] | None]]:
    """(label, llama-server threads, its command prefix, the front's, this process's cores) per placement: both
    on every core (as one machine runs them), and, with 2 cores or more, llama-server on core 0 with one thread
    and parley and the clients on core 1 (as an upstream on a machine of its own: parley's work no longer takes
    the upstream's cores)."""
    out: list = [("shared cores", ctx.threads, (), (), None)]
    try:
        cores = sorted(os.sched_getaffinity(0))
    except AttributeError:     # pragma: no cover
        cores = []
    if len(cores) >= 2 and shutil.which("taskset"):
        a, b = str(cores[0]), str(cores[1])
        out.append(("upstream on its own core", 1, ("taskset", "-c", a), ("taskset", "-c", b), {cores[1]}))
    return out


def run(ctx: BenchContext) -> ScenarioResult:
    from parley.bench import llama_server_build
    from parley.engine.llamacpp import EngineConfig, LlamaCppEngine

    binary = llama_server_build.binary() or llama_server_build.build(ctx.log)
    sz = QUICK if ctx.quick else FULL
    where = placements(ctx)
    res = ScenarioResult("upstream", WHAT, config={
        "n_ctx": N_CTX, "threads": ctx.threads, "llama_server": str(binary),
        "llama_server_flags": "-np 4 --cache-ram 1024 -b 512 -ub 512 " + " ".join(HTTP_THREADS), "parley_flags": "--upstream URL",
        "placements": [w[0] for w in where], "sampling": "temperature 0",
        **{k: getattr(sz, k) for k in sz.__dataclass_fields__}})
    vocab = LlamaCppEngine(EngineConfig(model_path=ctx.model, n_ctx=16, n_batch=1, n_seq_max=1, n_threads=1))

    def tokenize(text: str) -> list[int]:
        return vocab.tokenize(text, special=False) if text else []

    runs: dict[str, dict] = {}
    mine = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        for label, threads, backend_prefix, front_prefix, cores in where:
            servers: list[ServerProcess] = []
            try:
                backend = start_llama_server(ctx, binary, N_CTX, threads=threads, prefix=backend_prefix,
                                             extra=HTTP_THREADS)
                servers.append(backend)
                backend.wait_ready("/health")
                front = start_front(ctx, backend.url, front_prefix)
                servers.append(front)
                front.wait_ready()
                if cores is not None:
                    os.sched_setaffinity(0, cores)
                ctx.log(f"upstream: {label}")
                runs[label] = asyncio.run(measure({"parley": front.url, "direct": backend.url}, sz, tokenize,
                                                  lambda t: len(tokenize(t)), ctx.log))
            finally:
                if mine is not None:
                    os.sched_setaffinity(0, mine)
                for s in reversed(servers):
                    s.stop()
    finally:
        vocab.close()

    res.data = {label: {name: {what: [x if isinstance(x, (dict, float)) else
                                      {"ttft_s": x.ttft_s, "total_s": x.total_s, "tokens": x.tokens} for x in xs]
                               for what, xs in r.items()} for name, r in run_.items()}
                for label, run_ in runs.items()}
    base = "llama-server directly"
    for label, run_ in runs.items():
        P, D = run_["parley"], run_["direct"]
        tag = f", {label}"
        p1, d1 = [x.decode_tps for x in P["one stream"]], [x.decode_tps for x in D["one stream"]]
        pf, df = [x.ttft_s for x in P["first token"]], [x.ttft_s for x in D["first token"]]
        pc, dc = [x["ttft_s"] for x in P["returning chat"]], [x["ttft_s"] for x in D["returning chat"]]
        res.rows += [
            Row(f"decode tok/s, one stream ({sz.stream_tokens} tokens){tag}", "tok/s", median([x for x in p1 if x]),
                base, median([x for x in d1 if x]), target=0.95,
                pairs=[(x, y) for x, y in zip(p1, d1, strict=True) if x and y]),
            Row(f"aggregate decode tok/s, {sz.clients} clients{tag}", "tok/s", median(P["8 clients"]), base,
                median(D["8 clients"]), target=0.95, pairs=list(zip(P["8 clients"], D["8 clients"], strict=True))),
            Row(f"TTFT, a short new prompt{tag}", "s", median(pf), base, median(df), False,
                pairs=list(zip(pf, df, strict=True)), note="what parley's tokenizing and its HTTP hop add"),
            Row(f"TTFT, chat turns 2-{sz.turns} ({sz.persona_tokens}-token persona){tag}", "s", median(pc), base,
                median(dc), False, pairs=list(zip(pc, dc, strict=True))),
        ]
        share = sum(x["cached"] for x in P["returning chat"]) / max(1, sum(x["prompt"] for x in P["returning chat"]))
        direct = sum(x["cached"] for x in D["returning chat"]) / max(1, sum(x["prompt"] for x in D["returning chat"]))
        res.rows.append(Row(f"prompt share cached upstream, chat turns 2 on{tag}", "%", round(100 * share, 1),
                            "direct's own share", round(100 * direct, 1), note="target: >= 80% through parley"))
        res.notes.append(f"{label}: through parley, llama-server reported {share:.1%} of the later chat turns' "
                         f"prompt tokens cached (target >= 80%: {'met' if share >= 0.8 else 'missed'}); called "
                         f"directly, {direct:.1%}")
    return res
