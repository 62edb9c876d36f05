"""What the scheduler reports: a snapshot taken between steps (Scheduler.stats()) and its running totals.

Plain dataclasses with named fields (a renamed field is an error at once, never a silent 0); `as_dict()` for
JSON (benchmarks, logs).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(slots=True)
class Totals:
    """Counters since start (the scheduler thread adds to them)."""

    decode_calls: int = 0
    batch_tokens: int = 0          # tokens over every decode call
    prompt_tokens: int = 0         # of admitted requests
    cached_tokens: int = 0         # prompt tokens whose KV was reused
    prefilled_tokens: int = 0      # prompt tokens computed
    generated_tokens: int = 0
    drafted_tokens: int = 0        # drafted tokens verified in a decode (speculation)
    accepted_tokens: int = 0       # of them, those that came true (emitted without a decode of their own)
    kv_full: int = 0               # decode calls llama.cpp refused for want of free cells
    requeued: int = 0              # requests put back in the queue to make room
    finished: dict[str, int] = field(default_factory=dict)   # finish reason -> requests

    def copy(self) -> Totals:
        return dataclasses.replace(self, finished=dict(self.finished))


@dataclass(frozen=True, slots=True)
class SchedulerStats:
    running: int
    waiting: int
    prefilling: tuple[tuple[int, int, int], ...]   # (request id, prompt tokens read, prompt tokens) per request
    kv_cells_used: int
    kv_cells_idle: int             # held only by idle conversations
    kv_cells_budget: int
    kv_idle_cap: int               # --kv-idle-cells in effect (-1: idle conversations stay in the context)
    kv_idle_moving: bool           # idle conversations are leaving the context, one per step, until none is left
    live_sequences: int
    busy_sequences: int            # live sequences a running request holds (the others are idle or pinned)
    pinned_sequences: int
    ram_bytes: int
    disk_bytes: int
    ram_states: int
    disk_states: int
    corrupt_cache_files: int
    cache: object                  # prefix_cache.CacheCounters: hits by tier, misses, evictions, ...
    totals: Totals
    upstreams: tuple[dict, ...] = ()   # generating on upstream servers (upstream/engine.py): each one's state

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def combine(stats: list[SchedulerStats]) -> SchedulerStats:
    """Several schedulers' snapshots (one per loaded model) added up into one: counts and bytes summed, the
    prefilling requests listed together, the cache counters and totals summed field by field. [] gives zeros."""
    def add(values: list):
        first = values[0]
        if isinstance(first, bool):
            return any(values)
        if isinstance(first, (int, float)):
            return sum(values)
        if isinstance(first, tuple):
            return tuple(x for v in values for x in v)
        if isinstance(first, dict):
            out: dict = {}
            for v in values:
                for k, n in v.items():
                    out[k] = out.get(k, 0) + n
            return out
        if dataclasses.is_dataclass(first):
            return dataclasses.replace(first, **{f.name: add([getattr(v, f.name) for v in values])
                                                 for f in dataclasses.fields(first)})
        return first
    if not stats:
        from parley.scheduler.prefix_cache import CacheCounters
        zero = {f.name: 0 for f in dataclasses.fields(SchedulerStats)}
        return SchedulerStats(**{**zero, "prefilling": (), "upstreams": (), "kv_idle_moving": False, "kv_idle_cap": -1,
                                 "cache": CacheCounters(), "totals": Totals()})
    if len(stats) == 1:
        return stats[0]
    return SchedulerStats(**{f.name: add([getattr(s, f.name) for s in stats])
                             for f in dataclasses.fields(SchedulerStats)})
