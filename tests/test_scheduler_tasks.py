"""The scheduler thread's inbox takes a closed set of typed tasks (scheduler/tasks.py): anything else is refused
in the sender's thread, each task does its one job, and every task that raced with Stop is still answered."""

from __future__ import annotations

import threading

import pytest

import parley
from parley.sampling import SamplingParams
from parley.scheduler.request import Request, Result
from parley.scheduler.tasks import (
    STOPPED,
    TASKS,
    Cancel,
    Drop,
    Inbox,
    Persist,
    Retire,
    SetThreads,
    Stats,
    Stop,
    Submit,
    Tune,
    Unpin,
)
from tests.conftest import chatml


def test_the_inbox_refuses_anything_but_a_task():
    inbox = Inbox()
    for stranger in (("call", print), lambda: None, "stop", None):
        with pytest.raises(TypeError, match="not a scheduler task.*the inbox takes Submit, Cancel, Stats"):
            inbox.put(stranger)
    assert inbox.get_nowait() is None  # nothing got in
    inbox.put(Stop(save=False))
    assert inbox.get_nowait() == Stop(save=False) and inbox.get_nowait() is None


def test_the_named_tasks_do_their_job():
    """What the benchmarks used to do with closures on the engine thread, through named tasks and read back
    through public numbers."""
    p = parley.load(kv_size=1024, disk_cache_mb=0, ram_cache_mb=64)
    try:
        sched, eng = p.scheduler, p.engine
        sched.tune(kv_idle_cells=-1)
        assert sched.stats().kv_idle_cap == -1
        with pytest.raises(parley.ParleyError, match="kv_idle_cells"):
            sched.tune(kv_idle_cells=-2)  # checked like the flag, and raised in the caller's thread
        assert sched.stats().kv_idle_cap == -1
        with pytest.raises(ValueError, match="ctx_size"):
            sched.tune(ctx_size=10)  # set once, at start
        sched.tune(draft_max=0)
        assert sched.settings.draft_max == 0
        sched.set_threads(1)
        assert eng.governor is None  # fixed: one thread, no governor
        sched.set_threads(0)
        assert eng.governor is not None or eng.n_threads == 1  # back to auto (one core: nothing to govern)
        prompt = eng.tokenize(chatml("Say hello to every one of the seven lighthouse keepers on the coast, " * 2))
        assert len(prompt) >= 32  # long enough to be worth saving (prefix_cache.SAVE_MIN_TOKENS)
        assert sched.generate(prompt, SamplingParams(temperature=0, max_tokens=4)).finish_reason in ("stop", "length")
        st = sched.stats()
        assert st.live_sequences == 1 and st.busy_sequences == 0 and not st.kv_idle_moving
        sched.retire(prompt)  # its window moved on: to the RAM tier between two steps
        assert sched.stats().ram_states == 1 and sched.stats().live_sequences == 0
        assert sched.drop_cached(save=False) == 0
    finally:
        p.close(save=False)


def test_every_task_that_raced_with_stop_is_answered():
    """Stop and one task of each kind behind it, queued while the scheduler thread is busy: every Future gets
    RuntimeError("the scheduler has stopped"), every request a cancelled Result; nothing is left waiting."""
    p = parley.load(kv_size=1024, disk_cache_mb=0, ram_cache_mb=0)
    try:
        sched, eng = p.scheduler, p.engine
        handle, _ = sched.pin(eng.tokenize("You are a pinned persona. " * 8))
        held, release = threading.Event(), threading.Event()
        running: list = []

        def hold(event) -> None:  # a sink runs on the scheduler thread: the first chunk holds it mid-step
            running.append(event)
            held.set()
            release.wait(60)

        sched.submit(eng.tokenize(chatml("Tell me a long story.")), SamplingParams(max_tokens=64, seed=1), hold)
        assert held.wait(60)
        queued: list = []
        req = Request(prompt=[1, 2, 3], params=SamplingParams(), sink=queued.append)
        # straight onto the inbox, in this order: through the public methods a blocking call cannot be placed
        # behind Stop
        tasks = [Stop(save=False), Submit(req), Cancel(req), Stats(), Persist(handle), Unpin(handle),
                 Retire((1, 2, 3)), Drop(save=True), SetThreads(1), Tune((("draft_max", 0),))]
        assert {type(t) for t in tasks} == set(TASKS), "a new task kind needs its place here"
        for t in tasks:
            sched._inbox.put(t)
        release.set()
        for t in tasks:
            if hasattr(t, "future"):
                with pytest.raises(RuntimeError, match=STOPPED):
                    t.future.result(timeout=60)
        sched._thread.join(60)
        assert not sched._thread.is_alive()
        [result] = queued
        assert isinstance(result, Result) and result.finish_reason == "cancelled"
        assert isinstance(running[-1], Result) and running[-1].finish_reason == "cancelled"
        with pytest.raises(RuntimeError, match=STOPPED):
            sched.stats()  # after the stop, at once
    finally:
        p.close(save=False)
