"""When drafting pays: the measured cost of a decode by its size, and the draft length worth verifying.

Verifying d drafted tokens adds d rows to a step's decode. On a GPU that is nearly free; on a CPU it is not,
and how much it costs depends on the weights' type: on this project's 2-core machines a decode of 9 tokens cost
about 5.4x one token with the embedded Q4_1 model (8 tokens) (llama.cpp has no batched x86 kernel for Q4_1) and about 3x
with a Q8_0 copy (`parley bench speculate`). So the scheduler measures what its own decodes cost (BatchCost),
counts how often drafted tokens come true by the length of the match behind them (`Acceptance`, fed also by
drafts it did not verify: whether their first token came true is known one step later for free), and verifies
a draft only for the length that maximises expected tokens per second, only when that beats not drafting by
MARGIN.
"""

from __future__ import annotations

import bisect

MARGIN = 1.1        # a draft must promise this much more tokens per second than the step without it
PRIOR_SLOPE = 0.35  # cost of one more row past the largest decode measured, as a fraction of a 1-token decode
EMA = 0.2           # weight of a new timing in BatchCost
BUCKETS = (3, 4, 6, 9, 13, 21)   # match lengths where an Acceptance bucket starts
PRIOR = (0.25, 0.35, 0.5, 0.6, 0.7, 0.8)  # each bucket's rate before anything is known: longer matches copy more
PRIOR_TRIES = 4.0   # the weight of that guess, in tries
WINDOW = 256        # tries a bucket remembers (its counts halve past it): it follows what the replies do now


class BatchCost:
    """Seconds a decode of n tokens (every one with logits: a decode step, no prompt chunk) takes on this
    engine: an exponential average per n, interpolated between measured sizes and extrapolated past the largest
    along the last measured slope or PRIOR_SLOPE, whichever is lower."""

    def __init__(self) -> None:
        self._t: dict[int, float] = {}
        self._sizes: list[int] = []   # measured sizes, ascending

    def record(self, n: int, seconds: float) -> None:
        old = self._t.get(n)
        if old is None:
            bisect.insort(self._sizes, n)
            self._t[n] = seconds
        else:
            self._t[n] = old + EMA * (seconds - old)

    def __call__(self, n: int) -> float | None:
        t = self._t
        if n in t:
            return t[n]
        if 1 not in t:
            return None
        sizes = self._sizes
        i = bisect.bisect(sizes, n)   # sizes[:i] < n (n itself is not measured), sizes[i:] > n
        lo = sizes[i - 1]
        if i < len(sizes):
            hi = sizes[i]
            return t[lo] + (t[hi] - t[lo]) * (n - lo) / (hi - lo)
        # past the largest size measured: optimistic (a larger decode costs less per row, and a size is only
        # measured once tried), so the first draft that long gets tried and measured
        slope = PRIOR_SLOPE * t[1]
        if i >= 2:
            slope = min(slope, max(0.0, (t[lo] - t[sizes[i - 2]]) / (lo - sizes[i - 2])))
        return t[lo] + slope * (n - lo)


class Acceptance:
    """How often a drafted token comes true, by the length of the match behind it (ngram.propose): a reply
    copying a run has matched every token of it so far, a chance 3-token match in a story has not. A drafted
    token that comes true makes the next one's match one longer. Counted over every request of this engine
    (drafted tokens verified, and the first token of drafts not verified, checked for free a step later), in
    buckets of match length, each remembering about its last WINDOW tries."""

    def __init__(self) -> None:
        self._hits = [r * PRIOR_TRIES for r in PRIOR]
        self._tries = [PRIOR_TRIES] * len(BUCKETS)

    @staticmethod
    def _bucket(match: int) -> int:
        return max(0, bisect.bisect_right(BUCKETS, match) - 1)

    def rate(self, match: int) -> float:
        b = self._bucket(match)
        return self._hits[b] / self._tries[b]

    def expected(self, match: int, d: int) -> float:
        """Tokens a step emits for a request verifying d drafted tokens after a match of `match`: the sampled
        one always, then each draft while all before it came true."""
        total = p = 1.0
        for i in range(d):
            p *= self.rate(match + i)
            total += p
        return total

    def record(self, match: int, right: int, tried: int) -> None:
        """`tried` drafted tokens after a match of `match`, of which the first `right` came true (tried =
        right + 1 when one did not: the ones after it were never tested)."""
        for i in range(tried):
            b = self._bucket(match + i)
            self._tries[b] += 1
            self._hits[b] += i < right
            if self._tries[b] > WINDOW:
                self._hits[b] /= 2
                self._tries[b] /= 2


def draft_length(cost: BatchCost, n: int, expect: float, acceptance: Acceptance, match: int, limit: int) -> int:
    """How many of a request's `limit` drafted tokens (after a match of `match`) to verify in a step that
    already holds `n` tokens expected to yield `expect` tokens (this request's own next token among them): the
    length maximising expected tokens per second, 0 unless it beats the step without drafts by MARGIN or while
    nothing is measured."""
    base = cost(n)
    if base is None or limit <= 0:
        return 0
    best, best_rate = 0, MARGIN * expect / base
    gain, p = 0.0, 1.0
    for d in range(1, limit + 1):
        c = cost(n + d)
        if c is None:
            break
        p *= acceptance.rate(match + d - 1)
        gain += p
        rate = (expect + gain) / c
        if rate > best_rate:
            best, best_rate = d, rate
    return best
