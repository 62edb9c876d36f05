"""ThreadGovernor: how many threads llama.cpp should use right now, decided by measuring.

On a quiet 2-core machine 2 threads decode ~120 tok/s and 1 thread ~80; when another process holds a core,
2 spinning threads fall to ~32 tok/s while 1 thread keeps ~80 (measured on this project's machines). No setting
wins both, so the governor measures: every `period` decode calls it runs `probe` calls with the other thread
count and keeps whichever cost less per token (median, with a 10% margin). The first probe comes after 16 calls,
so a process started on a busy machine adapts within a fraction of a second; failed probes back off (the period
doubles up to 1024 calls) so a quiet machine soon pays well under 1% for the checks.
"""

from __future__ import annotations

import statistics


class ThreadGovernor:
    def __init__(self, max_threads: int, *, period: int = 16, max_period: int = 1024, probe: int = 4,
                 margin: float = 0.10):
        self.choices = sorted({max_threads, max(1, max_threads // 2)}, reverse=True)
        self.current = self.choices[0]
        self.period = period
        self.base_period = period
        self.max_period = max_period
        self.probe = probe
        self.margin = margin
        self._calls = 0
        self._recent: list[float] = []   # seconds per token at `current`, newest last
        self._probing: int | None = None
        self._probe_costs: list[float] = []
        self.switches = 0

    @property
    def active(self) -> bool:
        return len(self.choices) > 1

    def threads_for_next_call(self) -> int:
        """The thread count the next decode call should run with."""
        if self._probing is None and self.active and self._calls >= self.period and len(self._recent) >= self.probe:
            self._probing = next(c for c in self.choices if c != self.current)
            self._probe_costs = []
        return self._probing or self.current

    def record(self, n_tokens: int, seconds: float) -> None:
        """Report a finished decode call (only small, decode-like calls are compared)."""
        if n_tokens > 16 or not self.active:
            return
        cost = seconds / n_tokens
        if self._probing is None:
            self._calls += 1
            self._recent.append(cost)
            del self._recent[: -self.probe * 2]
            return
        self._probe_costs.append(cost)
        if len(self._probe_costs) < self.probe:
            return
        trial = statistics.median(self._probe_costs)
        base = statistics.median(self._recent[-self.probe:])
        if trial < base * (1 - self.margin):
            self.current = self._probing
            self._recent = list(self._probe_costs)
            self.period = self.base_period
            self.switches += 1
        else:
            self.period = min(self.period * 2, self.max_period)
        self._probing = None
        self._calls = 0
