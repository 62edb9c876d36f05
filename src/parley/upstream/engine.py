"""UpstreamScheduler: the Scheduler's interface (token ids in; text chunks and a Result out, through the request's
sink) generating on OpenAI-compatible servers instead of the in-process llama.cpp engine.

The loop thread (scheduler/remote.py RemoteScheduler, shared with the Ray replicas' scheduler) owns the HTTP
client, the upstreams' state and every request in flight; other threads submit and cancel through it. A request:

  route      the conversation's upstream (route.Router: consistent hashing on its id, or moved by load)
  send       POST /v1/completions with the prompt's token ids, streamed; the sampler's settings as the upstream
             names them; a grammar as llama-server's `json_schema` / `grammar` (parley and llama-server take them;
             another kind of upstream is refused by name)
  read       each piece of text through parley's own stop matcher (a stop string never reaches the reply, and
             which one ended it is known, as with the local engine); a stop closes the upstream request
  fail over  an upstream that cannot be reached, goes away mid-reply or answers 5xx is taken out (the health
             checks bring it back) and the request goes on on the next one on the ring: its prompt plus the text
             so far, so a reply cut off mid-way continues where it stopped
  finish     the Result: the upstream's own count of cached prompt tokens, the reply's token ids as parley's
             tokenizer reads its text

What stays local, and what an upstream cannot do here: there is no KV to pin, move or save (prefetch, retire,
drop_cached do nothing; a document's first read is sent to every healthy upstream once, so its prefix is cached
wherever its questions land), logprobs are refused by name, and so are regex and Lark grammars.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Sequence

import httpx

from parley.errors import InvalidRequest, ModelError
from parley.sampling import SamplingParams
from parley.scheduler.remote import NotSupported, RemoteScheduler, result_of
from parley.scheduler.request import Chunk, Request, Result, Status
from parley.scheduler.stream import Stream
from parley.text.stops import StopMatcher
from parley.upstream.client import PROBE_TIMEOUT_S, Upstream, UpstreamFailed
from parley.upstream.route import Router

log = logging.getLogger("parley.upstream")

HEALTH_EVERY_S = 2.0       # how often each upstream's /health is read
START_WAIT_S = 10.0        # how long start-up waits for at least one upstream to answer its probe
CONSTRAINED_KINDS = ("parley", "llama.cpp")   # upstreams that take llama-server's json_schema / grammar fields



class UpstreamScheduler(RemoteScheduler):
    """`tokenize(text)` (parley's tokenizer, the upstream model's vocabulary) reads a reply's text back into
    token ids; `context_size`: the most tokens a prompt and its reply may hold (0: the smallest any upstream
    reports); `max_waiting`: requests in flight at most (a full queue is a 503, as with the local engine)."""

    where = "the upstreams"
    flag = "--upstream"

    def __init__(self, urls: Sequence[str], tokenize: Callable[[str], list[int]], *, policy: str = "session",
                 context_size: int = 0, n_vocab: int = 0, max_waiting: int = 256,
                 start_wait_s: float = START_WAIT_S):
        if not urls:
            raise ValueError("an upstream scheduler needs at least one upstream URL")
        self.upstreams = [Upstream(u) for u in urls]
        self.router = Router(urls, policy)
        self.tokenize = tokenize
        self.n_vocab = n_vocab
        super().__init__(context_size=context_size, max_waiting=max_waiting, thread_name="parley-upstream")
        self._call(self._probe_all(start_wait_s), start_wait_s + 10)
        reported = [u.context for u in self.upstreams if u.healthy and u.context]
        self.context_size = context_size or (min(reported) if reported else 4096)
        if not any(u.healthy for u in self.upstreams):
            self.close()
            raise ModelError("no upstream answered: " + "; ".join(f"{u.url}: {u.error}" for u in self.upstreams))

    # ---- the loop thread ---------------------------------------------------------------------------------
    async def _open(self) -> None:
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(PROBE_TIMEOUT_S))   # probes and health checks
        self._health = self._loop.create_task(self._health_loop())

    async def _closed(self) -> None:
        await self.http.aclose()

    async def _shutdown(self) -> None:
        self._health.cancel()
        await super()._shutdown()

    async def _probe_all(self, wait_s: float) -> None:
        """Probe every upstream; wait (up to `wait_s`) until at least one answers: a server still loading."""
        deadline = time.monotonic() + wait_s
        while True:
            await asyncio.gather(*(u.probe(self.http) for u in self.upstreams))
            self._check_vocab()
            if any(u.healthy for u in self.upstreams) or time.monotonic() >= deadline:
                return
            await asyncio.sleep(0.25)

    def _check_vocab(self) -> None:
        for u in self.upstreams:
            if u.healthy and self.n_vocab and u.n_vocab and u.n_vocab != self.n_vocab:
                u.mark_down(f"its model has {u.n_vocab} tokens in its vocabulary, parley's -m model {self.n_vocab}: "
                            "parley tokenizes with -m, which must be the upstream's model")

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_EVERY_S)
            try:
                await asyncio.gather(*(u.check(self.http) for u in self.upstreams))
                self._check_vocab()
            except Exception:
                log.exception("checking the upstreams failed")

    # ---- any thread --------------------------------------------------------------------------------------
    def _refuse(self, params: SamplingParams) -> None:
        if params.logprobs is not None:
            raise NotSupported("logprobs are not available when parley generates on an upstream (--upstream)",
                               param="logprobs")
        if params.grammar is not None:
            _grammar_fields(params.grammar, self.upstreams)     # refused here, by name, when it cannot travel

    def pin(self, tokens: Sequence[int], *, persist: bool = False, watch=None) -> tuple[None, Result]:
        """A document's prefix: read once by every healthy upstream (with one token generated), so it is cached
        wherever its questions land. Returns (no handle, the first upstream's Result)."""
        streams = []
        for i, u in enumerate(self.upstreams):
            if u.healthy:
                stream = Stream(lambda: None)
                req = self.submit(tokens, SamplingParams(max_tokens=1, temperature=0.0), stream.put,
                                  prefill_only=True, target=i)
                stream.request = req
                streams.append(stream)
        if not streams:
            raise InvalidRequest("no upstream is reachable to read the document", param="prefix")
        if watch is not None:
            watch(streams[0])
        results = [s.wait() for s in streams]
        if results[0].finish_reason == "error":
            raise InvalidRequest(f"could not read the prefix upstream: {results[0].error}", param="prefix")
        return None, results[0]

    def unpin(self, slot) -> None:
        """Nothing is pinned here (pin() leaves the prefix in the upstreams' own caches)."""

    def engine_stats(self) -> list[dict]:
        return self.upstream_stats()

    def upstream_stats(self) -> list[dict]:
        """Each upstream's state and what it reported (the cached share shows the conversations' stickiness)."""
        return [{"url": u.url, "healthy": u.healthy, "kind": u.kind, "model": u.model, "context": u.context,
                 "running": u.running, "requests": u.requests, "prompt_tokens": u.prompt_tokens,
                 "cached_tokens": u.cached_tokens, "failures": u.failures, "error": u.error}
                for u in self.upstreams]

    # ---- the loop thread: requests -----------------------------------------------------------------------
    async def _serve(self, req: Request, session: str | None, target: int | None = None) -> None:
        p = req.params
        seed = p.seed if p.seed is not None else random.randrange(1 << 31)
        matcher = StopMatcher(p.stop)
        raw: list[str] = []          # the text the upstreams gave, before stop matching
        shown: list[str] = []
        tried: set[int] = set()
        usage: dict = {}
        served_by: Upstream | None = None
        finish, error, code = None, None, None
        try:
            while finish is None:
                if target is not None and target not in tried and self.upstreams[target].healthy:
                    i = target
                else:
                    i = self.router.route(session, req.prompt, lambda k: self.upstreams[k].healthy,
                                          lambda k: self.upstreams[k].running, frozenset(tried))
                if i is None:
                    finish, code = "error", "upstream_unavailable"
                    error = "no upstream is reachable: " + "; ".join(
                        f"{u.url}: {u.error or 'failed for this request'}" for u in self.upstreams)
                    break
                up = self.upstreams[i]
                so_far = "".join(raw)
                told = self.tokenize(so_far) if so_far else []
                left = req.max_new - len(told)
                if left <= 0:
                    finish = "length"
                    break
                body = _body(up, req.prompt + told, p, left, seed)
                up.running += 1
                req.status = Status.PREFILL
                try:
                    async with contextlib.aclosing(up.complete(body)) as events:
                        async for piece, reason, use in events:
                            if use:
                                usage = use
                            if piece:
                                if not req.first_token:
                                    req.first_token = time.perf_counter()
                                    req.status = Status.DECODE
                                raw.append(piece)
                                safe = matcher.feed(piece)
                                if safe:
                                    shown.append(safe)
                                    req.sink(Chunk(safe, []))
                                if matcher.stopped:
                                    finish = "stop"
                                    break
                            if reason is not None and finish is None:
                                finish = "length" if reason == "length" else "stop"
                    if finish is None:
                        raise UpstreamFailed(f"{up.url} ended the reply without saying how", retry=True)
                    up.requests += 1
                    served_by = up
                except UpstreamFailed as e:
                    up.failures += 1
                    if e.retry:
                        up.mark_down(str(e))
                        tried.add(i)
                        log.warning("upstream %s failed (%s); the request moves on", up.url, e)
                        finish, usage = None, {}
                        continue
                    finish, error, code = "error", str(e), _code(e.status)
                finally:
                    up.running -= 1
        except asyncio.CancelledError:
            finish = "cancelled"
        except Exception as e:   # a bug here must end the request, never leave its consumer waiting
            log.exception("an upstream request failed")
            finish, error, code = "error", f"{type(e).__name__}: {e}", "internal"
        if finish in ("stop", "length") and not matcher.stopped:
            tail = matcher.flush()
            if tail:
                shown.append(tail)
                req.sink(Chunk(tail, []))
        text = "".join(shown)
        details = usage.get("prompt_tokens_details") or {}
        cached = min(int(details.get("cached_tokens") or 0), len(req.prompt))
        generated = int(usage.get("completion_tokens") or 0) if finish != "cancelled" else 0
        ids = self.tokenize(text) if text else []
        result = result_of(req, finish, ids, text, cached, max(generated, len(ids)), seed=seed,
                         stop=matcher.matched if matcher.stopped else None, error=error, code=code)
        if served_by is not None and not req.internal:
            served_by.prompt_tokens += len(req.prompt)
            served_by.cached_tokens += cached
        self._finish(req, result)


def _code(status: int) -> str:
    return "upstream_refused" if 400 <= status < 500 else "upstream_failed"


def _grammar_fields(grammar, upstreams: list[Upstream]) -> dict:
    """llama-server's fields for a grammar (parley takes them too); refused by name when it cannot travel."""
    kinds = {u.kind for u in upstreams if u.healthy} or {u.kind for u in upstreams}
    other = sorted(k for k in kinds if k not in CONSTRAINED_KINDS)
    if other:
        raise NotSupported(f"structured output is not sent to {', '.join(other)} upstreams here (parley and "
                           "llama-server upstreams take it)", param="response_format")
    if grammar.kind == "json_schema":
        return {"json_schema": json.loads(grammar.source)}
    if grammar.kind == "json_object":
        return {"json_schema": {"type": "object"}}
    if grammar.kind == "gbnf":
        return {"grammar": grammar.source}
    raise NotSupported(f"a {grammar.kind} grammar cannot be sent to an upstream (json_schema, json_object and "
                       "GBNF can)", param="response_format")


def _body(up: Upstream, prompt: list[int], p: SamplingParams, max_tokens: int, seed: int) -> dict:
    """The completion request, the sampler's settings spelled as the upstreams read them (llama-server's defaults
    differ from parley's: top_k 40, min_p 0.05, so every one is sent)."""
    body = {"prompt": prompt, "max_tokens": max_tokens, "stream": True, "stream_options": {"include_usage": True},
            "temperature": p.temperature, "top_p": p.top_p, "top_k": p.top_k, "min_p": p.min_p, "seed": seed,
            "presence_penalty": p.presence_penalty, "frequency_penalty": p.frequency_penalty}
    if p.greedy:     # the most likely token: top_k 1 spares llama-server a sort of the whole vocabulary per token
        body.update(top_k=1, top_p=1.0, min_p=0.0)
    if up.model:
        body["model"] = up.model
    if up.kind in CONSTRAINED_KINDS:
        body.update(repeat_penalty=p.repeat_penalty, cache_prompt=True)
        if p.repeat_penalty != 1.0 or p.presence_penalty or p.frequency_penalty:
            body["repeat_last_n"] = p.penalty_last_n   # (the window of all three penalties in llama.cpp)
    elif p.repeat_penalty != 1.0:
        body["repetition_penalty"] = p.repeat_penalty          # vLLM's and SGLang's name
    if p.ignore_eos:
        body["ignore_eos"] = True
    if p.grammar is not None:
        body.update(_grammar_fields(p.grammar, [up]))
    return body


