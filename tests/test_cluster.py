"""Parley's engine replicated on Ray Serve (--cluster), as a user runs it: a real local Ray cluster on this
machine's CPUs, replicas of the embedded model at 1 thread each, parley's own ingress in front. Affinity (a
conversation's later turns hit its replica's cache), a replica killed mid-reply (the reply continues elsewhere,
no conversation lost, Ray restarts it), scaling from 1 replica to 2. Skipped without Ray (parley[cluster])."""

from __future__ import annotations

import os
import signal
import time

import pytest

import parley
from parley.sampling import SamplingParams

pytest.importorskip("ray.serve")

QUICK = dict(temperature=0, max_tokens=4)


@pytest.fixture(scope="module")
def front(tmp_path_factory):
    import ray
    from ray import serve
    home = tmp_path_factory.mktemp("cluster")
    p = parley.load(cluster="local", replicas=2, threads=1, home=str(home), disk_cache_mb=0)
    try:
        yield p
    finally:
        p.close(save=False)
        serve.shutdown()
        ray.shutdown()


def replica_of(p, before: dict[str, int]) -> str:
    """The replica whose request count grew since `before` (one request in between)."""
    grown = [u["url"] for u in p.scheduler.replica_stats() if u["requests"] > before.get(u["url"], 0)]
    assert len(grown) == 1, grown
    return grown[0]


def counts(p) -> dict[str, int]:
    return {u["url"]: u["requests"] for u in p.scheduler.replica_stats()}


def wait_running(model: str, n: int, timeout: float = 90) -> None:
    from parley.cluster import deploy
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        app = deploy.status().get(deploy.app_name(model), {})
        states = {k: v for k, v in app.get("replicas", {}).items() if v}
        if states == {"RUNNING": n}:
            return
        time.sleep(0.5)
    raise AssertionError(f"{n} replicas not running after {timeout} s: {deploy.status()}")


def test_scaling_from_one_replica_to_two_keeps_the_first_and_spreads_conversations(front):
    from parley.cluster import deploy
    name, path = front.name, front.info.path
    deploy.scale(name, path, front.settings, 1)
    wait_running(name, 1)
    first = front.scheduler.handle.info.remote().result(timeout_s=60)
    # a persona each, long enough to be kept (a tail of a few tokens past a shared prefix is recomputed instead)
    chats = [front.chat(system=f"You are guide number {k}. " + "You answer briefly and kindly. " * 12, **QUICK)
             for k in range(4)]
    before = counts(front)
    for chat in chats:
        chat.ask("Hi")
    assert {replica_of(front, before)} <= {first["name"]} and sum(counts(front).values()) - sum(before.values()) == 4

    deploy.scale(name, path, front.settings, 2)
    wait_running(name, 2)
    served = set()
    for _ in range(12):        # new conversations hash over both replicas now (12 all on one: p < 0.001)
        before = counts(front)
        front.chat(system="Be brief.", **QUICK).ask("Hello")
        served.add(replica_of(front, before))
    assert served == {"replica-0", "replica-1"}
    pids = {u["url"]: u["pid"] for u in front.scheduler.replica_stats()}
    assert pids[first["name"]] == first["pid"]          # the first replica was kept, not restarted
    # the conversations of before the scale-up stay where their KV is: the first replica, their prompt cached
    for chat in chats:
        previous = chat.last.result.prompt_tokens
        before = counts(front)
        assert chat.ask("Again?")
        assert replica_of(front, before) == first["name"]
        assert chat.last.result.cached_tokens >= previous, (chat.last.result.stats, chat.last.result.cache_note)


def test_a_conversation_sticks_to_its_replica_and_its_prefix_hits_there(front):
    wait_running(front.name, 2)
    chats = [front.chat(system="You are brief.", **QUICK) for _ in range(6)]
    where: dict[str, str] = {}
    previous: dict[str, int] = {}
    for turn, question in enumerate(["Name a fruit.", "Name another.", "And a colour?"]):
        for chat in chats:
            before = counts(front)
            chat.ask(question)
            r = chat.last.result
            assert r.finish_reason in ("stop", "length"), r.error
            served = replica_of(front, before)
            if turn:     # the replica holds the whole previous prompt (prompts extend each other)
                assert served == where[chat.id]
                assert r.cached_tokens >= previous[chat.id], (turn, r.stats)
                # live, or the RAM tier when the replica was quiet long enough to move it out (Scheduler._wait)
                assert r.cache_source in ("live", "ram")
            where[chat.id] = served
        previous = {c.id: c.last.result.prompt_tokens for c in chats}
    stats = front.scheduler.replica_stats()
    assert sum(u["cached_tokens"] for u in stats) >= 0.5 * sum(u["prompt_tokens"] for u in stats)


