"""soak: a live `parley serve` under mixed traffic for a bounded time (issue 8's checks).

One `parley serve` subprocess on 127.0.0.1 at a small --kv-size (RAM tier on, disk tier off) and `clients`
concurrent clients for `seconds`, each cycling through the kinds of request a real server sees:
    stream        chat completion streamed to `data: [DONE]` (TTFT is timed from sending to the first text)
    disconnect    a chat stream the client drops after its first few events
    conversation  POST /v1/conversations, three messages, DELETE
    long          a prompt of ~85% of the KV budget through /v1/completions (two at once overflow it: they
                  must wait their turn, not fail)
    tgi           POST /generate
Every request fits the KV budget on its own. Reported: requests served, errors by kind ("<status> <code>" for an
HTTP error, "stream <code>" for an SSE error event, "transport <exception>"), the server's RSS after warm-up
and at the end, p95 TTFT of the streams, and tracebacks in the server's log. Targets: no 5xx, no
kv_budget_exceeded, RSS growth within the RAM tier's budget (--ram-cache-mb).
"""

from __future__ import annotations

import asyncio
import collections
import json
import sys
import time
from dataclasses import dataclass, field

from parley.bench.common import BenchContext, Row, ScenarioResult, now, percentile
from parley.bench.content import narrative, story_request, user_turns
from parley.bench.servers import ServerProcess, free_port

WHAT = "a live parley serve under mixed traffic for a bounded time: errors by kind, RSS, p95 TTFT"
KINDS = ("stream", "disconnect", "conversation", "long", "stream", "tgi")


@dataclass(frozen=True)
class Sizes:
    seconds: float
    clients: int
    kv_size: int
    ram_cache_mb: int
    max_tokens: int
    long_sentences: int       # narrative sentences of the long prompt (~17.5 tokens each)


FULL = Sizes(seconds=300, clients=8, kv_size=4096, ram_cache_mb=256, max_tokens=64, long_sentences=200)
QUICK = Sizes(seconds=25, clients=6, kv_size=1024, ram_cache_mb=64, max_tokens=24, long_sentences=50)


@dataclass
class Tally:
    served: int = 0
    disconnects: int = 0
    errors: collections.Counter = field(default_factory=collections.Counter)
    by_kind: collections.Counter = field(default_factory=collections.Counter)
    ttft_s: list[float] = field(default_factory=list)

    def http_error(self, status: int, body: bytes) -> None:
        try:
            code = json.loads(body)["error"].get("code")
        except (ValueError, KeyError, TypeError, AttributeError):
            code = None
        self.errors[f"{status} {code or 'no JSON error'}"] += 1

    @property
    def server_errors(self) -> int:
        return sum(n for kind, n in self.errors.items() if kind[:1] == "5" or kind.startswith("stream server"))

    @property
    def kv_refusals(self) -> int:
        return sum(n for kind, n in self.errors.items() if "kv_budget_exceeded" in kind)


# ---- one request of each kind --------------------------------------------------------------------------------
async def ok(tally: Tally, r) -> bool:
    if r.status_code == 200:
        tally.served += 1
        return True
    tally.http_error(r.status_code, r.content)
    return False


async def stream(client, tally: Tally, i: int, sz: Sizes, *, drop_after: int | None = None) -> None:
    body = {"messages": [{"role": "user", "content": story_request(i)}], "max_tokens": sz.max_tokens,
            "temperature": 0.7, "seed": i, "stream": True}
    t0, first, events = now(), None, 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            tally.http_error(r.status_code, await r.aread())
            return
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            events += 1
            if drop_after is not None and events >= drop_after:
                tally.disconnects += 1
                return  # leaving the block closes the connection mid-stream
            if line == "data: [DONE]":
                tally.served += 1
                if first is not None:
                    tally.ttft_s.append(first - t0)
                return
            chunk = json.loads(line[6:])
            if "error" in chunk:
                err = chunk["error"]
                tally.errors[f"stream {err.get('type')} {err.get('code')}"] += 1
                return
            delta = (chunk.get("choices") or [{}])[0].get("delta") or {}
            if first is None and delta.get("content"):
                first = now()
    tally.errors["stream ended without [DONE]"] += 1


async def conversation(client, tally: Tally, i: int, sz: Sizes) -> None:
    r = await client.post("/v1/conversations", json={"system": "You are terse. Answer in one sentence.",
                                                     "max_tokens": sz.max_tokens, "temperature": 0.7})
    if not await ok(tally, r):
        return
    cid = r.json()["id"]
    for text in user_turns(i, 3):
        if not await ok(tally, await client.post(f"/v1/conversations/{cid}/messages", json={"content": text})):
            break
    await ok(tally, await client.delete(f"/v1/conversations/{cid}"))


async def long_prompt(client, tally: Tally, i: int, sz: Sizes) -> None:
    body = {"prompt": narrative(1000 + i, sz.long_sentences), "max_tokens": 16, "temperature": 0}
    await ok(tally, await client.post("/v1/completions", json=body))


async def tgi(client, tally: Tally, i: int, sz: Sizes) -> None:
    body = {"inputs": narrative(i, 3), "parameters": {"max_new_tokens": sz.max_tokens, "do_sample": True,
                                                      "seed": i}}
    await ok(tally, await client.post("/generate", json=body))


async def one(kind: str, client, tally: Tally, i: int, sz: Sizes) -> None:
    import httpx

    tally.by_kind[kind] += 1
    try:
        if kind == "stream":
            await stream(client, tally, i, sz)
        elif kind == "disconnect":
            await stream(client, tally, i, sz, drop_after=3)
        elif kind == "conversation":
            await conversation(client, tally, i, sz)
        elif kind == "long":
            await long_prompt(client, tally, i, sz)
        else:
            await tgi(client, tally, i, sz)
    except httpx.HTTPError as e:
        tally.errors[f"transport {type(e).__name__}"] += 1


