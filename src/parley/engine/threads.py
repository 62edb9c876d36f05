"""ThreadGovernor: how many threads llama.cpp should use right now, decided by measuring.

On a quiet 2-core machine 2 threads decode ~120 tok/s and 1 thread ~80; when another process holds a core, 2
spinning threads fall to 35-55 tok/s (to ~11 under a compiler, ~1 under another inference engine) while 1 thread
keeps ~80 (measured on this project's machines). No fixed setting wins both, so the governor measures decode
calls, comparing only calls of the same size (n tokens), and probes the other thread count (`probe` calls; the
cheaper median wins, with a 10% margin):
- when the current setting gets 1.5x slower than it was when last chosen (another process arrived), at once;
- otherwise every `period` calls, backing off (16 -> 1024 calls) while probes keep losing, so a quiet machine
  soon pays well under 1% for them;
- a probe call that costs twice the usual ends the probe at once: trying the collapsed setting costs one call;
  two probe calls both slower than the usual (by the margin) end it too, so a quiet machine pays two calls.
"""

from __future__ import annotations

import statistics

KEEP = 8  # recent calls remembered per call size


class ThreadGovernor:
    def __init__(self, max_threads: int, *, period: int = 16, max_period: int = 1024, probe: int = 4,
                 margin: float = 0.10, slowdown: float = 1.5):
        self.choices = sorted({max_threads, max(1, max_threads // 2)}, reverse=True)
        self.current = self.choices[0]
        self.base_period = period
        self.max_period = max_period
        self.period = period
        self.probe = probe
        self.margin = margin
        self.slowdown = slowdown
        self._calls = 0
        self._recent: dict[int, list[float]] = {}    # call size -> seconds of recent calls at `current`
        self._baseline: dict[int, float] = {}        # call size -> usual seconds when `current` was last chosen
        self._probing: int | None = None
        self._ratios: list[float] = []
        self.switches = 0

    @property
    def active(self) -> bool:
        return len(self.choices) > 1

    def threads_for_next_call(self) -> int:
        """The thread count the next decode call should run with."""
        if self._probing is None and self.active and self._calls >= self.period:
            self._probing = next(c for c in self.choices if c != self.current)
            self._ratios = []
        return self._probing or self.current

    def record(self, n_tokens: int, seconds: float) -> None:
        """Report a finished decode call (prompt-sized calls are not compared)."""
        if n_tokens > 16 or not self.active:
            return
        history = self._recent.get(n_tokens)
        if self._probing is not None:
            if history and len(history) >= 2:
                self._record_probe(seconds / statistics.median(history[-self.probe:]))
            return
        self._calls += 1
        history = self._recent.setdefault(n_tokens, [])
        history.append(seconds)
        del history[:-KEEP]
        if len(history) < self.probe:
            return
        now = statistics.median(history[-self.probe:])
        base = self._baseline.setdefault(n_tokens, now)
        if now > self.slowdown * base:  # conditions changed: compare again now, not at the next period
            self._calls = self.period

    def _record_probe(self, ratio: float) -> None:
        self._ratios.append(ratio)
        if ratio > 2 or (len(self._ratios) >= 2 and min(self._ratios) > 1 + self.margin):
            self._end_probe(won=False)  # clearly worse (one call at 2x, or two calls both slower): stop paying now
        elif len(self._ratios) >= self.probe:
            self._end_probe(won=statistics.median(self._ratios) < 1 - self.margin)

    def _end_probe(self, *, won: bool) -> None:
        if won:
            self.current = self._probing
            self._recent = {}
            self.period = self.base_period
            self.switches += 1
        else:
            self.period = min(self.period * 2, self.max_period)
        self._baseline = {}  # the usual cost is measured afresh for the setting now chosen
        self._probing = None
        self._calls = 0