def test_structured_output_stop_strings_and_logprobs_are_done_by_the_replica(front):
    prompt = front.tokenize("List three colours, one per line:\n1.")
    r = front.generate(prompt, SamplingParams(max_tokens=40, temperature=0, stop=("\n",), logprobs=2)).wait()
    assert r.finish_reason == "stop" and r.stop_string == "\n" and "\n" not in r.text
    assert r.logprobs is not None and len(r.logprobs) == len(r.token_ids)
    from parley.sampling import Grammar
    g = Grammar("json_schema", '{"type":"object","properties":{"n":{"type":"integer"}},"required":["n"]}')
    r = front.generate(front.tokenize("A number as JSON:"), SamplingParams(max_tokens=20, temperature=0,
                                                                           grammar=g)).wait()
    import json
    assert isinstance(json.loads(r.text)["n"], int)


def test_a_cancelled_reply_stops_on_its_replica(front):
    prompt = front.tokenize("Tell me a long story.")
    replica_stats = lambda: front.scheduler.handle.stats.remote(prompt).result(timeout_s=30)  # noqa: E731 (routed
    # as the story was: where its prompt went)
    cancelled = replica_stats().totals.finished.get("cancelled", 0)
    stream = front.generate(prompt, SamplingParams(max_tokens=400, ignore_eos=True, temperature=0))
    for i, _ in enumerate(stream):
        if i == 3:
            break                    # leaving the iteration cancels
    deadline = time.monotonic() + 20
    while replica_stats().running and time.monotonic() < deadline:
        time.sleep(0.1)
    st = replica_stats()
    assert st.running == 0 and st.totals.finished.get("cancelled", 0) == cancelled + 1


def test_a_replica_killed_mid_reply_the_reply_finishes_elsewhere_and_no_conversation_is_lost(front):
    wait_running(front.name, 2)
    chats = [front.chat(system="Be brief.", **QUICK) for _ in range(4)]
    for chat in chats:
        chat.ask("Hi")
    long = front.chat(system="Tell long stories.", temperature=0, max_tokens=120, ignore_eos=True)
    stream = long.send("A story about a lighthouse.")
    pieces = []
    killed = None
    for piece in stream:
        pieces.append(piece)
        if killed is None and len(pieces) == 5:
            busy = [u for u in front.scheduler.replica_stats() if u["running"]]
            assert len(busy) == 1
            killed = busy[0]
            os.kill(killed["pid"], signal.SIGKILL)
    r = long.last.result
    assert r.finish_reason == "length" and r.generated_tokens == 120, r.stats
    assert "".join(pieces) == r.text
    failed = {u["url"]: u["failures"] for u in front.scheduler.replica_stats()}
    assert failed[killed["url"]] >= 1
    for chat in chats:       # every conversation answers its next turn, on whichever replica holds it now
        assert chat.ask("Still there?")
    for chat in [*chats, long]:
        stored = front.conversations.get(chat.id).messages
        assert [m.role for m in stored][-2:] == ["user", "assistant"] and stored[-1].content
    wait_running(front.name, 2)      # Ray brought the killed one back


def test_with_its_application_deleted_a_request_fails_at_once_with_a_503(front):
    """Last here: `parley cluster down` while a front end runs. Its requests end in an error naming the cause,
    which the HTTP edge answers as 503 (retry later), not a hang or a 500."""
    from parley.cluster import deploy
    from parley.server.responses import failure
    deploy.down(front.name)
    t0 = time.monotonic()
    r = front.generate(front.tokenize("Hi"), SamplingParams(max_tokens=2)).wait()
    assert r.finish_reason == "error" and r.error_code == "replica_unavailable", r
    assert time.monotonic() - t0 < 30
    err = failure(r)
    assert err.status == 503 and "parley cluster up" in str(err)
