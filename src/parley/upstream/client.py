"""One upstream server: what it is (probed: parley, llama.cpp's llama-server, or another OpenAI-compatible server),
whether it answers (health checks, through httpx), how many of parley's requests it runs, and a streamed
`/v1/completions` of token ids (sse.py). Every call runs on the upstream engine's event loop thread (engine.py)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx

from parley.errors import shorten
from parley.upstream.sse import HTTPError, post_events

PROBE_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 600.0     # the longest silence within a streamed reply before the upstream counts as gone


class UpstreamFailed(Exception):
    """The upstream could not serve the request: unreachable, gone mid-stream, or a 5xx (another may: `retry`), or a
    4xx about the request itself (another would refuse it too)."""

    def __init__(self, message: str, *, retry: bool, status: int = 0):
        super().__init__(message)
        self.retry = retry
        self.status = status


@dataclass(eq=False)
class Upstream:
    url: str
    healthy: bool = False
    kind: str = "unknown"          # "parley" | "llama.cpp" | "openai" (vLLM, SGLang, ...), from the probe
    model: str | None = None       # the model id requests name (its first in /v1/models)
    context: int = 0               # tokens one request may hold there (0: it did not say)
    n_vocab: int = 0               # its vocabulary size, when it says (llama-server): checked against parley's
    slots: int = 0                 # requests it runs at once, when it says (llama-server's -np)
    running: int = 0               # parley's requests in flight there
    error: str = ""                # why it is out, when it is
    checked: float = 0.0
    # what it reported, summed over parley's requests
    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    failures: int = 0
    _gate: asyncio.Semaphore | None = field(default=None, repr=False)

    @property
    def base(self) -> str:
        return self.url.rstrip("/").removesuffix("/v1")

    def mark_down(self, why: str) -> None:
        self.healthy, self.error = False, why

    async def probe(self, http: httpx.AsyncClient) -> None:
        """What it is and what it holds: /v1/models (every OpenAI-compatible server), then llama-server's /props."""
        self.checked = time.monotonic()
        try:
            r = await http.get(self.base + "/v1/models", timeout=PROBE_TIMEOUT_S)
            if r.status_code != 200:
                raise UpstreamFailed(f"GET /v1/models answered {r.status_code}", retry=True, status=r.status_code)
            cards = r.json().get("data") or []
            card = cards[0] if cards else {}
            self.model = card.get("id")
            meta = card.get("meta") or {}
            self.n_vocab = int(meta.get("n_vocab") or 0)
            self.context = int(card.get("context_length") or card.get("max_model_len") or 0)
            self.kind = "parley" if card.get("owned_by") == "parley" else "openai"
            if card.get("owned_by") == "llamacpp" or self.kind == "openai":
                props = await http.get(self.base + "/props", timeout=PROBE_TIMEOUT_S)
                if props.status_code == 200 and "default_generation_settings" in props.json():
                    self.kind = "llama.cpp"
                    self.context = int(props.json()["default_generation_settings"].get("n_ctx") or self.context)
                    self.slots = int(props.json().get("total_slots") or 0)
        except (httpx.HTTPError, ValueError, UpstreamFailed) as e:
            self.mark_down(f"its probe failed: {_why(e)}")
            return
        self.healthy, self.error = True, ""

    async def check(self, http: httpx.AsyncClient) -> None:
        """A health check: /health answering 200 (parley, llama-server, vLLM, SGLang and TGI all have it); a server
        coming back is probed again (it may have restarted with another model)."""
        self.checked = time.monotonic()
        try:
            r = await http.get(self.base + "/health", timeout=PROBE_TIMEOUT_S)
            ok = r.status_code == 200
        except httpx.HTTPError as e:
            self.mark_down(f"its health check failed: {_why(e)}")
            return
        if not ok:
            self.mark_down(f"GET /health answered {r.status_code}")
        elif not self.healthy:
            self._gate = None      # (it may have come back with other slots; requests holding the old one finish)
            await self.probe(http)

    def gate(self) -> asyncio.Semaphore | None:
        """How many of parley's requests may be open on it at once: llama-server gives each connection a thread of
        its own (--threads-http, its slots + 2 by default), so at most its slot count, the rest waiting here as
        they would in its queue (other clients still get in); no bound elsewhere."""
        if self._gate is None and self.kind == "llama.cpp" and self.slots:
            self._gate = asyncio.Semaphore(self.slots)
        return self._gate

    async def complete(self, body: dict) -> AsyncIterator[tuple[str, str | None, dict | None]]:
        """Stream a completion: (text, finish_reason or None, usage or None) per event. Raises UpstreamFailed."""
        gate = self.gate()
        if gate is not None:
            await gate.acquire()
        try:
            async for data in post_events(self.base + "/v1/completions", body, connect_timeout=CONNECT_TIMEOUT_S,
                                          read_timeout=READ_TIMEOUT_S):
                if data == b"[DONE]":
                    return
                event = json.loads(data)
                if "error" in event:
                    raise UpstreamFailed(f"{self.url} failed mid-reply: {_message(data.decode())}", retry=True)
                choice = (event.get("choices") or [{}])[0]
                yield choice.get("text") or "", choice.get("finish_reason"), event.get("usage")
        except HTTPError as e:
            if e.status:
                raise UpstreamFailed(f"{self.url} answered {e.status}: "
                                     f"{shorten(_message(e.body.decode('utf-8', 'replace')), 300)}",
                                     retry=e.status >= 500 or e.status == 429, status=e.status) from e
            raise UpstreamFailed(f"{self.url} is unreachable or went away: {e}", retry=True) from e
        except ValueError as e:
            raise UpstreamFailed(f"{self.url} sent an event that is not JSON: {e}", retry=True) from e
        finally:
            if gate is not None:
                gate.release()


def _why(e: Exception) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _message(raw: str) -> str:
    """An error body's message (OpenAI's shape, or TGI's), else the body."""
    try:
        body = json.loads(raw)
    except ValueError:
        return raw
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return str(err.get("message") or err)
    return str(err or body)
