"""What a Stream says about itself (`Stream.meta`): every generation parley hands out is one Stream
(scheduler/stream.py); the stage that starts it attaches one of these, so an edge reads a raw completion, a
conversation's reply and a document's answer the same way: `prompt_tokens`, `dropped`, `note`, then what only
that kind has.

    Prompt       a stateless request's prompt (chat completions, completions, TGI): its tokens, and what the
                 window left out to fit the context
    ReplyMeta    a conversation's reply: its conversation and message ids, the window, and once the reply is
                 recorded, the note a user can act on (the cache could not give something back)
    AnswerMeta   a question about documents: the sources it was given or that best match it
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Prompt:
    """A stateless request's prompt, as it will be sent."""

    tokens: list[int]
    dropped: int = 0        # earlier messages left out to fit the context
    note: str = ""          # said in the response when something was left out

    @property
    def prompt_tokens(self) -> int:
        return len(self.tokens)

    def add_note(self, note: str) -> Prompt:
        if note:
            self.note = "; ".join(n for n in (self.note, note) if n)
        return self


@dataclass
class ReplyMeta:
    conversation_id: str
    message_id: str               # the reply's row (partial until it is recorded)
    user_message_id: str          # the message it answers
    prompt_tokens: int
    dropped: int = 0              # earlier messages outside the window
    note: str = ""                # the prompt's note; once recorded, also what the cache could not give back
    speaker: str | None = None    # who speaks (a persona's group scene)
    model: str = ""               # the model that answers (its registry name)


@dataclass
class AnswerMeta:
    question: str
    document_ids: tuple[str, ...]
    prompt_tokens: int
    mode: str                                    # "whole" (the document is the prompt) | "retrieval"
    prefix_tokens: int                           # the shared, pinned part of the prompt
    sources: list[Any] = field(default_factory=list)   # chat.documents.Source: cited parts
    dropped: int = 0
    note: str = ""
