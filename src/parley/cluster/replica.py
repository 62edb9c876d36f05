"""Replica: one of parley's engines in a Ray Serve replica (cluster/deploy.py deploys them). It is parley's own
engine and scheduler, whole: continuous batching over the requests routed to it, its prefix cache in the llama.cpp
context, its RAM and disk tiers (the disk tier under $PARLEY_HOME/replicas/<rank>, so a replica restarted in the
same rank on the same node finds what its predecessor saved). Token ids in, Chunks and a Result out, as the local
Scheduler gives them: stop strings, grammars and logprobs are all done here, by the engine that samples.

Ray carries the calls between parley's own processes (its serialization; nothing from outside is read back).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Sequence

from parley.engine.llamacpp import EngineConfig, LlamaCppEngine
from parley.sampling import SamplingParams
from parley.scheduler.request import Chunk, Result
from parley.scheduler.scheduler import Scheduler
from parley.scheduler.stream import Stream
from parley.settings import Settings


def pin_key(tokens: Sequence[int]) -> str:
    return hashlib.blake2b(b"".join(t.to_bytes(4, "little", signed=True) for t in tokens), digest_size=12).hexdigest()


class Replica:
    def __init__(self, model_path: str, settings: Settings):
        from ray import serve
        context = serve.get_replica_context()
        rank = getattr(context, "rank", None)
        self.rank = int(getattr(rank, "rank", rank) or 0)
        self.name = f"replica-{self.rank}"
        self.replica_id = context.replica_id.unique_id
        s = settings
        cfg = EngineConfig.from_settings(s.engine, batch_tokens=s.scheduler.batch_tokens, model_path=model_path)
        self.engine = LlamaCppEngine(cfg)
        cache_dir = s.data_dir / "replicas" / str(self.rank) if s.scheduler.disk_cache_mb > 0 else None
        self.scheduler = Scheduler(self.engine, s.scheduler, cache_dir=cache_dir)
        self._pins: dict[str, object] = {}

    # ---- Ray Serve's hooks -------------------------------------------------------------------------------
    def record_replica_metadata(self) -> dict:
        """Read once by the routers when the replica is ready: its rank names its place on their ring."""
        return {"rank": self.rank, "name": self.name}

    def check_health(self) -> None:
        """Ray's health check: a scheduler thread that died fails it (Ray restarts the replica)."""
        if not self.scheduler._thread.is_alive():
            raise RuntimeError(f"{self.name}: the scheduler thread has stopped")

    def __del__(self):
        scheduler = getattr(self, "scheduler", None)
        if scheduler is not None:
            scheduler.close(save=True)

    # ---- requests (through the ingress's DeploymentHandle) -----------------------------------------------
    def info(self) -> dict:
        return {"name": self.name, "rank": self.rank, "replica_id": self.replica_id, "pid": os.getpid(),
                "context_size": self.scheduler.context_size, "n_vocab": self.engine.n_vocab,
                "threads": self.engine.n_threads, "kv_cells": self.scheduler.cache.kv_budget}

    async def complete(self, prompt: list[int], params: SamplingParams, *, session: str | None = None,
                       pin: bool = False, persist: bool = False) -> AsyncIterator[dict | Chunk | Result]:
        """A generation, streamed: first who serves it ({"replica": name, ...}), then its Chunks, then its Result.
        `session` is read by the router only (cluster/router.py). Leaving early (the ingress cancelled, or went
        away) cancels the request in the scheduler; its KV so far stays cached. `pin`: read the prompt and keep
        its KV pinned (a document), until unpin() with the same tokens."""
        yield {"replica": self.name, "rank": self.rank, "pid": os.getpid()}
        if pin:
            slot, result = await asyncio.to_thread(self.scheduler.pin, prompt, persist=persist)
            old = self._pins.pop(pin_key(prompt), None)
            if old is not None:
                self.scheduler.unpin(old)
            if slot is not None:
                self._pins[pin_key(prompt)] = slot
            yield result
            return
        holder: list = []
        stream = Stream(lambda: self.scheduler.cancel(holder[0]) if holder else None, asyncio.get_running_loop())
        holder.append(self.scheduler.submit(prompt, params, stream.put, session=session))
        stream.request = holder[0]
        async for chunk in stream:      # leaving early (CancelledError, GeneratorExit) cancels the request
            yield chunk
        yield stream.result

    def unpin(self, prompt: list[int], *, session: str | None = None) -> bool:
        """Unpin the KV pinned for these tokens (the router sends this where the pin went); False: not here."""
        slot = self._pins.pop(pin_key(prompt), None)
        if slot is None:
            return False
        self.scheduler.unpin(slot)
        return True

    def stats(self, prompt: list[int] | None = None, *, session: str | None = None):
        """The replica's scheduler snapshot (`prompt`, `session`: for the router, to ask the replica they go to)."""
        return self.scheduler.stats()
