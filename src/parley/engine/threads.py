"""ThreadGovernor: how many threads llama.cpp should use right now, decided by measuring.

On a quiet 2-core machine 2 threads decode ~120 tok/s and 1 thread ~80; when another process holds a core, 2
spinning threads fall to ~32 tok/s, and to ~1 tok/s when that process is another inference engine, while 1
thread keeps its speed (measured on this project's machines). No fixed setting wins both, so the governor
measures decode calls, comparing only calls of the same size (n tokens):
- every `period` calls it probes the other thread count for `probe` calls and keeps whichever is cheaper
  (median ratio, 10% margin); a probe call that costs twice the usual ends the probe at once, so probing the
  collapsed setting costs one slow call, not four;
- while on all threads, two calls in a row at 3x their usual cost mean contention started: drop at once;
- failed probes back off (the period doubles, 16 -> 1024 calls), so a quiet machine soon pays well under 1%.
"""

from __future__ import annotations

import statistics

KEEP = 8  # recent calls remembered per call size


class ThreadGovernor:
    def __init__(self, max_threads: int, *, period: int = 16, max_period: int = 1024, probe: int = 4,
                 margin: float = 0.10):
        self.choices = sorted({max_threads, max(1, max_threads // 2)}, reverse=True)
        self.current = self.choices[0]
        self.base_period = period
        self.max_period = max_period
        self.period = period
        self.probe = probe
        self.margin = margin
        self._calls = 0
        self._recent: dict[int, list[float]] = {}  # call size -> seconds of recent calls at `current`
        self._spikes = 0
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
        usual = statistics.median(history) if history and len(history) >= 2 else None
        if self._probing is not None:
            if usual is not None:
                self._record_probe(seconds / usual)
            return
        self._calls += 1
        if usual is not None and self.current == self.choices[0] and len(history) >= self.probe:
            self._spikes = self._spikes + 1 if seconds > 3 * usual else 0
            if self._spikes >= 2:  # contention started: do not wait for the next probe
                self._switch(self.choices[-1])
                return
        history = self._recent.setdefault(n_tokens, [])
        history.append(seconds)
        del history[:-KEEP]

    def _record_probe(self, ratio: float) -> None:
        self._ratios.append(ratio)
        if ratio > 2:  # clearly worse: stop paying for it now
            self._end_probe(won=False)
        elif len(self._ratios) >= self.probe:
            self._end_probe(won=statistics.median(self._ratios) < 1 - self.margin)

    def _end_probe(self, *, won: bool) -> None:
        if won:
            self._switch(self._probing)
        else:
            self.period = min(self.period * 2, self.max_period)
        self._probing = None
        self._calls = 0

    def _switch(self, threads: int) -> None:
        self.current = threads
        self._recent = {}
        self._spikes = 0
        self.period = self.base_period
        self._calls = 0
        self.switches += 1
