"""Which upstream serves a conversation. A conversation's prompts extend each other, so the upstream that served
its last turn holds its prefix in cache: keep it there.

  session    consistent hashing on the conversation id (vLLM production-stack's session router): each upstream
             owns VNODES points on a ring, a key goes to the first healthy owner clockwise, so taking one upstream
             out (or adding one) moves only the conversations it owned.
  balanced   the same first choice, remembered; a conversation moves to the least loaded healthy upstream when
             its own runs MOVE_OVER or more requests over that one (SGLang's cache-aware router balances the same
             way), and then stays where it moved.
  bounded    consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam): a new conversation goes
             to the first owner clockwise that holds less than BOUND times its share of the conversations placed
             (a few: as even as they can be), and stays there while it is healthy (remembered). A few
             conversations hash unevenly (12 over 2: 9 and 3 in one run); bounded, none holds more than about 10%
             over its share, and no conversation moves for load.

Requests without a conversation (a raw completion, a stateless chat request resending its history) go where the
longest prefix of their prompt went before, in whole blocks of BLOCK tokens (the prefixes sent lately are
remembered, as SGLang's cache-aware router keeps a tree of them); a prompt sharing no block with any goes by the
ring on its first block.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence

VNODES = 64            # ring points per upstream: spreads keys within a few percent of even
MOVE_OVER = 2          # balanced: move when the sticky upstream runs this many requests more than the least loaded
BOUND = 1.1            # bounded: an owner takes a new conversation while it holds fewer than BOUND x its share
BLOCK = 32             # prompt prefixes are remembered in blocks of this many tokens
REMEMBERED = 65536     # placements remembered (conversations, prefix blocks; the least recently used forgotten)


def _point(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def block_keys(prompt: Sequence[int]) -> list[str]:
    """One key per whole block of the prompt: the chained hash of every token up to the block's end."""
    h = hashlib.blake2b(digest_size=12)
    keys = []
    for end in range(BLOCK, len(prompt) + 1, BLOCK):
        h.update(b"".join(t.to_bytes(4, "little", signed=True) for t in prompt[end - BLOCK:end]))
        keys.append("prefix:" + h.copy().hexdigest())
    return keys


def key_of(session: str | None, prompt: Sequence[int]) -> str:
    """The ring's key of a request: its conversation, else its first block (the whole prompt when shorter)."""
    if session:
        return session
    return block_keys(prompt)[0] if len(prompt) >= BLOCK else "prompt:" + ",".join(map(str, prompt))


class Router:
    """Picks an upstream (by its index in `names`) for a key. `healthy(i)` and `load(i)` are read at each pick:
    the upstreams' own state (client.Upstream), kept by their health checks and requests."""

    def __init__(self, names: Sequence[str], policy: str = "session"):
        self.names = list(names)
        self.policy = policy
        self._ring = sorted((_point(f"{name}#{v}"), i) for i, name in enumerate(self.names) for v in range(VNODES))
        self._points = [p for p, _ in self._ring]
        self._placed: OrderedDict[str, int] = OrderedDict()
        self._sessions: OrderedDict[str, int] = OrderedDict()     # bounded: each conversation's place
        self._held = [0] * len(self.names)                         # bounded: conversations placed on each
        self._lock = threading.Lock()

    def owner(self, key: str, healthy) -> int | None:
        """The first healthy upstream clockwise from the key's point on the ring; None when none is healthy."""
        if not self._ring:
            return None
        start = bisect.bisect(self._points, _point(key))
        seen: set[int] = set()
        for k in range(len(self._ring)):
            i = self._ring[(start + k) % len(self._ring)][1]
            if i not in seen:
                seen.add(i)
                if healthy(i):
                    return i
                if len(seen) == len(self.names):
                    break
        return None

    def route(self, session: str | None, prompt: Sequence[int], healthy, load,
              exclude: frozenset[int] = frozenset()) -> int | None:
        """A request's upstream: by its conversation, else by the longest prefix of its prompt sent before."""
        if session:
            return self.pick(session, healthy, load, exclude)
        blocks = block_keys(prompt)
        ok = lambda i: i not in exclude and healthy(i)  # noqa: E731
        chosen = None
        with self._lock:
            for key in reversed(blocks):
                placed = self._placed.get(key)
                if placed is not None and ok(placed):
                    chosen = placed
                    break
        if chosen is not None and self.policy == "balanced":
            up = [i for i in range(len(self.names)) if ok(i)]
            if load(chosen) - min(load(i) for i in up) >= MOVE_OVER:
                chosen = None
        if chosen is None:
            chosen = self.pick(key_of(None, prompt), healthy, load, exclude)
        if chosen is not None:
            with self._lock:
                for key in blocks:
                    self._remember(key, chosen)
        return chosen

    def adopt(self, old: Router) -> None:
        """Take over `old`'s placements on the names both have (a replica added or removed: the conversations
        stay where their KV is; those of a name gone are placed again when they come)."""
        where = {name: i for i, name in enumerate(self.names)}
        with old._lock, self._lock:
            for mine, theirs in ((self._placed, old._placed), (self._sessions, old._sessions)):
                for key, i in theirs.items():
                    j = where.get(old.names[i])
                    if j is not None:
                        mine[key] = j
            self._held = [0] * len(self.names)
            for j in self._sessions.values():
                self._held[j] += 1

    def _bounded(self, key: str, ok) -> int | None:
        with self._lock:
            placed = self._sessions.get(key)
            if placed is not None and ok(placed):
                self._sessions.move_to_end(key)
                return placed
            up = sum(1 for i in range(len(self.names)) if ok(i))
            if not up:
                return None
            if placed is not None:          # its place is down: placed again, as a new one
                del self._sessions[key]
                self._held[placed] -= 1
            share = (len(self._sessions) + 1) / up      # with this one
            cap = max(math.ceil(share), math.floor(BOUND * share))     # a few: as even as they can be
            chosen = self.owner(key, lambda i: ok(i) and self._held[i] < cap)
            if chosen is None:
                chosen = self.owner(key, ok)
            self._sessions[key] = chosen
            self._held[chosen] += 1
            while len(self._sessions) > REMEMBERED:
                _, gone = self._sessions.popitem(last=False)
                self._held[gone] -= 1
            return chosen

    def _remember(self, key: str, i: int) -> None:
        self._placed[key] = i
        self._placed.move_to_end(key)
        while len(self._placed) > REMEMBERED:
            self._placed.popitem(last=False)

    def pick(self, key: str, healthy, load, exclude: frozenset[int] = frozenset()) -> int | None:
        ok = lambda i: i not in exclude and healthy(i)  # noqa: E731
        if self.policy == "session":
            return self.owner(key, ok)
        if self.policy == "bounded":
            return self._bounded(key, ok)
        with self._lock:
            placed = self._placed.get(key)
            if placed is None or not ok(placed):
                placed = self.owner(key, ok)
            if placed is None:
                return None
            up = [i for i in range(len(self.names)) if ok(i)]
            least = min(up, key=load)
            if load(placed) - load(least) >= MOVE_OVER:
                placed = least
            self._remember(key, placed)
            return placed
