"""ServerState: what the route handlers share (the model, the limits, the metrics, the conversations)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from parley.server.conversation_store import ConversationStore
from parley.server.limits import ConcurrencyGate
from parley.server.metrics import Metrics
from parley.server.settings import ServerSettings


@dataclass
class ServerState:
    parley: object                      # parley.api.Parley (not imported: tests may pass a stand-in)
    settings: ServerSettings
    metrics: Metrics
    gate: ConcurrencyGate
    conversations: ConversationStore
    started: float = field(default_factory=time.time)
    background: set[asyncio.Task] = field(default_factory=set)   # cleanup tasks of cancelled generations


def get_state(request: Request) -> ServerState:
    return request.app.state.parley_server


State = Annotated[ServerState, Depends(get_state)]
