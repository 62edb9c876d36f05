"""concurrent: 8 clients at once over HTTP: aggregate tokens/s and p50/p95 TTFT (issue #3).

Two servers run side by side as subprocesses on 127.0.0.1 with the same model, threads, context and batch:
`parley serve` and llama-cpp-python's `llama_cpp.server` (baseline c). Each client POSTs
/v1/chat/completions with stream=true (greedy, no repeat penalty, `max_tokens` tokens, a story request so
replies run long). A burst sends 8 requests at the same moment; a single stream sends one.
    decode tok/s (one stream)      (tokens - 1) / (its last token - its first token), as in `decode`
    aggregate decode tok/s (burst) (all tokens - 1) / (the burst's last token - its first token)
    aggregate incl. prompts        all tokens / (the burst's last token - the moment it was sent)
Generated tokens are counted by tokenizing the streamed text with the model's own vocabulary (the same count
for both servers). Single and burst runs of both servers interleave, the order rotating per repetition.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from parley.bench.common import SETTLE_S, BenchContext, Row, ScenarioResult, median, now, percentile, rotate
from parley.bench.content import story_request
from parley.bench.servers import Reply, llama_server_available, start_llama_server, start_parley, stream_chat

WHAT = "8 streaming HTTP clients at once: aggregate tok/s and p50/p95 TTFT, parley serve vs llama_cpp.server"
N_CTX = 4096


@dataclass(frozen=True)
class Sizes:
    clients: int
    max_tokens: int
    reps: int


FULL = Sizes(clients=8, max_tokens=128, reps=3)
QUICK = Sizes(clients=8, max_tokens=64, reps=1)


def messages(i: int) -> list[dict]:
    return [{"role": "user", "content": story_request(i)}]


class HttpTarget:
    def __init__(self, name: str, url: str):
        self.name = name
        self.url = url

    async def chat(self, client, i: int, max_tokens: int, t0: float | None = None) -> Reply:
        return await stream_chat(client, self.url, messages(i), max_tokens, t0)


class InProcessTarget:
    """Fallback when `parley serve` cannot start: the same requests on an in-process Parley (no HTTP)."""

    def __init__(self, parley):
        self.name = "parley (in-process, no HTTP)"
        self.parley = parley

    async def chat(self, client, i: int, max_tokens: int, t0: float | None = None) -> Reply:
        from parley.bench.common import greedy

        t0 = now() if t0 is None else t0
        import asyncio

        tokens = self.parley.chat_prompt(messages(i), max_tokens=max_tokens).tokens
        stream = self.parley.generate(tokens, greedy(max_tokens, self.parley.chat_stops),
                                      loop=asyncio.get_running_loop())
        first = None
        parts = []
        async for chunk in stream:
            if first is None and chunk.text:
                first = now()
            parts.append(chunk.text)
        end = now()
        return Reply((first or end) - t0, end - t0, "".join(parts))


async def measure(targets: dict, sz: Sizes, count, log) -> dict:
    import httpx

    out = {name: {"single": [], "burst": []} for name in targets}
    async with httpx.AsyncClient(timeout=httpx.Timeout(900.0)) as client:
        for t in targets.values():   # warm-up, not counted
            await t.chat(client, 10_000, 8)
        plan = [(name, mode) for mode in ("single", "burst") for name in targets]
        n = 0
        for r in range(sz.reps):
            for name, mode in rotate(plan, r):
                await asyncio.sleep(SETTLE_S)
                t = targets[name]
                if mode == "single":
                    rep = await t.chat(client, n, sz.max_tokens)
                    n += 1
                    k = count(rep.text)
                    out[name]["single"].append({
                        "ttft_s": rep.ttft_s, "total_s": rep.total_s, "tokens": k, "wall_tps": k / rep.total_s,
                        "decode_tps": (k - 1) / (rep.total_s - rep.ttft_s) if k > 1 else None})
                else:
                    t0 = now()
                    reps = await asyncio.gather(*(t.chat(client, n + j, sz.max_tokens, t0)
                                                  for j in range(sz.clients)))
                    n += sz.clients
                    tokens = [count(x.text) for x in reps]
                    wall = max(x.total_s for x in reps)
                    first = min(x.ttft_s for x in reps)
                    out[name]["burst"].append({
                        "wall_s": wall, "first_token_s": first, "tokens": tokens,
                        "aggregate_decode_tps": (sum(tokens) - 1) / (wall - first),
                        "aggregate_wall_tps": sum(tokens) / wall, "ttft_s": [x.ttft_s for x in reps]})
                last = out[name][mode][-1]
                log(f"concurrent: repetition {r + 1}/{sz.reps}, {name}, {mode}: "
                    + (f"{last['decode_tps']:.1f} tok/s" if mode == "single" else
                       f"{last['aggregate_decode_tps']:.1f} tok/s aggregate, TTFT p50 "
                       f"{percentile(last['ttft_s'], 50) * 1000:.0f} ms"))
    return out


def summary(runs: dict) -> dict:
    ttfts = [x for b in runs["burst"] for x in b["ttft_s"]]
    return {
        "single_decode_tps": median([s["decode_tps"] for s in runs["single"] if s["decode_tps"]]),
        "single_wall_tps": median([s["wall_tps"] for s in runs["single"]]),
        "single_ttft_s": median([s["ttft_s"] for s in runs["single"]]),
        "aggregate_decode_tps": median([b["aggregate_decode_tps"] for b in runs["burst"]]),
        "aggregate_wall_tps": median([b["aggregate_wall_tps"] for b in runs["burst"]]),
        "ttft_p50_s": percentile(ttfts, 50),
        "ttft_p95_s": percentile(ttfts, 95),
        "tokens_per_reply": median([k for b in runs["burst"] for k in b["tokens"]]),
    }


def run(ctx: BenchContext) -> ScenarioResult:
    from parley.engine.llamacpp import EngineConfig, LlamaCppEngine

    try:
        import httpx  # noqa: F401
    except ImportError:
        raise RuntimeError("the concurrent scenario needs httpx: pip install 'parley[bench]'") from None
    sz = QUICK if ctx.quick else FULL
    res = ScenarioResult("concurrent", WHAT, config={
        "clients": sz.clients, "max_tokens": sz.max_tokens, "repetitions": sz.reps, "n_ctx": N_CTX,
        "threads": ctx.threads, "parley_max_running": sz.clients, "sampling": "temperature 0, repeat_penalty 1",
        "llama_server_flags": "--interrupt_requests False --flash_attn True"})
    vocab = LlamaCppEngine(EngineConfig(model_path=ctx.model, n_ctx=16, n_batch=1, n_seq_max=1, n_threads=1))

    def count(text: str) -> int:   # the model's own tokenizer (only its read-only vocabulary is used)
        return len(vocab.tokenize(text, special=False)) if text else 0

    servers = []
    targets: dict = {}
    fallback = None
    try:
        parley_srv = start_parley(ctx, N_CTX, sz.clients)
        servers.append(parley_srv)
        why = llama_server_available()
        llama_srv = None
        if why is None:
            llama_srv = start_llama_server(ctx, N_CTX)
            servers.append(llama_srv)
        else:
            res.notes.append(why)
        try:
            parley_srv.wait_ready()
            targets["parley"] = HttpTarget("parley serve", parley_srv.url)
        except RuntimeError as e:
            from parley.api import Parley

            res.notes.append(f"`parley serve` did not start, so parley was measured in-process: {e}")
            fallback = Parley(ctx.model, threads=ctx.threads, kv_size=N_CTX, max_running=sz.clients,
                              disk_cache_mb=0)
            targets["parley"] = InProcessTarget(fallback)
        if llama_srv is not None:
            llama_srv.wait_ready()
            targets["llama_server"] = HttpTarget("llama_cpp.server", llama_srv.url)
        runs = asyncio.run(measure(targets, sz, count, ctx.log))
    finally:
        for s in servers:
            s.stop()
        if fallback is not None:
            fallback.close(save=False)
        vocab.close()

    sums = {name: summary(r) for name, r in runs.items()}
    res.data = {"summary": sums, "runs": runs, "parley_side": targets["parley"].name}
    P = sums["parley"]
    L = sums.get("llama_server", {})
    C = "llama_cpp.server (c)"
    pname = targets["parley"].name
    agg = f"aggregate decode tok/s, {sz.clients} clients ({pname})"
    pr = runs["parley"]
    lr = runs.get("llama_server")

    def pairs(a: list[dict], b: list[dict] | None, ka: str, kb: str | None = None):
        return [(x[ka], y[kb or ka]) for x, y in zip(a, b, strict=True)] if b else None

    res.rows = [
        Row(agg, "tok/s", P["aggregate_decode_tps"], "parley, 1 client", P["single_decode_tps"], target=2,
            pairs=pairs(pr["burst"], pr["single"], "aggregate_decode_tps", "decode_tps")),
        Row(agg, "tok/s", P["aggregate_decode_tps"], f"{C}, {sz.clients} clients", L.get("aggregate_decode_tps"),
            target=1, strict=True, pairs=pairs(pr["burst"], lr and lr["burst"], "aggregate_decode_tps")),
        Row(f"aggregate tok/s incl. prompts, {sz.clients} clients", "tok/s", P["aggregate_wall_tps"],
            f"{C}, {sz.clients} clients", L.get("aggregate_wall_tps"),
            pairs=pairs(pr["burst"], lr and lr["burst"], "aggregate_wall_tps")),
        Row(f"TTFT p50, {sz.clients} clients", "s", P["ttft_p50_s"], C, L.get("ttft_p50_s"), False),
        Row(f"TTFT p95, {sz.clients} clients", "s", P["ttft_p95_s"], C, L.get("ttft_p95_s"), False),
        Row("decode tok/s, 1 client", "tok/s", P["single_decode_tps"], C, L.get("single_decode_tps"),
            pairs=pairs(pr["single"], lr and lr["single"], "decode_tps")),
    ]
    return res
