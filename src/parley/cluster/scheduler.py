"""ClusterScheduler: the Scheduler's interface over parley's engine replicas on Ray Serve (cluster/replica.py),
through the application's DeploymentHandle. The ingress (parley serve --cluster) renders every prompt as it does
with its own engine; each request goes, with its conversation id, through AffinityRouter (cluster/router.py) to
the replica that holds the conversation's KV, and its Chunks and Result come back as the replica's scheduler made
them: stop strings, grammars and logprobs are done there.

A replica that dies mid-reply (a killed process, a lost node): the request goes on on another one with its prompt
plus the tokens delivered so far, so the reply continues where it stopped; Ray restarts the replica. Cancelling
cancels the replica's request. The replicas' counts (requests, prompt and cached tokens, failures) are in
stats().upstreams, one entry per replica, as an upstream server's are.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence

from parley.errors import InvalidRequest, ModelError, ParleyError
from parley.sampling import SamplingParams
from parley.scheduler.remote import RemoteScheduler, result_of
from parley.scheduler.request import Chunk, Request, Result, Status
from parley.scheduler.stream import Stream

log = logging.getLogger("parley.cluster")

TRIES = 4                  # replicas a request may try (each failure: one replica died under it)
INFO_TIMEOUT_S = 120.0     # the first replica's answer at start-up (it may still be loading its model)


class ReplicaLost(Exception):
    """A replica's stream ended without its Result (the replica went away)."""


@dataclasses.dataclass
class ReplicaCounts:
    name: str
    pid: int = 0
    running: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    failures: int = 0
    error: str = ""


