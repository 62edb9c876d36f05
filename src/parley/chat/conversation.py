"""Conversation: the messages of one chat and the turn-by-turn state that keeps its KV cache warm.

A turn is prepare() -> generate through the scheduler -> record(). Overflow policy when the prompt no longer fits
the context: "error" (say by how much) or "truncate" (keep the system message, drop the oldest turns, and say
how many were dropped). Never silent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from parley.chat.prompt import Built, Prefix, PromptBuilder
from parley.errors import InvalidRequest, LimitExceeded
from parley.sampling import SamplingParams
from parley.scheduler.request import Result

OVERFLOW_POLICIES = ("error", "truncate")


@dataclass
class Turn:
    """One prepared generation: the prompt to send and what to tell the user about it."""

    messages: list[dict]
    built: Built
    params: SamplingParams
    dropped: int = 0            # oldest messages left out to fit the context (truncate policy)

    @property
    def tokens(self) -> list[int]:
        return self.built.tokens


@dataclass
class Conversation:
    builder: PromptBuilder
    context_size: int
    params: SamplingParams = field(default_factory=SamplingParams)
    system: str | None = None
    overflow: str = "error"
    messages: list[dict] = field(default_factory=list)   # user/assistant turns (the system prompt is apart)
    _prev: Prefix | None = None

    def __post_init__(self) -> None:
        if self.overflow not in OVERFLOW_POLICIES:
            raise InvalidRequest(f"overflow must be one of {', '.join(OVERFLOW_POLICIES)}, got {self.overflow!r}",
                                 param="overflow")

    def full_messages(self, messages: list[dict] | None = None) -> list[dict]:
        msgs = self.messages if messages is None else messages
        return ([{"role": "system", "content": self.system}] if self.system else []) + msgs

    # ---- turns -------------------------------------------------------------------------------------------
    def prepare(self, user_text: str, params: SamplingParams | None = None) -> Turn:
        if not isinstance(user_text, str) or not user_text.strip():
            raise InvalidRequest("the message is empty", param="content")
        return self._prepare(self.messages + [{"role": "user", "content": user_text}], params or self.params)

    def prepare_retry(self, params: SamplingParams | None = None) -> Turn:
        """The last user message again, without the reply it got."""
        msgs = list(self.messages)
        if msgs and msgs[-1]["role"] == "assistant":
            msgs.pop()
        if not msgs or msgs[-1]["role"] != "user":
            raise InvalidRequest("there is no user message to retry", param="retry")
        return self._prepare(msgs, params or self.params)

    def record(self, turn: Turn, result: Result) -> None:
        """Keep the reply; remember the exact tokens so the next turn reuses them."""
        self.messages = turn.messages[turn.dropped:] if turn.dropped else list(turn.messages)
        self.messages = [m for m in self.messages if m["role"] != "system"]
        self.messages.append({"role": "assistant", "content": result.text})
        if result.finish_reason in ("stop", "length") and result.stop_string is None:
            self._prev = Prefix(turn.built.text + result.text, tuple(turn.tokens) + tuple(result.token_ids))
        else:  # the reply's text is not exactly its tokens' text (stop string, cancel): reuse the prompt only
            self._prev = Prefix(turn.built.text, tuple(turn.tokens))

    def next_prefix(self) -> list[int]:
        """The tokens the next turn's prompt will start with whatever the user writes: this turn's tokens plus
        the template's closing and next-user header (e.g. "<|im_end|>\n<|im_start|>user\n"). Reading them while
        the user types takes them off the next turn's time to first token. [] when nothing is known."""
        if self._prev is None:
            return []
        probes = [self.builder.build(self.full_messages(self.messages + [{"role": "user", "content": c}]),
                                     self._prev).tokens for c in ("a", "b")]
        n = len(self._prev.tokens)
        while n < min(len(probes[0]), len(probes[1])) and probes[0][n] == probes[1][n]:
            n += 1
        return probes[0][:n] if n > len(self._prev.tokens) else []

    def clear(self) -> None:
        self.messages = []
        self._prev = None

    def set_system(self, text: str | None) -> None:
        self.system = text or None
        self._prev = None

    # ---- internals ---------------------------------------------------------------------------------------
    def _prepare(self, msgs: list[dict], params: SamplingParams) -> Turn:
        built = self.builder.build(self.full_messages(msgs), self._prev)
        reserve = 1 if self.overflow == "error" else min(params.max_tokens, max(1, self.context_size // 4))
        dropped = 0
        while len(built.tokens) + reserve > self.context_size:
            if self.overflow == "error":
                over = len(built.tokens) + 1 - self.context_size
                raise LimitExceeded(
                    f"the conversation is {len(built.tokens)} tokens and the context holds {self.context_size}: "
                    f"{over} tokens too many (send overflow='truncate' to drop the oldest turns)",
                    param="messages", code="context_length_exceeded")
            if len(msgs) - dropped <= 1:
                raise LimitExceeded(
                    f"the system prompt and the last message alone are {len(built.tokens)} tokens; the context "
                    f"holds {self.context_size}", param="messages", code="context_length_exceeded")
            dropped += 1
            while dropped < len(msgs) - 1 and msgs[dropped]["role"] != "user":
                dropped += 1  # start the kept window at a user message
            built = self.builder.build(self.full_messages(msgs[dropped:]), None)
        if dropped:
            built = Built(built.text, built.tokens, 0,
                          f"{dropped} oldest messages were dropped to fit the context")
        return Turn(messages=msgs, built=built, params=params, dropped=dropped)
