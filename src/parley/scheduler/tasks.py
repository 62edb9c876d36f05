"""The scheduler thread's inbox: a closed set of typed tasks, the only way other threads reach the engine's.

llama.cpp's server does the same with a task enum (completion, cancel, metrics, slot save/restore): what may
run on the thread that owns the model is a list you can read here, not any closure. `Scheduler._handle`
dispatches on the class; `Inbox.put` refuses anything else in the sender's thread (a programming error).

A task that answers carries a Future, set on the scheduler thread, or set to RuntimeError("the scheduler has
stopped") when the task raced with Stop; a Submit that raced with Stop gets a cancelled Result instead.
"""

from __future__ import annotations

import queue
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from parley.scheduler.request import Request

STOPPED = "the scheduler has stopped"


def _future() -> Any:
    return field(default_factory=Future, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Submit:
    """Queue a generation (its checks passed in the caller's thread)."""

    request: Request


@dataclass(frozen=True, slots=True)
class Cancel:
    """The request's cancel flag is set (by the caller, so it holds at once): wake the loop, whose next step ends
    the request, running or waiting."""

    request: Request


@dataclass(frozen=True, slots=True)
class Stats:
    """A SchedulerStats snapshot, taken between two steps."""

    future: Future = _future()


@dataclass(frozen=True, slots=True)
class Persist:
    """Write a pinned prefix's state to the disk tier now (a document: ready after a restart)."""

    slot: Any                       # prefix_cache.Slot
    future: Future = _future()


@dataclass(frozen=True, slots=True)
class Unpin:
    """Let a pinned prefix be evicted again."""

    slot: Any                       # prefix_cache.Slot
    future: Future = _future()


@dataclass(frozen=True, slots=True)
class Retire:
    """The sequences holding these tokens (an earlier window) will not be continued: move them out. Nobody waits."""

    tokens: Sequence[int]


@dataclass(frozen=True, slots=True)
class Drop:
    """Forget every idle, unpinned sequence (saved to the RAM/disk tiers first when `save`); answers how many."""

    save: bool
    future: Future = _future()


@dataclass(frozen=True, slots=True)
class SetThreads:
    """Decode with `n` threads from the next step on (0: every core, with the thread governor)."""

    n: int
    future: Future = _future()


@dataclass(frozen=True, slots=True)
class Tune:
    """Use these settings (name, value) from the next step on: one of TUNABLE, checked like the flag."""

    changes: tuple[tuple[str, int], ...]
    future: Future = _future()


@dataclass(frozen=True, slots=True)
class Stop:
    """End the loop: running and waiting requests are cancelled, then (with `save`) KV states go to disk."""

    save: bool


Task = Submit | Cancel | Stats | Persist | Unpin | Retire | Drop | SetThreads | Tune | Stop
TASKS: tuple[type, ...] = (Submit, Cancel, Stats, Persist, Unpin, Retire, Drop, SetThreads, Tune, Stop)
Answering = Stats | Persist | Unpin | Drop | SetThreads | Tune  # those that carry a Future


class Inbox:
    """A FIFO of tasks from any thread to the scheduler's; it takes only the tasks above."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Task] = queue.SimpleQueue()

    def put(self, task: Task) -> None:
        if not isinstance(task, TASKS):
            raise TypeError(f"not a scheduler task: {task!r}; the inbox takes "
                            f"{', '.join(t.__name__ for t in TASKS)}")
        self._queue.put(task)

    def get(self, timeout: float | None = None) -> Task | None:
        """The next task, waiting for one (at most `timeout` seconds: None when none came)."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def get_nowait(self) -> Task | None:
        """The next task, or None when there is none."""
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None
