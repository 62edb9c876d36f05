"""What the facade hands out about stored conversations: plain, frozen values, read once, with no handle back
into the store (no lazy loading, nothing to write through), so an edge can keep them, render them, or hand them
to another thread. Two frozen values of the store's own are handed out as they are: a reply's MessageStats and
a SearchHit.

    ConversationView    a conversation's fields as the user set them (defaults without the chat format's own stop
                        strings), whether a reply is being generated, `problem` when the stored row does not read
                        (it is listed anyway), and its messages when asked for
    MessageView         one message: its text, how a reply ended and its numbers, the meta a user may see
    ConversationList    one page of conversations, newest first, and where the next page starts
    SearchHit           a message that matches a search (the store's own frozen row)
"""

from __future__ import annotations

from dataclasses import dataclass

from parley.sampling import SamplingParams
from parley.store.rows import MessageStats, SearchHit

__all__ = ["ConversationList", "ConversationView", "MessageView", "SearchHit"]   # SearchHit: the store's frozen row

SHOWN_META = ("dropped", "note", "skill", "skill_params", "speaker", "tool_calls", "tool_call_id")  # what a user sees


@dataclass(frozen=True, slots=True)
class MessageView:
    id: str
    parent_id: str | None
    role: str
    content: str
    created: float
    partial: bool
    finish_reason: str | None
    stats: MessageStats
    meta: dict                       # SHOWN_META only

    @property
    def speaker(self) -> str | None:
        return self.meta.get("speaker")


@dataclass(frozen=True, slots=True)
class ConversationView:
    id: str
    created: float
    updated: float
    title: str | None
    metadata: dict
    system: str | None
    overflow: str
    max_messages: int
    persona: str | None              # the persona's registry name, as given when it was set
    character: str | None            # who the persona's card says the model speaks as
    document_ids: tuple[str, ...]
    defaults: SamplingParams         # as the user set them (the chat format's stop strings left out)
    message_count: int
    leaf_id: str | None
    model: str | None                # the model it was last served with
    owner: str | None
    generating: bool
    problem: str | None = None       # why the stored row cannot be used as it is (None: it can)
    messages: tuple[MessageView, ...] | None = None   # the current branch (or every message), when asked for


@dataclass(frozen=True, slots=True)
class ConversationList:
    items: tuple[ConversationView, ...]
    next_before: str | None          # pass as `before` for the next (older) page; None: this is the last

    @property
    def has_more(self) -> bool:
        return self.next_before is not None
