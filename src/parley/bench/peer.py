"""peer: `parley serve` against llama.cpp's own `llama-server`, the server people actually run (issue #19).

Both servers are up at once on 127.0.0.1 with the same GGUF, threads and context (16k); llama-server is built
from the llama.cpp that parley's llama-cpp-python vendors (llama_server_build.py) and run as a user would:
`-np 4 --cache-ram 1024` (four slots, a 1 GiB host-RAM prompt cache), its other defaults kept. Every request
is the same OpenAI /v1/chat/completions body to both (greedy, `"cache_prompt": true`, streamed), and each
measurement alternates between the servers, the order rotating per repetition, so the machine's drift hits
both sides alike. Generated tokens are counted with the model's own vocabulary (the same count for both).

    one stream, fresh            decode tok/s of a long reply, (tokens - 1) / (last token - first token), on
                                 servers that have served nothing but a warm-up
    cold prompt                  TTFT of a ~1,100-token prompt nothing has seen (one token asked)
    multi-turn, last turn        TTFT of the last turn of an 8-turn chat (each turn sends the whole history)
    returning conversation       12 conversations with their own ~300-token system prompts take turns: the
                                 TTFT of a conversation coming back after the 11 others (its KV evicted
                                 to RAM, or still in a slot)
    8 clients, 32 clients        aggregate decode tok/s of 8 (32) streams sent at once (llama-server serves 4
                                 at a time and queues the rest)
    a document                   a ~3,000-token document (a llama-server slot holds 4,096) with a question: the first question's TTFT (the
                                 document read), then the TTFT of other questions about it
    persona chat                 a ~1,500-token character card as the system prompt, 6 turns: TTFT of turns 2-6
    one stream, after            the fresh stream again, once the conversations above have run
    after a restart              both servers restarted (parley saves its KV cache to disk on SIGTERM;
                                 llama-server keeps nothing): the TTFT of the next turn of a conversation
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from parley.bench.common import SETTLE_S, BenchContext, Row, ScenarioResult, median, now, rotate
from parley.bench.content import narrative, persona, story_request, user_turns
from parley.bench.servers import ServerProcess, free_port, start_parley, stream_chat

WHAT = ("parley serve vs llama.cpp's llama-server, both up, alternating: one stream, a cold prompt, multi-turn, "
        "rotating conversations, 8 and 32 clients, a document, a persona chat, a restart")
N_CTX = 16384
SIDES = ("parley", "llama_server")


@dataclass(frozen=True)
class Sizes:
    stream_tokens: int
    stream_reps: int
    cold_tokens: int
    cold_reps: int
    turns: int
    reply_tokens: int
    conversations: int
    rounds: int
    persona_tokens: int
    clients: int
    client_tokens: int
    burst_reps: int
    many_clients: int
    many_tokens: int
    doc_tokens: int
    doc_questions: int
    card_tokens: int
    card_turns: int


FULL = Sizes(stream_tokens=200, stream_reps=5, cold_tokens=1100, cold_reps=3, turns=8, reply_tokens=32,
             conversations=12, rounds=3, persona_tokens=300, clients=8, client_tokens=128, burst_reps=3,
             many_clients=32, many_tokens=64, doc_tokens=3000, doc_questions=4, card_tokens=1500, card_turns=6)
QUICK = Sizes(stream_tokens=64, stream_reps=2, cold_tokens=400, cold_reps=1, turns=4, reply_tokens=12,
              conversations=6, rounds=2, persona_tokens=150, clients=8, client_tokens=32, burst_reps=1,
              many_clients=32, many_tokens=8, doc_tokens=800, doc_questions=2, card_tokens=400, card_turns=3)
QUESTIONS = ("Who is named first?", "Which place comes up most often?", "What was repaired, and by whom?",
             "Summarize the text in one sentence.", "Who keeps a lantern?", "What happened after the flood?")


def start_llama_server(ctx: BenchContext, binary, n_ctx: int, *, threads: int | None = None,
                       prefix: tuple[str, ...] = (), extra: tuple[str, ...] = ()) -> ServerProcess:
    """llama-server as a user runs it; `threads` (default: the run's), `prefix`: a command it runs under
    (taskset), `extra`: more flags."""
    port = free_port()
    t = str(threads or ctx.threads)
    argv = [*prefix, str(binary), "-m", str(ctx.model), "--host", "127.0.0.1", "--port", str(port),
            "-t", t, "-tb", t, "-c", str(n_ctx), "-np", "4", "--cache-ram", "1024",
            "-b", "512", "-ub", "512", "--no-webui", *extra]
    return ServerProcess("llama-server", argv, port, ctx.home / "llama-cpp-server.log")


@dataclass
class Timed:
    ttft_s: float
    total_s: float
    tokens: int
    text: str

    @property
    def decode_tps(self) -> float | None:
        span = self.total_s - self.ttft_s
        return (self.tokens - 1) / span if self.tokens > 1 and span > 0 else None


class Side:
    """One server, spoken to as an OpenAI client speaks (the same body for both)."""

    def __init__(self, name: str, server: ServerProcess, count):
        self.name, self.server, self.count = name, server, count

    async def chat(self, client, messages: list[dict], max_tokens: int, t0: float | None = None) -> Timed:
        r = await stream_chat(client, self.server.url, messages, max_tokens, t0, extra={"cache_prompt": True})
        return Timed(r.ttft_s, r.total_s, self.count(r.text), r.text)


async def measure(sides: dict[str, Side], sz: Sizes, tokenize, log, restart) -> dict:
    import httpx

    out: dict[str, dict[str, list]] = {name: {} for name in sides}

    def put(name: str, what: str, value) -> None:
        out[name].setdefault(what, []).append(value)

    async def alternate(what: str, reps: int, one, fmt=lambda t: f"{t.ttft_s * 1000:.0f} ms") -> None:
        for r in range(reps):
            for name in rotate(list(sides), r):
                await asyncio.sleep(SETTLE_S)
                t = await one(sides[name], r)
                put(name, what, t)
                log(f"peer: {what} {r + 1}/{reps}, {name}: {fmt(t)}")

    tps = lambda t: f"{t.decode_tps or 0:.1f} tok/s"   # noqa: E731
    async with httpx.AsyncClient(timeout=httpx.Timeout(900.0)) as client:
        for s in sides.values():   # warm-up, not counted
            await s.chat(client, [{"role": "user", "content": "Hello."}], 4)

        def stream(tag: str):
            return lambda s, r: s.chat(client, [{"role": "user", "content": f"{story_request(r)} ({tag} {r})"}],
                                       sz.stream_tokens)
        await alternate("one stream, fresh", sz.stream_reps, stream("fresh"), tps)

        def cold(s, r):
            seed = 900 + r       # a prompt neither server has seen
            text, n = "", 8
            while len(tokenize(text)) < sz.cold_tokens:
                n += 8
                text = narrative(seed, n)
            return s.chat(client, [{"role": "user", "content": f"{text}\nWho is named first?"}], 1)
        await alternate("cold prompt", sz.cold_reps, cold)

        # multi-turn: the same turns on both, interleaved turn by turn
        histories = {name: [{"role": "system", "content": persona(50, sz.persona_tokens, tokenize)}]
                     for name in sides}
        for k, text in enumerate(user_turns(50, sz.turns)):
            for name in rotate(list(sides), k):
                h = histories[name]
                h.append({"role": "user", "content": text})
                await asyncio.sleep(SETTLE_S)
                t = await sides[name].chat(client, h, sz.reply_tokens)
                h.append({"role": "assistant", "content": t.text})
                if k == sz.turns - 1:
                    put(name, "multi-turn, last turn", t)
                    log(f"peer: multi-turn turn {k + 1}, {name}: {t.ttft_s * 1000:.0f} ms")

        # rotating conversations: each comes back after all the others had a turn
        convs = {name: [[{"role": "system", "content": persona(100 + c, sz.persona_tokens, tokenize)}]
                        for c in range(sz.conversations)] for name in sides}
        turns = user_turns(100, sz.rounds * sz.conversations)
        for rnd in range(sz.rounds):
            for c in range(sz.conversations):
                for name in rotate(list(sides), rnd * sz.conversations + c):
                    h = convs[name][c]
                    h.append({"role": "user", "content": turns[rnd * sz.conversations + c]})
                    await asyncio.sleep(SETTLE_S)
                    t = await sides[name].chat(client, h, sz.reply_tokens)
                    h.append({"role": "assistant", "content": t.text})
                    if rnd:
                        put(name, "returning conversation", t)
            log(f"peer: rotating conversations, round {rnd + 1}/{sz.rounds}")

        for what, clients, tokens, reps_n in (("8 clients", sz.clients, sz.client_tokens, sz.burst_reps),
                                               ("32 clients", sz.many_clients, sz.many_tokens, 1)):
            for r in range(reps_n):
                for name in rotate(list(sides), r):
                    await asyncio.sleep(SETTLE_S)
                    t0 = now()
                    reps = await asyncio.gather(*(sides[name].chat(
                        client, [{"role": "user", "content": f"{story_request(j)} ({what} {r})"}], tokens, t0)
                        for j in range(clients)))
                    wall, first = max(x.total_s for x in reps), min(x.ttft_s for x in reps)
                    agg = (sum(x.tokens for x in reps) - 1) / (wall - first)
                    put(name, what, {"aggregate_decode_tps": agg, "first_token_s": first})
                    log(f"peer: {what} {r + 1}/{reps_n}, {name}: {agg:.1f} tok/s aggregate")

        # a document: read once, then asked about again (each question a new request with the whole document)
        doc, n = "", 16
        while len(tokenize(doc)) < sz.doc_tokens:
            n += 16
            doc = narrative(700, n)
        for q in range(sz.doc_questions):
            for name in rotate(list(sides), q):
                await asyncio.sleep(SETTLE_S)
                t = await sides[name].chat(client, [{"role": "user", "content": f"{doc}\n\n{QUESTIONS[q]}"}],
                                           sz.reply_tokens)
                put(name, "document, first question" if q == 0 else "document, later questions", t)
                log(f"peer: document question {q + 1}, {name}: {t.ttft_s * 1000:.0f} ms")

        # a persona chat: a long character card, then short turns
        cards = {name: [{"role": "system", "content": persona(300, sz.card_tokens, tokenize)}] for name in sides}
        for k, text in enumerate(user_turns(300, sz.card_turns)):
            for name in rotate(list(sides), k):
                h = cards[name]
                h.append({"role": "user", "content": text})
                await asyncio.sleep(SETTLE_S)
                t = await sides[name].chat(client, h, sz.reply_tokens)
                h.append({"role": "assistant", "content": t.text})
                if k:
                    put(name, "persona chat", t)
            log(f"peer: persona chat, turn {k + 1}/{sz.card_turns}")

        await alternate("one stream, after", sz.stream_reps, stream("after"), tps)

        # after a restart: the multi-turn chat's next turn
        for name in sides:
            histories[name].append({"role": "user", "content": "And what happened next?"})
        await restart()
        for s in sides.values():        # a request unrelated to the chat first: both servers answer
            await s.chat(client, [{"role": "user", "content": "Hi."}], 2)
        for name in rotate(list(sides), 1):
            await asyncio.sleep(SETTLE_S)
            t = await sides[name].chat(client, histories[name], sz.reply_tokens)
            put(name, "after a restart", t)
            log(f"peer: after a restart, {name}: {t.ttft_s * 1000:.0f} ms")
    return out


def run(ctx: BenchContext) -> ScenarioResult:
    from parley.bench import llama_server_build
    from parley.engine.llamacpp import EngineConfig, LlamaCppEngine

    binary = llama_server_build.binary()
    if binary is None:
        binary = llama_server_build.build(ctx.log)
    sz = QUICK if ctx.quick else FULL
    res = ScenarioResult("peer", WHAT, config={
        "n_ctx": N_CTX, "threads": ctx.threads, "llama_server": str(binary),
        "llama_server_flags": "-np 4 --cache-ram 1024 -b 512 -ub 512", "parley_flags": "--max-running 8",
        "sampling": "temperature 0, cache_prompt true", **{k: getattr(sz, k) for k in sz.__dataclass_fields__}})
    vocab = LlamaCppEngine(EngineConfig(model_path=ctx.model, n_ctx=16, n_batch=1, n_seq_max=1, n_threads=1))

    def tokenize(text: str) -> list[int]:
        return vocab.tokenize(text, special=False) if text else []

    def count(text: str) -> int:
        return len(tokenize(text))

    servers: dict[str, ServerProcess] = {}

    def start() -> dict[str, Side]:
        servers["parley"] = start_parley(ctx, N_CTX, 8, disk_cache_mb=None)
        servers["llama_server"] = start_llama_server(ctx, binary, N_CTX)
        servers["parley"].wait_ready()
        servers["llama_server"].wait_ready("/health")
        return {name: Side(name, servers[name], count) for name in SIDES}

    sides: dict[str, Side] = {}

    async def restart() -> None:
        for s in servers.values():
            s.stop()
        fresh = await asyncio.to_thread(start)
        for name, s in fresh.items():
            sides[name].server = s.server

    try:
        sides.update(start())
        runs = asyncio.run(measure(sides, sz, tokenize, ctx.log, restart))
    finally:
        for s in servers.values():
            s.stop()
        vocab.close()

    P, L = runs["parley"], runs["llama_server"]
    res.data = {name: {what: [x if isinstance(x, dict) else {"ttft_s": x.ttft_s, "total_s": x.total_s,
                                                               "tokens": x.tokens} for x in xs]
                       for what, xs in r.items()} for name, r in runs.items()}
    base = "llama-server"

    def tps_row(what: str, metric: str, target: float) -> Row:
        p = [x.decode_tps for x in P[what]]
        b = [x.decode_tps for x in L[what]]
        return Row(metric, "tok/s", median([x for x in p if x]), base, median([x for x in b if x]), target=target,
                   pairs=[(x, y) for x, y in zip(p, b, strict=True) if x and y])

    def ttft_row(what: str, metric: str, target: float) -> Row:
        p, b = [x.ttft_s for x in P[what]], [x.ttft_s for x in L[what]]
        return Row(metric, "s", median(p), base, median(b), False, target=target, pairs=list(zip(p, b, strict=True)))

    def burst_row(what: str, target: float | None) -> Row:
        p = [x["aggregate_decode_tps"] for x in P[what]]
        b = [x["aggregate_decode_tps"] for x in L[what]]
        first = median([x["first_token_s"] for x in P[what]]), median([x["first_token_s"] for x in L[what]])
        return Row(f"aggregate decode tok/s, {what}", "tok/s", median(p), base, median(b), target=target,
                   pairs=list(zip(p, b, strict=True)),
                   note=f"first token {first[0]:.2f} s vs {first[1]:.2f} s")

    res.rows = [
        tps_row("one stream, fresh", f"decode tok/s, one stream, fresh server ({sz.stream_tokens} tokens)", 1.0),
        tps_row("one stream, after", "decode tok/s, one stream, after the conversations below ran", 1.0),
        ttft_row("cold prompt", f"TTFT, cold {sz.cold_tokens}-token prompt", 0.97),
        ttft_row("multi-turn, last turn", f"TTFT, last turn of a cached {sz.turns}-turn chat", 1.0),
        ttft_row("returning conversation", f"TTFT, a returning conversation among {sz.conversations} rotating",
                 1.0),
        burst_row("8 clients", 1.2),
        burst_row("32 clients", None),
        ttft_row("document, first question", f"TTFT, a {sz.doc_tokens}-token document's first question", 0.97),
        ttft_row("document, later questions", "TTFT, later questions about the document", 1.0),
        ttft_row("persona chat", f"TTFT, persona chat turns 2-{sz.card_turns} ({sz.card_tokens}-token card)", 1.0),
        ttft_row("after a restart", "TTFT, the chat's next turn after both servers restarted", 10.0),
    ]
    return res