class ClusterScheduler(RemoteScheduler):
    where = "the cluster's replicas"
    flag = "--cluster"

    def __init__(self, handle, *, context_size: int = 0, max_waiting: int = 256):
        self.handle = handle
        self.replicas: dict[str, ReplicaCounts] = {}
        try:
            info = handle.info.remote().result(timeout_s=INFO_TIMEOUT_S)
        except Exception as e:
            raise ModelError(f"no engine replica answered on the Ray cluster: {e}") from None
        self.n_vocab = info["n_vocab"]
        super().__init__(context_size=context_size or info["context_size"], max_waiting=max_waiting,
                         thread_name="parley-cluster")

    def pin(self, tokens: Sequence[int], *, persist: bool = False, watch=None) -> tuple[tuple[int, ...], Result]:
        """A document's prefix: read and pinned by the replica the router picks for it (its questions share the
        prefix and go there too). Returns (the key unpin takes, the Result)."""
        stream = Stream(lambda: None)
        req = self.submit(tokens, SamplingParams(max_tokens=1, temperature=0.0), stream.put, pin=True,
                          prefill_only=True, persist=persist)
        stream.request = req
        if watch is not None:
            watch(stream)
        result = stream.wait()
        if result.finish_reason == "error":
            raise InvalidRequest(f"could not read the prefix on the cluster: {result.error}", param="prefix")
        return tuple(tokens), result

    def unpin(self, slot) -> None:
        """Every replica drops its pin of these tokens (the one that read them, wherever the router has moved
        their questions since)."""
        if slot:
            self._call(self._unpin(list(slot)), 60)

    async def _unpin(self, tokens: list[int]) -> None:
        try:
            await self.handle.broadcast("unpin", tokens).results_async()
        except Exception as e:    # a replica that died took its pins with it
            log.warning("unpinning a prefix on the cluster failed: %s", e)

    def engine_stats(self) -> list[dict]:
        return self.replica_stats()

    def replica_stats(self) -> list[dict]:
        """Each replica this ingress has sent to, as an upstream's entry (url: the replica's name)."""
        return [{"url": c.name, "healthy": not c.error, "kind": "ray", "model": "", "context": self.context_size,
                 "running": c.running, "requests": c.requests, "prompt_tokens": c.prompt_tokens,
                 "cached_tokens": c.cached_tokens, "failures": c.failures, "error": c.error, "pid": c.pid}
                for c in list(self.replicas.values())]

    # ---- the loop thread: requests -----------------------------------------------------------------------
    async def _serve(self, req: Request, session: str | None, target: int | None = None) -> None:
        from ray.exceptions import RayActorError, RayTaskError
        from ray.serve.exceptions import DeploymentUnavailableError
        try:
            from ray.exceptions import ActorUnavailableError
        except ImportError:      # older Ray
            ActorUnavailableError = RayActorError  # noqa: N806
        lost = (RayActorError, ActorUnavailableError, ReplicaLost)
        delivered: list[int] = []
        before_final = 0         # tokens delivered before the attempt that gave the Result
        texts: list[str] = []
        logprobs: list = []
        final: Result | None = None
        finish, error, code = None, None, None
        counts: ReplicaCounts | None = None
        tries = 0
        try:
            while final is None and finish is None:
                tries += 1
                before_final = len(delivered)
                left = req.max_new - len(delivered)
                if delivered and left <= 0:
                    finish = "length"
                    break
                params = req.params.replace(max_tokens=max(1, left))
                call = self.handle.options(stream=True).complete.remote(
                    req.prompt + delivered, params, session=session, pin=req.pin, persist=req.id in self._persist)
                counts = None
                try:
                    async for event in call:
                        if isinstance(event, dict):
                            counts = self.replicas.setdefault(event["replica"], ReplicaCounts(event["replica"]))
                            counts.pid, counts.error = event.get("pid", 0), ""
                            counts.running += 1
                            req.status = Status.PREFILL
                        elif isinstance(event, Chunk):
                            if not req.first_token:
                                req.first_token = time.perf_counter()
                                req.status = Status.DECODE
                            delivered += event.token_ids
                            texts.append(event.text)
                            if event.logprobs:
                                logprobs += event.logprobs
                            req.sink(event)
                        elif isinstance(event, Result):
                            final = event
                    if final is None:
                        raise ReplicaLost("the replica's stream ended without a result")
                except asyncio.CancelledError:
                    call.cancel()
                    raise
                except lost as e:
                    call.cancel()        # (a replica still alive behind a broken stream stops generating)
                    if counts is not None:
                        counts.failures += 1
                        counts.error = "died mid-request"
                    log.warning("an engine replica failed under a request (%s); it moves on", type(e).__name__)
                    if tries >= TRIES:
                        finish, error, code = "error", f"{TRIES} replicas failed under this request", "replica_failed"
                    elif delivered and req.params.grammar is not None:
                        # a grammar would start over on the next replica mid-reply: end it rather than break it
                        finish, code = "error", "replica_failed"
                        error = "the replica generating this constrained reply failed mid-way; ask again"
                except DeploymentUnavailableError:
                    finish, code = "error", "replica_unavailable"
                    error = ("no engine replica runs on the Ray cluster: its application was deleted (parley cluster "
                             "up, or this front end's restart, deploys it again)")
                except RayTaskError as e:
                    cause = getattr(e, "cause", None)
                    finish, error = "error", str(cause or e)
                    code = cause.code if isinstance(cause, ParleyError) and getattr(cause, "code", None) else "internal"
                finally:
                    if counts is not None:
                        counts.running -= 1
        except asyncio.CancelledError:
            finish = "cancelled"
        except Exception as e:   # a bug here must end the request, never leave its consumer waiting
            log.exception("a cluster request failed")
            finish, error, code = "error", f"{type(e).__name__}: {e}", "internal"
        if final is not None and before_final == 0:     # one replica made the whole reply
            result = dataclasses.replace(final, ttft_s=(req.first_token or time.perf_counter()) - req.arrived,
                                         total_s=time.perf_counter() - req.arrived)
        elif final is not None:    # the reply spans replicas: its parts joined, the prompt the first one read
            result = result_of(req, final.finish_reason, delivered, "".join(texts), 0, len(delivered),
                               seed=final.seed, stop=final.stop_string, error=final.error, code=final.error_code,
                               source="replica")
            if logprobs:
                result.logprobs = logprobs
        else:
            result = result_of(req, finish or "error", delivered, "".join(texts), 0, len(delivered), error=error,
                               code=code, source="replica")
        if counts is not None and final is not None:
            counts.requests += 1
            if not req.internal:
                counts.prompt_tokens += len(req.prompt)
                counts.cached_tokens += result.cached_tokens
        self._finish(req, result)
