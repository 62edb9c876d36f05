"""NgramIndex: where the last few tokens of a request's context occurred before, to draft what follows them.

A reply that rewrites code or quotes a document copies long runs of its context. Looking up the last 4 (else 3)
tokens in the prompt and the reply so far and proposing the tokens that followed their latest earlier
occurrence drafts such a run for free; the scheduler verifies the draft in one batched decode (speculation.py
decides whether that pays).
"""

from __future__ import annotations

from collections.abc import Sequence

SIZES = (4, 3)  # gram lengths tried, longest first: a longer match is the more likely to continue alike
MAX_MATCH = 32  # how far back a match is measured (speculation.Acceptance: how likely a draft comes true)


class NgramIndex:
    """The tokens of one request (prompt, then each emitted token) and, per gram size, the end of the latest
    occurrence of each gram that ends before the last token (the current suffix itself is not indexed, so a
    lookup never finds the place it stands on)."""

    __slots__ = ("tokens", "_last")

    def __init__(self, tokens: Sequence[int]):
        self.tokens = list(tokens)
        self._last: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in SIZES}
        t = self.tokens
        for n, last in self._last.items():
            for end in range(n, len(t)):
                last[tuple(t[end - n:end])] = end

    def append(self, token: int) -> None:
        t = self.tokens
        end = len(t)
        for n, last in self._last.items():
            if end >= n:
                last[tuple(t[end - n:end])] = end
        t.append(token)

    def propose(self, limit: int) -> tuple[list[int], int]:
        """Up to `limit` tokens that followed the latest earlier occurrence of the current suffix, and how many
        tokens before them match the suffix (at least the gram's length, at most MAX_MATCH: a reply copying a
        run has matched every token of it so far); ([], 0) when the suffix never occurred before."""
        t = self.tokens
        for n, last in self._last.items():
            if len(t) >= n:
                at = last.get(tuple(t[-n:]))
                if at is not None:
                    m = n
                    while m < MAX_MATCH and m < at and t[at - 1 - m] == t[-1 - m]:
                        m += 1
                    return t[at:at + limit], m
        return [], 0
