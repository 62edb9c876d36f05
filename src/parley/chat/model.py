"""Model: what the chat stage needs of a loaded model (the facade builds it once, at load): its prompt builder,
the scheduler that generates, how big the context is, and which stored token ids are valid with it. Served: a
Model with its documents' memory, what every chat-stage call about one model is handed (several models may be
loaded at once; the chat stage holds none of them)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from parley.chat.prompt import PromptBuilder


@dataclass(frozen=True)
class Model:
    builder: PromptBuilder
    scheduler: Any                     # parley.scheduler.Scheduler
    context_size: int
    tokens_key: str                    # model file + template: which stored token ids are valid here
    stops: tuple[str, ...] = ()        # end-of-turn strings the chat format needs as stop strings
    label: str = ""                    # the model's registry name, stored with each conversation it serves
    kv_cells: int = 0                  # KV cells shared by every sequence (what pinned prefixes may hold)
    token_bytes: Callable[[], int] = lambda: 0   # the longest token's bytes (0: unknown), read once when needed

    def count(self, text: str) -> int:
        return len(self.builder.tokenize_text(text))

    @functools.cached_property
    def longest_token(self) -> int:
        return self.token_bytes()

    def surely_over(self, texts: list[str], budget: int) -> int:
        """A lower bound on the tokens `texts` take when it alone proves them over `budget`, else 0: a text of B
        bytes is at least B / (the longest token's bytes) tokens, so a 10 MB narrative is refused at once
        instead of after tokenizing it."""
        longest = self.longest_token
        if longest <= 0:
            return 0
        least = sum(len(t.encode("utf-8", "replace")) for t in texts) // longest
        return least if least > budget else 0


@dataclass(frozen=True)
class Served:
    """One loaded model as a turn or a conversation uses it."""

    model: Model
    documents: Any                     # chat.documents.Documents over this model (its pinned documents)

    @property
    def name(self) -> str:
        return self.model.label
