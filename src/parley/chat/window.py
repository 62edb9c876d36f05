"""The history window: which turns a prompt keeps when the conversation outgrows the context.

Pinned blocks (system prompt, persona narrative, example dialogue, documents) come first and stay; the turns
follow, appended only. When the prompt no longer fits, whole turns leave **in blocks**, never one per turn: the
history is cut at fixed boundaries, each about `block` of the history budget further on (in tokens, counted per
message and aligned to user messages), and the prompt starts at the first boundary from which it fits. The
boundaries depend only on the messages before them, so as a conversation grows its prompt keeps starting at the
same place, turn after turn, and the KV cache keeps hitting until the next block has to go (one re-read per
block instead of one per turn). The same rule serves stateless requests that resend their history, so they hit
the cache too. A message cap (`max_messages`, as narrative model cards suggest: "the last ~10 messages") cuts at
boundaries every max_messages / 2 messages the same way. Example dialogue goes before any real turn. Nothing is
dropped silently: the caller reports how many messages were left out. The "error" policy refuses instead.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from parley.chat.prompt import Built
from parley.errors import InvalidRequest, LimitExceeded

OVERFLOW_POLICIES = ("error", "truncate")
PER_MESSAGE_TOKENS = 6    # markup around each message (role header, end of turn), for sizing blocks only
MAX_MESSAGES_CAP = 100_000   # the most a message cap may say (a stored conversation holds at most this many)
REPLY_SHARE = 4           # a reply may keep up to a quarter of the context free of prompt


def message_sizes(count: Callable[[str], int], messages: Sequence[dict]) -> list[int]:
    """Each message's tokens as the window sizes blocks with (its content, and the markup around it)."""
    return [count(m["content"]) + PER_MESSAGE_TOKENS for m in messages]


def reply_room(context_size: int, max_tokens: int | None = None, overflow: str = "truncate") -> int:
    """Tokens of the context a prompt leaves for its reply: the one home of this rule. "error" (a prompt that
    does not fit is refused) needs only one; "truncate" keeps up to a quarter of the context, or max_tokens when
    the reply asks for less, so dropping old turns makes room for a whole reply. With no max_tokens: the
    quarter (what a persona must leave for the turns and the reply)."""
    if overflow == "error":
        return 1
    quarter = max(1, context_size // REPLY_SHARE)
    return quarter if max_tokens is None else min(max_tokens, quarter)


class PromptTooLong(LimitExceeded):
    """The prompt does not fit (the "error" policy, or nothing fits even after dropping every old turn).
    `tokens` is how long it is, `budget` how long it may be."""

    code = "context_length_exceeded"

    def __init__(self, message: str, *, tokens: int, budget: int, param: str):
        super().__init__(message, param=param)
        self.tokens = tokens
        self.budget = budget


@dataclass(frozen=True, slots=True)
class WindowPolicy:
    overflow: str = "truncate"     # "truncate": drop old turns in blocks; "error": refuse with the overflow
    max_messages: int = 0          # 0: no cap on the messages kept (tokens only)
    block: float = 0.5             # a block is this fraction of the history's token budget

    def __post_init__(self) -> None:
        if self.overflow not in OVERFLOW_POLICIES:
            raise InvalidRequest(f"overflow must be one of {', '.join(OVERFLOW_POLICIES)}, got {self.overflow!r}",
                                 param="overflow")
        m = self.max_messages
        if isinstance(m, bool) or not isinstance(m, int) or m < 0 or m == 1 or m > MAX_MESSAGES_CAP:
            raise InvalidRequest(f"max_messages must be 0 (no cap) or 2 to {MAX_MESSAGES_CAP}, got {m!r}",
                                 param="max_messages")
        if not 0.05 <= self.block <= 1.0:
            raise InvalidRequest(f"block must be in [0.05, 1], got {self.block}", param="block")


@dataclass(frozen=True, slots=True)
class Fitted:
    built: Built
    start: int                 # index of the first history message kept
    examples: bool             # the example dialogue is still in the prompt


def boundaries(sizes: Sequence[int], roles: Sequence[str], block_tokens: int) -> list[int]:
    """Cut points in the history: the first user message at or after every `block_tokens` of history."""
    out = [0]
    total, next_cut = 0, block_tokens
    for i, (n, role) in enumerate(zip(sizes, roles, strict=True)):
        if total >= next_cut and role == "user" and i > out[-1]:
            out.append(i)
            while next_cut <= total:
                next_cut += block_tokens
        total += n
    return out


def message_boundaries(roles: Sequence[str], max_messages: int) -> list[int]:
    step = max(2, max_messages // 2)
    out = [0]
    for i, role in enumerate(roles):
        if i >= out[-1] + step and role == "user":
            out.append(i)
    return out


def fit(build: Callable[[int, bool], Built], *, sizes: Sequence[int], roles: Sequence[str], budget: int,
        policy: WindowPolicy, has_examples: bool = False, pinned_tokens: int = 0, min_start: int = 0,
        total_param: str = "messages") -> Fitted:
    """The prompt to send: `build(start, examples)` renders the pinned blocks, history[start:] and the new
    message. `sizes`/`roles` describe the history (the new message excluded); `budget` is the most prompt tokens
    allowed (the context minus room for the reply). `min_start`: a window start already chosen (a session's
    previous turn): the window never moves back."""
    start = min_start
    if policy.max_messages:
        cuts = message_boundaries(roles, policy.max_messages)
        keep = policy.max_messages - 1  # the new message counts
        start = max(start, next((b for b in cuts if len(roles) - b <= keep), cuts[-1]))
    built = build(start, has_examples)
    if len(built.tokens) <= budget:
        return Fitted(built, start, has_examples)
    if policy.overflow == "error":
        over = len(built.tokens) - budget
        raise PromptTooLong(
            f"the conversation is {len(built.tokens)} tokens and, with room for the reply, the prompt may be "
            f"{budget}: {over} tokens too many (use the truncate overflow policy to drop the oldest turns)",
            tokens=len(built.tokens), budget=budget, param=total_param)
    examples = has_examples
    if examples:
        examples = False
        built = build(start, False)
        if len(built.tokens) <= budget:
            return Fitted(built, start, False)
    history_budget = max(1, budget - pinned_tokens)
    cuts = [b for b in boundaries(sizes, roles, max(1, int(history_budget * policy.block))) if b >= start]
    cuts.append(len(roles))  # at worst: the new message alone
    lo = bisect.bisect_left(cuts, start)
    # fits(start) is monotone: find the first cut that fits by bisection
    best: Fitted | None = None
    hi = len(cuts) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        b = build(cuts[mid], examples)
        if len(b.tokens) <= budget:
            best = Fitted(b, cuts[mid], examples)
            hi = mid - 1
        else:
            lo = mid + 1
    if best is None:
        alone = build(len(roles), examples)
        raise PromptTooLong(
            f"the pinned blocks (system prompt, persona, documents) and the new message alone are "
            f"{len(alone.tokens)} tokens; with room for the reply the prompt may be {budget}: "
            f"{len(alone.tokens) - budget} too many even after dropping every older message",
            tokens=len(alone.tokens), budget=budget, param=total_param)
    return best
