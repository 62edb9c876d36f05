"""Which process is writing a reply, and what to do with replies whose writer died.

A reply row being generated carries its writer in `meta["writer"]`: the process id and its start time, the
host, and the parley instance ("pid:start time@host#instance", holder_tag()), so a reused pid is not taken for the process that wrote the row, and a front end
on another host sharing the store (PostgreSQL) is not taken for a dead local one. The conversation itself is
claimed in the store for as long as its reply is written (a lease of CLAIM_LEASE_S, renewed every third of
it), so the database decides that a second writer gets a 409, whichever front end it comes through.

At start, replies left unfinished by a writer that no longer runs (a crash, a kill) are marked partial and
cancelled, and that writer's claims are released. A writer on this host is checked by its pid; one on
another host is taken for dead once its claim on the conversation has lapsed. A row without a writer (an
imported message without a finish reason, a row from an older parley) is never rewritten, and neither is
one whose writer still runs (another process sharing the store is writing it).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable

log = logging.getLogger("parley.chat")

WRITER = "writer"           # meta key of a reply being written: the process writing it ("pid:start time@host")
CLAIM_LEASE_S = 30.0        # a claim a front end stops renewing (it died) frees its conversation after this
HOST = socket.gethostname()


def process_tag(pid: int, host: str = HOST) -> str:
    """pid plus the process's start time (so a reused pid is not taken for the process that wrote a row) and
    the host it runs on."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            start = f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return f"{pid}:?@{host}"
    return f"{pid}:{start}@{host}"


MY_TAG = process_tag(os.getpid())


def holder_tag() -> str:
    """A front end's own name for its claims and the replies it writes: this process's tag and a random part,
    so two parley instances in one process are two holders ("pid:start@host#a1b2c3d4")."""
    return f"{MY_TAG}#{secrets.token_hex(4)}"


def alive(tag: str) -> bool | None:
    """Whether the process that tagged a reply still runs (then the reply is still being written); None for a
    process on another host, which only its claims can tell. A tag without a host (an older parley) is local."""
    local, _, host = tag.partition("#")[0].partition("@")
    if host and host != HOST:
        return None
    pid, _, _ = local.partition(":")
    if not pid.isdigit():
        return False
    return process_tag(int(pid)).partition("@")[0] == local


def mark_cut_short(store) -> int:
    """Mark the replies whose writer died as partial and cancelled, and release the claims of local writers
    that died (store: parley.store.Store). Returns how many replies."""
    now = time.time()
    claims = store.claims()
    dead_holders = sorted({h for h, _ in claims.values() if alive(h) is False})
    if dead_holders:
        store.release_claims_of(dead_holders)
    dead = []
    for m in store.unfinished_replies():
        writer = m.meta.get(WRITER)
        if not isinstance(writer, str) or not writer:
            continue
        state = alive(writer)
        if state is None:   # another host: dead once its claim on the conversation has lapsed
            holder, until = claims.get(m.conversation_id, (None, 0.0))
            state = holder == writer and until is not None and until >= now
        if not state:
            dead.append(m.id)
    n = store.mark_interrupted(dead) if dead else 0
    if n:
        log.warning("%d replies were cut short when parley last stopped; they are kept, marked partial", n)
    return n


class Every:
    """Call `fn` every `period` seconds on a daemon thread until stop() (what renews a front end's claims)."""

    def __init__(self, period: float, fn: Callable[[], None], *, name: str):
        self._period, self._fn = period, fn
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self._period):
            self._fn()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
