"""Find stop strings in streamed text, emitting only text that can never turn out to be part of a stop."""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Feed generated text piece by piece; `feed` returns what is safe to emit now.

    The output is the whole text cut at the earliest occurrence of any stop string, however the text is split
    into pieces, and no emitted text is ever taken back. To guarantee that, the matcher holds back any tail that
    could still grow into a stop string. When a stop is found but a longer stop starting earlier could still
    complete, it waits for more text; `flush` settles that case too, so check `stopped` after `flush` as well.
    """

    __slots__ = ("stops", "stopped", "matched", "_held", "_prefixes", "_first_chars", "_max_len")

    def __init__(self, stops: Sequence[str]):
        # Empty strings would match everywhere; they are rejected upstream and ignored here.
        self.stops: tuple[str, ...] = tuple(dict.fromkeys(s for s in stops if s))
        self.stopped = False
        self.matched: str | None = None
        self._held = ""
        self._prefixes = frozenset(s[:k] for s in self.stops for k in range(1, len(s)))
        self._first_chars = frozenset(s[0] for s in self.stops)
        self._max_len = max((len(s) for s in self.stops), default=0)

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        if not self.stops:
            return text
        if not self._held and self._first_chars.isdisjoint(text):
            return text  # no stop can start anywhere in this piece
        buf = self._held + text
        hit, stop = self._earliest_match(buf)
        hold = self._partial_start(buf)
        if hit >= 0 and (hold < 0 or hold >= hit):
            self._stop(stop)
            return buf[:hit]
        if hold < 0:
            self._held = ""
            return buf
        # Keep the tail that may still become a stop (with any complete stop after its start, which
        # wins only if that longer, earlier stop fails to complete).
        self._held = buf[hold:]
        return buf[:hold]

    def flush(self) -> str:
        """The held text, once generation has ended (the held tail can no longer become a stop)."""
        if self.stopped:
            return ""
        buf, self._held = self._held, ""
        hit, stop = self._earliest_match(buf)
        if hit >= 0:
            self._stop(stop)
            return buf[:hit]
        return buf

    def _stop(self, stop: str) -> None:
        self.stopped = True
        self.matched = stop
        self._held = ""

    def _earliest_match(self, buf: str) -> tuple[int, str]:
        """(position, stop) of the earliest complete stop in buf, the shortest on a tie; (-1, "") if none."""
        best, best_stop = -1, ""
        for s in self.stops:
            i = buf.find(s, 0, best + len(s) if best >= 0 else len(buf))
            if i >= 0 and (best < 0 or i < best or (i == best and len(s) < len(best_stop))):
                best, best_stop = i, s
        return best, best_stop

    def _partial_start(self, buf: str) -> int:
        """Start of the longest suffix of buf that is a proper prefix of a stop string, or -1."""
        first_chars, prefixes = self._first_chars, self._prefixes
        for p in range(max(0, len(buf) - self._max_len + 1), len(buf)):
            if buf[p] in first_chars and buf[p:] in prefixes:
                return p
        return -1