async def traffic(url: str, sz: Sizes, seconds: float, tally: Tally) -> None:
    import httpx

    end = now() + seconds
    limits = httpx.Limits(max_connections=sz.clients * 2, max_keepalive_connections=sz.clients * 2)

    async def client_loop(c: int) -> None:
        n = c
        while now() < end:
            await one(KINDS[n % len(KINDS)], client, tally, 10 * n + c, sz)
            n += sz.clients

    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(300.0), limits=limits) as client:
        await asyncio.gather(*(client_loop(c) for c in range(sz.clients)))


async def warm_up(url: str, sz: Sizes) -> None:
    """One request of each kind (not counted), so the RSS at start includes what the first requests allocate."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(300.0)) as client:
        for kind in dict.fromkeys(KINDS):
            await one(kind, client, Tally(), 999_000, sz)


# ---- the server ----------------------------------------------------------------------------------------------
def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover - not Linux
        return None
    return None


def ram_tier_mb(url: str) -> float | None:
    """The RAM tier's bytes from /metrics (what the RSS may grow by)."""
    import httpx

    try:
        text = httpx.get(url + "/metrics", timeout=30).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith('parley_kv_bytes{tier="ram"}'):
            return float(line.split()[-1]) / (1 << 20)
    return None


def start_server(ctx: BenchContext, sz: Sizes) -> ServerProcess:
    port = free_port()
    argv = [sys.executable, "-m", "parley.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port),
            "-m", str(ctx.model), "--threads", str(ctx.threads), "--kv-size", str(sz.kv_size),
            "--ram-cache-mb", str(sz.ram_cache_mb), "--disk-cache-mb", "0", "--max-running", str(sz.clients),
            "--shutdown-grace", "5"]
    return ServerProcess("parley serve", argv, port, ctx.home / "parley-soak.log")


@dataclass
class Check(Row):
    """A number checked against a limit (no baseline): met when it is at most `limit`."""

    limit: float | None = None

    @property
    def ratio(self) -> float | None:
        return None

    @property
    def target_text(self) -> str:
        return "" if self.limit is None else f"<= {self.limit:g} {self.unit}".strip()

    @property
    def met(self) -> bool | None:
        return None if self.limit is None else self.parley is not None and self.parley <= self.limit


def check(metric: str, unit: str, value, limit: float | None = None, note: str = "") -> Check:
    return Check(metric, unit, value, "", None, note=note, limit=limit)


def run(ctx: BenchContext) -> ScenarioResult:
    try:
        import httpx  # noqa: F401
    except ImportError:
        raise RuntimeError("the soak scenario needs httpx: pip install 'parley[bench]'") from None
    sz = QUICK if ctx.quick else FULL
    res = ScenarioResult("soak", WHAT, config={
        "seconds": sz.seconds, "clients": sz.clients, "kv_size": sz.kv_size, "ram_cache_mb": sz.ram_cache_mb,
        "max_tokens": sz.max_tokens, "kinds": list(KINDS), "threads": ctx.threads,
        "long_prompt_sentences": sz.long_sentences})
    server = start_server(ctx, sz)
    tally = Tally()
    try:
        server.wait_ready()
        asyncio.run(warm_up(server.url, sz))
        rss_start = rss_mb(server.proc.pid)
        ctx.log(f"soak: {sz.clients} clients for {sz.seconds:g} s (RSS {rss_start or 0:.0f} MB after warm-up)")
        started = time.monotonic()
        asyncio.run(traffic(server.url, sz, sz.seconds, tally))
        took = time.monotonic() - started
        time.sleep(1.0)
        rss_end = rss_mb(server.proc.pid)
        ram_tier = ram_tier_mb(server.url)
    finally:
        server.stop()
    log = server.log_path.read_text(errors="replace")
    growth = None if rss_start is None or rss_end is None else rss_end - rss_start
    res.data = {"served": tally.served, "disconnects": tally.disconnects, "errors": dict(tally.errors),
                "requests_by_kind": dict(tally.by_kind), "rss_start_mb": rss_start, "rss_end_mb": rss_end,
                "ram_tier_end_mb": ram_tier,
                "traffic_s": took, "ttft_s": tally.ttft_s, "server_log_tracebacks": log.count("Traceback"),
                "server_exit_code": server.proc.returncode}
    others = sum(tally.errors.values()) - tally.server_errors - tally.kv_refusals
    res.rows = [
        check("requests served", "requests", tally.served, note=f"in {took:.0f} s"),
        check("streams dropped by the client mid-stream", "streams", tally.disconnects),
        check("5xx answers and server-error stream events", "errors", tally.server_errors, 0),
        check("kv_budget_exceeded (every request fits on its own)", "errors", tally.kv_refusals, 0),
        check("other errors", "errors", others, note=", ".join(f"{k}: {n}" for k, n in tally.errors.items())),
        check("server RSS after warm-up", "MB", rss_start),
        check("server RSS at the end", "MB", rss_end),
        check("RSS growth (limit: the RAM tier's budget)", "MB", growth, sz.ram_cache_mb),
        check("RAM tier at the end (KV states moved out of the context)", "MB", ram_tier),
        check("TTFT p95, streams", "s", percentile(tally.ttft_s, 95)),
        check("tracebacks in the server's log", "", log.count("Traceback"), 0),
    ]
    if server.proc.returncode not in (0, None):
        res.notes.append(f"parley serve exited with code {server.proc.returncode}: {server.log_tail()}")
    return res
