"""RemoteScheduler: the Scheduler's interface (token ids in; text chunks and a Result out, through the request's
sink) for engines that run outside this process: upstream servers over HTTP (upstream/engine.py) and parley
replicas on Ray Serve (cluster/scheduler.py). What they share is written here once:

  - one thread runs an event loop that owns every request in flight (as the scheduler thread owns the llama.cpp
    context); other threads submit and cancel through it;
  - submit() checks what the local Scheduler checks (an empty prompt, the context, too many in flight, shutting
    down) in the caller's thread, plus what the subclass cannot do (`_refuse`);
  - cancel() cancels the request's task (the subclass closes its remote request on CancelledError);
  - _finish() hands the Result to the sink and the observers and keeps the totals.

There is no KV here to pin, move or save: prefetch, retire and drop_cached do nothing; the remote engine keeps its
own cache. A subclass writes `_serve(req, session, target)` (a coroutine that ends with `_finish`),
`engine_stats()`, `pin()`, and names itself in `where` and `flag` for the errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence

from parley.errors import InvalidRequest, LimitExceeded, Overloaded, ShuttingDown
from parley.sampling import SamplingParams
from parley.scheduler.request import Request, Result, Status
from parley.scheduler.stats import Totals, combine
from parley.scheduler.stream import Streams

log = logging.getLogger("parley.scheduler")


def NotSupported(message: str, param: str | None = None) -> InvalidRequest:  # noqa: N802 (the server's name)
    return InvalidRequest(message, param=param, code="unsupported_parameter")


class RemoteScheduler(Streams):
    where = "the remote engines"      # what generates, in errors ("the upstreams")
    flag = ""                         # the setting that chose them, in errors ("--upstream")

    def __init__(self, *, context_size: int, max_waiting: int, thread_name: str):
        self.context_size = context_size
        self.max_waiting = max_waiting
        self.observers: list[Callable[[Request, Result], None]] = []
        self.totals = Totals()
        self._running: dict[int, tuple[Request, asyncio.Task | None]] = {}
        self._persist: set[int] = set()      # pin requests whose KV the remote disk tier keeps too
        self._stopping = False
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()
        self._ready.wait()

    # ---- the loop thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._open())
        self._loop.call_soon(self._ready.set)
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._closed())
            self._loop.close()

    async def _open(self) -> None:
        """What the loop owns, made in its thread before the first request (a client, a health loop)."""

    async def _closed(self) -> None:
        """Release what _open made (the loop has stopped; its tasks are done)."""

    def _call(self, coro, timeout: float | None = None):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # ---- any thread --------------------------------------------------------------------------------------
    def submit(self, prompt: Sequence[int], params: SamplingParams, sink: Callable, *, pin: bool = False,
               prefill_only: bool = False, param: str = "prompt", internal: bool = False,
               session: str | None = None, target: int | None = None, persist: bool = False) -> Request:
        """Queue a generation; `session` (a conversation id) keeps a conversation on one engine, `target` names
        one by its index. Raises in the caller's thread for a prompt that cannot fit, too many requests in flight,
        or what the engines here cannot do."""
        prompt = list(prompt)
        if not prompt:
            raise InvalidRequest("the prompt is empty", param=param)
        if self._stopping:
            raise ShuttingDown("parley is shutting down; no new requests")
        n, room = len(prompt), self.context_size - len(prompt)
        if room < (0 if prefill_only else 1):
            raise LimitExceeded(
                f"the prompt is {n} tokens; the context of {self.where} holds {self.context_size} tokens "
                f"(with at least 1 left to generate): {n - self.context_size + 1} tokens too many",
                param=param, code="context_length_exceeded")
        if len(self._running) >= self.max_waiting:
            raise Overloaded(f"{len(self._running)} requests are already in flight to {self.where} (max_waiting, "
                             "--max-waiting); retry later")
        self._refuse(params)
        req = Request(prompt=prompt, params=params, sink=sink, pin=pin)
        req.max_new = 1 if prefill_only else min(params.max_tokens, room)
        req.internal = internal
        req.status = Status.WAITING
        self._running[req.id] = (req, None)
        if persist:
            self._persist.add(req.id)
        try:
            self._loop.call_soon_threadsafe(self._start, req, session, target)
        except RuntimeError:   # the loop has stopped
            self._running.pop(req.id, None)
            raise ShuttingDown("parley is shutting down; no new requests") from None
        return req

    def _refuse(self, params: SamplingParams) -> None:
        """Raise NotSupported, by name, for what these engines cannot do."""

    def busy(self) -> bool:
        return any(not r.internal for r, _ in list(self._running.values()))

    def cancel(self, req: Request) -> None:
        """Stop a request: its remote request is closed (the engine stops generating)."""
        if req.status is not Status.FINISHED and not req.cancelled:
            req.cancelled = True
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._cancel, req.id)

    def prefetch(self, tokens: Sequence[int]) -> None:
        """Nothing to read ahead: the remote engine keeps the last turn's prompt and reply in its own cache."""

    def retire(self, tokens: Sequence[int]) -> None:
        """Nothing to move out: the remote engine evicts from its own cache."""

    def drop_cached(self, *, save: bool = True) -> int:
        return 0

    def stats(self, timeout: float | None = 30.0):
        """The Scheduler's snapshot: requests running here, the totals the engines reported (no KV cells here),
        and each engine's state (`engine_stats`)."""
        running = [r for r, _ in list(self._running.values())]
        return dataclasses.replace(combine([]), running=sum(1 for r in running if r.status is Status.DECODE),
                                   waiting=sum(1 for r in running if r.status is not Status.DECODE),
                                   totals=self.totals.copy(), upstreams=tuple(self.engine_stats()))

    def engine_stats(self) -> list[dict]:
        return []

    def set_threads(self, n: int) -> None:
        raise NotSupported(f"threads belong to {self.where} here ({self.flag})", param="threads")

    def tune(self, **changes: int) -> None:
        raise NotSupported(f"the scheduler's settings belong to {self.where} here ({self.flag})")

    def close(self, *, save: bool = True, timeout: float = 30.0) -> None:
        """Stop: replies in flight end as cancelled (their remote requests closed)."""
        self._stopping = True
        if not self._thread.is_alive():
            return
        with contextlib.suppress(RuntimeError):
            self._call(self._shutdown(), timeout)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)

    # ---- the loop thread: requests -----------------------------------------------------------------------
    def _start(self, req: Request, session: str | None, target: int | None) -> None:
        if req.cancelled:
            self._finish(req, result_of(req, "cancelled", [], "", 0, 0))
            return
        task = self._loop.create_task(self._serve(req, session, target))
        self._running[req.id] = (req, task)
        task.add_done_callback(lambda _: self._ended(req))

    def _ended(self, req: Request) -> None:
        """A task cancelled before its first step never ran _serve: finish its request as cancelled here, so
        its consumer never waits for a Result that will not come."""
        if req.status is not Status.FINISHED:
            self._finish(req, result_of(req, "cancelled", [], "", 0, 0))

    async def _serve(self, req: Request, session: str | None, target: int | None) -> None:
        raise NotImplementedError

    def _cancel(self, rid: int) -> None:
        entry = self._running.get(rid)
        if entry is not None and entry[1] is not None:
            entry[1].cancel()

    async def _shutdown(self) -> None:
        tasks = [t for _, t in list(self._running.values()) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _finish(self, req: Request, result: Result) -> None:
        req.status = Status.FINISHED
        self._running.pop(req.id, None)
        self._persist.discard(req.id)
        t = self.totals
        t.prompt_tokens += result.prompt_tokens
        t.cached_tokens += result.cached_tokens
        t.prefilled_tokens += result.prefilled_tokens
        t.generated_tokens += result.generated_tokens
        t.finished[result.finish_reason] = t.finished.get(result.finish_reason, 0) + 1
        try:
            req.sink(result)
        except Exception:
            log.exception("a request's sink failed")
        for obs in () if req.internal else list(self.observers):
            try:
                obs(req, result)
            except Exception:
                log.exception("observer failed")


def result_of(req: Request, finish: str, ids: list[int], text: str, cached: int, generated: int,
              seed: int | None = None, stop: str | None = None, error: str | None = None,
              code: str | None = None, source: str = "upstream") -> Result:
    """A request's Result from what the remote engine reported, timed here (TTFT from submission)."""
    now = time.perf_counter()
    first = req.first_token or now
    decode_s = now - first
    return Result(finish_reason=finish, text=text, token_ids=ids, prompt_tokens=len(req.prompt),
                  cached_tokens=cached, prefilled_tokens=len(req.prompt) - cached, generated_tokens=generated,
                  cache_source=source if cached else "none", cache_note="", ttft_s=first - req.arrived,
                  queue_s=0.0, decode_tps=(generated - 1) / decode_s if generated > 1 and decode_s > 0 else 0.0,
                  total_s=now - req.arrived, stop_string=stop, seed=seed, error=error, error_code=code,
                  max_tokens=req.max_new)
