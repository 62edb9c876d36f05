"""Limits: how much one door lets a request ask for, fixed once (when the model loads, or when a server built
on it starts) and enforced below the door, so every edge refuses the same prompt with the same message.

    Limits(context_size=8192)                                    the context less one token for the reply
    Limits(8192, prompt_tokens=64, prompt_setting="max_prompt_tokens, `parley serve --max-prompt-tokens`")
    Caps(prompt_tokens=64, ...).at(8192)                         the same caps, at each model's context

`prompt_tokens` bounds every prompt a request makes (a chat, a completion, a conversation's turn, a question
about documents); `max_tokens` bounds what one reply may generate. A setting named beside a limit is what an
error tells the user to change (the server's flags: the errors say "this server"); without one the limit is
the context itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from parley.errors import InvalidRequest, LimitExceeded


@dataclass(frozen=True, slots=True)
class Limits:
    context_size: int
    prompt_tokens: int = 0        # most prompt tokens (0: the context less the one token a reply needs)
    max_tokens: int = 0           # most tokens one reply generates (0: the context)
    prompt_setting: str = ""      # the setting that lowered prompt_tokens, as errors name it ("" : the context)
    tokens_setting: str = ""      # the same for max_tokens

    def __post_init__(self) -> None:
        if self.context_size < 2:
            raise InvalidRequest(f"the context must hold at least 2 tokens, got {self.context_size}",
                                 param="context_size")
        whole = self.context_size - 1
        prompt = min(self.prompt_tokens, whole) if self.prompt_tokens > 0 else whole
        tokens = min(self.max_tokens, self.context_size) if self.max_tokens > 0 else self.context_size
        object.__setattr__(self, "prompt_tokens", prompt)
        object.__setattr__(self, "max_tokens", tokens)
        if prompt == whole:
            object.__setattr__(self, "prompt_setting", "")
        if tokens == self.context_size:
            object.__setattr__(self, "tokens_setting", "")

    def too_long(self, n: int, *, param: str, hint: str = "") -> LimitExceeded:
        """The error for a prompt of `n` tokens that is over the limit."""
        limit = self.prompt_tokens
        if not self.prompt_setting:
            where = f"the context holds {self.context_size} (with at least 1 left for the reply)"
        else:
            where = f"this server takes at most {limit} prompt tokens ({self.prompt_setting})"
        return LimitExceeded(f"the prompt is {n} tokens and {where}: {n - limit} tokens too many{hint}",
                             param=param, code="context_length_exceeded")

    def check_prompt(self, n: int, *, param: str, hint: str = "") -> None:
        if n > self.prompt_tokens:
            raise self.too_long(n, param=param, hint=hint)

    def check_max_tokens(self, n: int, *, param: str = "max_tokens") -> None:
        if n > self.max_tokens:
            why = self.tokens_setting or "the context size"
            raise LimitExceeded(f"{param} is {n}; this server generates at most {self.max_tokens} tokens per "
                                f"request ({why})", param=param, code="max_tokens_exceeded")


@dataclass(frozen=True, slots=True)
class Caps:
    """Limits before a context is known: what a door applies to every model it speaks to (each has its own
    context); `at(context_size)` is the Limits for one. 0: no cap beyond the context."""

    prompt_tokens: int = 0
    max_tokens: int = 0
    prompt_setting: str = ""
    tokens_setting: str = ""

    def at(self, context_size: int) -> Limits:
        return Limits(context_size, prompt_tokens=self.prompt_tokens, max_tokens=self.max_tokens,
                      prompt_setting=self.prompt_setting, tokens_setting=self.tokens_setting)
