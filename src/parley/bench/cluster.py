"""cluster: parley's engine replicated on Ray Serve (--cluster, issue #20), on this machine's cores, in one run: a
local Ray cluster, the replicas deployed one way after another, parley's ingress in this process (its chat
stage, as `parley serve --cluster` runs it). Needs Ray (pip install 'parley[cluster]').

The workload: C conversations at once, each with its own persona, each taking its next turn a moment (up to
THINK_S, at random) after its last reply came, the replies of varied length (C users typing fast). Each replica's KV (--kv-size, no RAM or disk tier) holds a few more than half of
them: the cluster's cache is the sum of its replicas' only when each conversation stays on one.

    affinity      2 replicas x 1 thread: TTFT of a returning conversation's turn with parley's AffinityRouter
                  (the replica holding its KV) against round-robin (target >= 2x, on the mean: a miss is the
                  tail), and, in the full run, against Ray Serve's default router (power of two choices, by queue
                  length); the share of their prompts found cached
    replicas      aggregate decode tok/s of the same workload: 2 replicas x 1 thread (affinity) against 1 replica
                  x 2 threads with twice the KV, on the same 2 cores (what a second replica adds where there is no
                  second machine)

What it implies for 2 machines is in the notes: each replica there has a machine's cores, so the aggregate is about
twice the 1-replica row (extrapolated: the ingress and the network hop are not measured here).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from parley.bench.common import BenchContext, Row, ScenarioResult, median, percentile
from parley.bench.content import persona, user_turns

WHAT = ("parley's engine replicas on a local Ray Serve cluster: a returning conversation's TTFT with parley's "
        "affinity router vs round-robin (and Ray's default router); 2 replicas vs 1 on the same cores")


THINK_S = 0.3      # the most a user pauses between a reply and the next turn


@dataclass(frozen=True)
class Sizes:
    conversations: int
    persona_tokens: int
    turns: int
    reply_tokens: int


FULL = Sizes(conversations=12, persona_tokens=400, turns=5, reply_tokens=24)
QUICK = Sizes(conversations=6, persona_tokens=150, turns=3, reply_tokens=8)


def kv_cells(sz: Sizes) -> int:
    """A replica's KV: a few more than half the conversations at their longest (persona, every turn and reply)."""
    longest = sz.persona_tokens + 40 + sz.turns * (sz.reply_tokens + 30)
    return (sz.conversations // 2 + 1) * longest


def ingress(ctx: BenchContext, model: str, settings: dict):
    import parley
    return parley.load(model, cluster="local", home=str(ctx.home), **settings)


def conversations(p, sz: Sizes, log, label: str) -> dict:
    """Every conversation at once, each in its own thread taking its turns back to back: the TTFT and cache of
    every turn after the first, and the aggregate decode tok/s over the whole run."""
    import threading
    tokenize = p.tokenize
    chats = [p.chat(system=persona(200 + k, sz.persona_tokens, lambda t: tokenize(t)), temperature=0,
                    max_tokens=sz.reply_tokens, ignore_eos=True) for k in range(sz.conversations)]
    turns: list[dict] = []
    generated = [0] * len(chats)
    errors: list[str] = []

    def talk(k: int) -> None:
        rng = random.Random(k)     # a user's pauses and a reply's length vary, as they do in a real chat
        try:
            for turn, question in enumerate(user_turns(300 + k, sz.turns)):
                time.sleep(rng.uniform(0, THINK_S))
                chats[k].ask(question, max_tokens=rng.randint(sz.reply_tokens // 2, sz.reply_tokens * 3 // 2))
                r = chats[k].last.result
                generated[k] += r.generated_tokens
                if turn:
                    turns.append({"ttft_s": r.ttft_s, "cached": r.cached_tokens, "prompt": r.prompt_tokens})
        except Exception as e:     # the run reports it; the other conversations go on
            errors.append(f"{type(e).__name__}: {e}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=talk, args=(k,)) for k in range(len(chats))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{label}: {len(errors)} conversations failed: {errors[0]}")
    log(f"cluster: {label}: {sum(generated) / wall:.1f} tok/s over {len(chats)} conversations")
    return {"returning": turns, "tok_s": sum(generated) / wall, "wall_s": wall}


def run(ctx: BenchContext) -> ScenarioResult:
    from parley.cluster import deploy
    from parley.models.registry import ModelRegistry

    try:
        import ray
    except ImportError:
        raise RuntimeError("the cluster scenario needs Ray Serve: pip install 'parley[cluster]'") from None
    sz = QUICK if ctx.quick else FULL
    kv = kv_cells(sz)
    base = dict(disk_cache_mb=0, ram_cache_mb=0)
    res = ScenarioResult("cluster", WHAT, config={
        "ray": ray.__version__, "cores": ctx.threads, "replica_kv_size": kv, "replica_tiers": "none (RAM, disk 0)",
        "sampling": "temperature 0", **{k: getattr(sz, k) for k in sz.__dataclass_fields__}})
    from parley.settings import Settings

    def settings(**changes):
        return Settings.from_env(home=str(ctx.home), **base, **changes)

    arms = [("affinity", "affinity", 2, 1, kv), ("round-robin", "round-robin", 2, 1, kv),
            *([] if ctx.quick else [("pow2", "pow2", 2, 1, kv)]), ("1 replica", "affinity", 1, 2, 2 * kv)]
    data: dict[str, dict] = {}
    registry = ModelRegistry(ctx.home / "models")
    deploy.connect("local")
    try:
        for label, router, n, threads, kv_size in arms:
            p = None
            # the model registered under the arm's name: an application of its own (a process keeps one router
            # per deployment it has called, so an application deleted and deployed again keeps the first one's)
            entry = registry.add(ctx.model, name=f"cluster-{router}-{n}")
            try:       # this arm's application first: the ingress finds it running and uses it as it is
                deploy.deploy(entry.name, entry.path, settings(threads=threads, kv_size=kv_size), n, router=router)
                p = ingress(ctx, entry.name, dict(base, threads=threads, kv_size=kv_size))
                p.chat(temperature=0, max_tokens=2).ask("Hello.")     # warm-up, not counted
                data[label] = conversations(p, sz, ctx.log, label)
                data[label]["replicas"] = p.scheduler.replica_stats()
            finally:
                if p is not None:
                    p.close(save=False)
                deploy.down(entry.name)
    finally:
        ray.shutdown()     # (serve.shutdown() first has Ray print its controller's death on stdout)

    res.data = data
    a = data["affinity"]["returning"]
    ta = [x["ttft_s"] for x in a]
    share = lambda xs: sum(x["cached"] for x in xs) / max(1, sum(x["prompt"] for x in xs))  # noqa: E731
    what = f"{sz.conversations} conversations, {sz.persona_tokens}-token personas, turns 2-{sz.turns}"
    for label, name in (("round-robin", "round-robin"), ("pow2", "Ray Serve's default router (pow2)")):
        if label not in data:
            continue
        b = data[label]["returning"]
        tb = [x["ttft_s"] for x in b]
        res.rows += [
            Row(f"TTFT, a returning conversation, mean ({what})", "s", sum(ta) / len(ta), name, sum(tb) / len(tb),
                False, target=2.0 if label == "round-robin" else None),
            Row("TTFT, a returning conversation, median", "s", median(ta), name, median(tb), False),
            Row("TTFT, a returning conversation, p90", "s", percentile(ta, 90), name, percentile(tb, 90), False),
            Row("prompt share cached, returning turns", "%", round(100 * share(a), 1), name, round(100 * share(b), 1),
                note="each replica's KV holds a few more than half the conversations"),
        ]
        res.notes.append(f"{share(a):.0%} of the returning turns' prompt tokens were cached on the replica the "
                         f"affinity router sent them to, {share(b):.0%} with {name}, which spreads each "
                         "conversation over both replicas, so each holds every conversation's KV in half the room")
    two, one = data["affinity"]["tok_s"], data["1 replica"]["tok_s"]
    res.rows.append(Row(f"aggregate decode tok/s, {sz.conversations} conversations, 2 replicas x 1 thread", "tok/s",
                        two, "1 replica x 2 threads, twice the KV, same cores", one,
                        note="both on this machine's 2 cores: no second machine's cores to add"))
    res.notes.append(
        f"2 machines (extrapolated, not measured): a replica on each with its own {ctx.threads} cores gives about 2x "
        f"the 1-replica row, {2 * one:.0f} tok/s, less what the ingress and the network hop take")
    return res
