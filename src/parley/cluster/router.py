"""AffinityRouter: Ray Serve's request router for parley's engine replicas (RequestRouterConfig names it; it runs
in the ingress, inside the DeploymentHandle). Each conversation goes to the replica that holds its KV, as Ray's
PrefixCacheAffinityRouter sends a prompt where its prefix went; parley knows the conversation, so it need not
guess from text:

  - a request with a `session` (a conversation id) goes by consistent hashing with bounded loads over the
    replicas' ranks (upstream/route.Router's "bounded" policy, on the ring the upstream engines use): a new
    conversation goes to its owner on the ring unless that replica already holds 10% over its share of the
    conversations, and stays where it went; a rank keeps its place when Ray restarts its replica, and a replica
    added takes new conversations (the others' stay where their KV is);
  - one without (a raw completion, a document question, a stateless chat request) goes where the longest prefix
    of its token ids went before, in whole blocks;
  - by load: a conversation stays on its replica while that one takes requests (a move re-reads its whole
    history elsewhere, dearer than waiting behind a batch); Ray moves it when the replica is full
    (max_ongoing_requests, cluster/deploy.py) or gone. A request without one goes where its prefix went unless
    that replica runs route.MOVE_OVER more than the least loaded (the balanced policy), counting the requests
    this router has chosen and not yet seen complete.

It returns two ranks: the chosen replica, then the others (Ray takes the one of them with the shortest queue it
knows of) for when the chosen one is full or gone.
"""

from __future__ import annotations

from collections import defaultdict

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

from parley.upstream.route import Router

FORGET_CHOSEN = 4096    # choices remembered until routed (a request cancelled before it was is forgotten)


def ring_name(replica: RunningReplica) -> str:
    """The replica's place on the ring: its rank (stable across restarts), else its id."""
    rank = replica.replica_metadata.get("rank")
    return f"rank-{rank}" if rank is not None else replica.replica_id.unique_id


class AffinityRouter(RequestRouter):
    def initialize_state(self) -> None:
        self._names: tuple[str, ...] = ()
        self._routers: dict[str, Router] = {}
        self._in_flight: dict[ReplicaID, int] = defaultdict(int)    # routed, not completed
        self._choosing: dict[str, tuple[ReplicaID, PendingRequest]] = {}   # chosen first, not routed yet

    def _router_for(self, replicas: list[RunningReplica], session: str | None) -> Router:
        """Conversations by bounded loads, the rest balanced: one ring (the same names), two policies. A new set of
        names (a replica added or removed) keeps every placement on a name still there."""
        names = tuple(sorted({ring_name(r) for r in replicas}))
        if names != self._names:     # the same ranks: the same rings and placements
            self._names = names
            routers = {policy: Router(names, policy) for policy in ("bounded", "balanced")}
            for policy, router in routers.items():
                if policy in self._routers:
                    router.adopt(self._routers[policy])
            self._routers = routers
        return self._routers["bounded" if session else "balanced"]

    def _load(self, replica: RunningReplica) -> int:
        """Requests this router sent there and has not seen complete, counting those chosen in the same instant
        (a burst is routed before any of it arrives), or what the replica last reported, if more."""
        rid = replica.replica_id
        for key in [k for k, (_, p) in self._choosing.items() if p.future.done()]:   # routed or cancelled
            del self._choosing[key]
        choosing = sum(1 for r, _ in self._choosing.values() if r == rid)
        return max(self._in_flight[rid] + choosing, self._replica_queue_len_cache.get(rid) or 0)

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        least_first = sorted(candidate_replicas, key=self._load)
        if pending_request is None:
            return [least_first]
        session = pending_request.kwargs.get("session")
        prompt = pending_request.args[0] if pending_request.args else []
        router = self._router_for(list(self._replicas.values()) or candidate_replicas, session)
        by_name = {ring_name(r): r for r in candidate_replicas}
        names = self._names
        chosen = router.route(session, prompt, lambda i: names[i] in by_name,
                              lambda i: self._load(by_name[names[i]]) if names[i] in by_name else 0)
        if chosen is None:
            return [least_first]
        first = by_name[names[chosen]]
        self._choosing[pending_request.metadata.internal_request_id] = (first.replica_id, pending_request)
        if len(self._choosing) > FORGET_CHOSEN:     # requests cancelled before they were routed
            del self._choosing[next(iter(self._choosing))]
        rest = [r for r in least_first if r is not first]
        return [[first], rest] if rest else [[first]]

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result) -> None:
        self._choosing.pop(pending_request.metadata.internal_request_id, None)
        self._in_flight[replica_id] += 1

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        if self._in_flight[replica_id] > 0:
            self._in_flight[replica_id] -= 1

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._in_flight.pop(replica_id, None)


class RoundRobinRouter(RequestRouter):
    """Each request to the next replica in turn: the baseline `parley bench cluster` measures affinity against."""

    def initialize_state(self) -> None:
        self._next = 0

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        ordered = sorted(candidate_replicas, key=ring_name)
        self._next += 1
        k = self._next % len(ordered)
        return [[r] for r in ordered[k:] + ordered[:k]]     # one per rank: the next one, unless it is full
