"""The facade's event-loop guard (api/guard.py): a blocking call made on a loop an edge guards raises at once,
naming the call; on any other loop (a notebook's, a test's) or on no loop at all it runs. No model needed."""

from __future__ import annotations

import asyncio

import pytest

from parley.api.guard import LoopGuard, blocking


class Door:
    def __init__(self, guard: LoopGuard):
        self._guard = guard

    @blocking
    def read(self) -> str:
        return "rows"


def test_a_blocking_call_on_a_guarded_loop_raises_and_names_itself():
    guard = LoopGuard()
    door = Door(guard)

    async def on_the_loop():
        guard.guard(asyncio.get_running_loop())
        with pytest.raises(RuntimeError, match="Door.read blocks and was called on the event loop"):
            door.read()
        assert await asyncio.to_thread(door.read) == "rows"     # off the loop: fine
        guard.release(asyncio.get_running_loop())
        assert door.read() == "rows"                            # released: fine again

    asyncio.run(on_the_loop())


def test_other_loops_and_plain_threads_are_left_alone():
    guard = LoopGuard()
    door = Door(guard)
    guarded = asyncio.new_event_loop()
    guard.guard(guarded)
    try:
        assert door.read() == "rows"                            # no loop running here

        async def elsewhere():
            return door.read()                                  # a loop nobody guards (a notebook's)
        assert asyncio.run(elsewhere()) == "rows"
    finally:
        guarded.close()
