"""Serving the app: the uvicorn configuration parley uses, and a graceful stop on SIGTERM or Ctrl-C.

    server = make_server(app, settings, log_level="warning")    # a uvicorn.Server
    server.run(sockets=[sock])

The stop, step by step:
1. The first signal starts draining (`ServerState.drain`): the listening socket stays open, but every new
   request gets 503 `shutting_down` in the OpenAI error shape (DrainGate); running replies go on (the web
   page's too).
2. When none is left, or `shutdown_grace` has passed, the web page ends its replies and closes its event
   streams, and the API's replies still running are cancelled through the scheduler: each ends with finish_reason "cancelled" and its proper last event (a stream: the closing chunk,
   then `data: [DONE]`; a waiting request: its JSON answer). A second signal ends the grace period at once.
3. Then uvicorn stops: every reply has been answered, so no task is cancelled mid-write (no CancelledError,
   no plain-text 500). The caller closes the model, which saves the KV cache. A third signal exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time

import uvicorn

from parley.errors import ShuttingDown
from parley.server.connections import protocol_for
from parley.server.errors import error_body
from parley.server.limits import drain as drain_body
from parley.server.limits import send_json
from parley.server.settings import ServerSettings

log = logging.getLogger("parley.server")

POLL_S = 0.05
CANCELLED_WAIT_S = 10.0   # after cancelling: how long the replies get to send their last event
UVICORN_BACKSTOP_S = 5.0  # uvicorn's own grace, once parley's drain is over (only stragglers use it)


def reason_for(sig: int) -> str:
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = f"signal {sig}"
    return (f"the server is shutting down ({name}): it finishes the replies already running and takes no new "
            "requests; retry on another instance or once it is back")


def _busy(state) -> bool:
    return bool(state.generations) or any(part.running() for part in state.attached)


async def drain(state, poll_s: float = POLL_S) -> None:
    """Wait for the running generations (the web page's too) until the drain's deadline, cancel the rest, wait
    for their last event. The page then closes its streams, so uvicorn has no open connection to wait for."""
    while _busy(state) and time.monotonic() < state.drain.deadline:
        await asyncio.sleep(poll_s)
    for part in state.attached:
        part.close()
    if state.generations:
        grace = state.settings.shutdown_grace
        log.warning("shutdown: ending %d running replies after the %g s grace period (shutdown_grace)",
                    len(state.generations), grace)
        for gen in list(state.generations):
            gen.cancel(f"the server shut down; the reply was ended after the {grace:g} s grace period "
                       "(shutdown_grace, `parley serve --shutdown-grace`)")
        end = time.monotonic() + CANCELLED_WAIT_S
        while state.generations and time.monotonic() < end:
            await asyncio.sleep(poll_s)


class DrainGate:
    """ASGI middleware: while draining, every new request gets 503 naming the reason."""

    def __init__(self, app, state):
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.state.drain.active:
            return await self.app(scope, receive, send)
        e = ShuttingDown(self.state.drain.reason)
        complete = await drain_body(receive)
        await send_json(send, e.status, error_body(e.message, type=e.type, code=e.code, status=e.status,
                                                   path=scope["path"]), close=not complete)


class GracefulServer(uvicorn.Server):
    """uvicorn.Server whose SIGTERM / SIGINT drain first (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, state):
        super().__init__(config)
        self.state = state
        self._signals = 0
        self._drainer: asyncio.Task | None = None

    def handle_exit(self, sig: int, frame) -> None:
        self._captured_signals.append(sig)   # uvicorn raises them again once it has stopped (see cli/serve.py)
        self._signals += 1
        if self._signals == 1:
            self.state.drain.start(reason_for(sig), self.state.settings.shutdown_grace)
        elif self._signals == 2:
            self.state.drain.end_grace()
        else:
            self.should_exit = self.force_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self.state.drain.active and self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(drain(self.state))
            self._drainer.add_done_callback(self._drained)
        return await super().on_tick(counter)

    def _drained(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("shutdown: draining failed: %r", task.exception())
        self.should_exit = True


MAX_HEAD_BYTES = 256 * 1024   # a request line and headers may take this much (h11's 16 KiB default refused a long
                              # URL whenever it arrived in more than one read, as a plain-text 400)


def make_config(app, settings: ServerSettings, **uvicorn_options) -> uvicorn.Config:
    """uvicorn.Config with parley's connection limits (server/connections.py) and keep-alive."""
    options = {"timeout_graceful_shutdown": UVICORN_BACKSTOP_S, "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
               **uvicorn_options}
    return uvicorn.Config(app, http=protocol_for(settings), timeout_keep_alive=settings.keep_alive, **options)


def make_server(app, settings: ServerSettings, **uvicorn_options) -> GracefulServer:
    return GracefulServer(make_config(app, settings, **uvicorn_options), app.state.parley_server)
