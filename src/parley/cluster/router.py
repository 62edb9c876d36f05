"""AffinityRouter: Ray Serve's request router for parley's engine replicas (RequestRouterConfig names it; it runs
in the ingress, inside the DeploymentHandle). Each conversation goes to the replica that holds its KV, as Ray's
PrefixCacheAffinityRouter sends a prompt where its prefix went; parley knows the conversation, so it need not
guess from text:

  - a request with a `session` (a conversation id) goes by consistent hashing on it over the replicas' ranks
    (upstream/route.Router, the ring the upstream engines use): a rank keeps its place when Ray restarts its
    replica, and adding a replica moves only the conversations the new one takes;
  - one without (a raw completion, a document question, a stateless chat request) goes where the longest prefix
    of its token ids went before, in whole blocks;
  - by load: the requests in flight this router sent to each replica; a conversation whose replica runs
    route.MOVE_OVER more than the least loaded moves there, and stays (the balanced policy).

It returns ranks: the chosen replica first, then the others least loaded first, so when the chosen one is full
(max_ongoing_requests) or gone, Ray takes the next.
"""

from __future__ import annotations

from collections import defaultdict

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

from parley.upstream.route import Router

POLICY = "balanced"


def ring_name(replica: RunningReplica) -> str:
    """The replica's place on the ring: its rank (stable across restarts), else its id."""
    rank = replica.replica_metadata.get("rank")
    return f"rank-{rank}" if rank is not None else replica.replica_id.unique_id


class AffinityRouter(RequestRouter):
    def initialize_state(self, policy: str = POLICY) -> None:
        self._policy = policy
        self._names: tuple[str, ...] = ()
        self._router: Router | None = None
        self._in_flight: dict[ReplicaID, int] = defaultdict(int)

    def _router_for(self, replicas: list[RunningReplica]) -> Router:
        names = tuple(sorted({ring_name(r) for r in replicas}))
        if self._router is None or names != self._names:     # the same ranks: the same ring and placements
            self._names, self._router = names, Router(names, self._policy)
        return self._router

    def _load(self, replica: RunningReplica) -> int:
        cached = self._replica_queue_len_cache.get(replica.replica_id)
        return max(self._in_flight[replica.replica_id], cached or 0)

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        router = self._router_for(list(self._replicas.values()) or candidate_replicas)
        by_name = {ring_name(r): r for r in candidate_replicas}
        names = self._names
        least_first = sorted(candidate_replicas, key=self._load)
        if pending_request is None:
            return [least_first]
        session = pending_request.kwargs.get("session")
        prompt = pending_request.args[0] if pending_request.args else []
        chosen = router.route(session, prompt, lambda i: names[i] in by_name,
                              lambda i: self._load(by_name[names[i]]) if names[i] in by_name else 0)
        if chosen is None:
            return [least_first]
        first = by_name[names[chosen]]
        rest = [r for r in least_first if r is not first]
        return [[first], rest] if rest else [[first]]

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result) -> None:
        self._in_flight[replica_id] += 1

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        if self._in_flight[replica_id] > 0:
            self._in_flight[replica_id] -= 1

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._in_flight.pop(replica_id, None)
