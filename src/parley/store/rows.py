"""What the store hands out: plain dataclasses, one per table row (no ORM, no lazy loading)."""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant")


def pack_tokens(tokens: list[int] | None) -> bytes | None:
    return None if tokens is None else array("i", tokens).tobytes()


def unpack_tokens(blob: bytes | None) -> list[int] | None:
    if blob is None:
        return None
    a = array("i")
    a.frombytes(blob)
    return a.tolist()


@dataclass(frozen=True, slots=True)
class MessageStats:
    """How a reply was generated (None fields: not known, e.g. an imported message)."""

    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    prefilled_tokens: int | None = None
    generated_tokens: int | None = None
    ttft_s: float | None = None
    tokens_per_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


STAT_FIELDS = MessageStats.__slots__


@dataclass(slots=True)
class Message:
    id: str
    conversation_id: str
    parent_id: str | None
    role: str
    content: str
    created: float
    partial: bool = False
    finish_reason: str | None = None
    stats: MessageStats = field(default_factory=MessageStats)
    meta: dict[str, Any] = field(default_factory=dict)
    tokens: list[int] | None = None     # exact token ids this message added to its prompt (see chat/history.py)
    tokens_text: str | None = None      # the text those tokens spell
    tokens_key: str | None = None       # which model + template the tokens belong to


@dataclass(slots=True)
class Conversation:
    id: str
    title: str | None
    title_auto: bool
    system: str | None
    defaults: dict[str, Any]             # sampling defaults of the conversation (SamplingParams fields)
    settings: dict[str, Any]             # overflow policy, persona, window ...
    model: str | None                    # model the conversation was last served with
    leaf_id: str | None                  # the current branch ends here
    owner: str | None
    metadata: dict[str, str]
    created: float
    updated: float
    message_count: int = 0


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to insert (the store gives it an id and a timestamp)."""

    role: str
    content: str
    parent_id: str | None = None         # None: the previous message in the same add_messages call, or the root
    meta: dict[str, Any] = field(default_factory=dict)
    partial: bool = False
    finish_reason: str | None = None
    stats: MessageStats = field(default_factory=MessageStats)
    tokens: list[int] | None = None
    tokens_text: str | None = None
    tokens_key: str | None = None
    id: str | None = None                # import keeps nothing of the file's ids; fork/tests may set one
    created: float | None = None


@dataclass(frozen=True, slots=True)
class SearchHit:
    conversation_id: str
    conversation_title: str | None
    message_id: str
    role: str
    snippet: str
    created: float


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    name: str
    content_hash: str
    size_bytes: int
    text: str
    parts: list[dict]          # [{"name", "kind", "start", "end", "pages": [[number, start, end], ...], "encoding"}]
    notes: list[str]           # what loading skipped, and why
    tokens: int | None         # prompt tokens of the document under tokens_key
    tokens_key: str | None
    owner: str | None
    created: float
