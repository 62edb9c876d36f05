"""ServerState: what the route handlers share (the model, the limits, the metrics, the conversations, the
generations running now, and whether the server is draining for a shutdown)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from parley.api import Parley
from parley.server.limits import ConcurrencyGate
from parley.server.metrics import Metrics
from parley.server.settings import ServerSettings


@dataclass
class Drain:
    """Set by the first SIGTERM / Ctrl-C (server/lifecycle.py): new work is refused with `reason`; running
    replies may go on until `deadline` (time.monotonic())."""

    reason: str | None = None
    deadline: float = 0.0

    @property
    def active(self) -> bool:
        return self.reason is not None

    def start(self, reason: str, grace_s: float) -> None:
        if self.reason is None:
            self.reason = reason
            self.deadline = time.monotonic() + grace_s

    def end_grace(self) -> None:
        self.deadline = min(self.deadline, time.monotonic())


@dataclass
class ServerState:
    parley: Parley                      # the one door: handlers call it and nothing below it
    settings: ServerSettings
    metrics: Metrics
    gate: ConcurrencyGate
    started: float = field(default_factory=time.time)
    generations: set[Any] = field(default_factory=set)           # streaming.Generation objects not yet closed
    attached: list[Any] = field(default_factory=list)   # parts of the app that drain with it (the web page):
                                                        # running() -> replies still going, close()
    drain: Drain = field(default_factory=Drain)


def get_state(request: Request) -> ServerState:
    return request.app.state.parley_server


State = Annotated[ServerState, Depends(get_state)]
