"""Which process is writing a reply, and what to do with replies whose writer died.

A reply row being generated carries its writer in `meta["writer"]`: the process id and its start time
("pid:start time"), so a reused pid is not taken for the process that wrote the row. At start, replies left
unfinished by a writer that no longer runs (a crash, a kill) are marked partial and cancelled. Only those:
a row without a writer (an imported message without a finish reason, a row from an older parley) is never
rewritten, and neither is one whose writer still runs (another process sharing the store is writing it).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("parley.chat")

WRITER = "writer"           # meta key of a reply being written: the process writing it ("pid:start time")


def process_tag(pid: int) -> str:
    """pid plus the process's start time, so a reused pid is not taken for the process that wrote a row."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            start = f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return f"{pid}:?"
    return f"{pid}:{start}"


MY_TAG = process_tag(os.getpid())


def alive(tag: str) -> bool:
    """Whether the process that tagged a reply still runs (then the reply is still being written)."""
    pid, _, _ = tag.partition(":")
    if not pid.isdigit():
        return False
    return process_tag(int(pid)) == tag


def mark_cut_short(store) -> int:
    """Mark the replies whose writer died as partial and cancelled (store: parley.store.Store). Returns how
    many."""
    dead = [m.id for m in store.unfinished_replies()
            if isinstance(m.meta.get(WRITER), str) and m.meta[WRITER] and not alive(m.meta[WRITER])]
    n = store.mark_interrupted(dead) if dead else 0
    if n:
        log.warning("%d replies were cut short when parley last stopped; they are kept, marked partial", n)
    return n
