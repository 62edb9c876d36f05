"""Conversations kept by the server: in memory for now, behind a small class the SQLite store (a later issue)
replaces with the same methods (create / get / list / delete / save). Each entry is one parley Conversation,
whose turn-by-turn token record keeps its KV cache warm across messages."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from parley.chat.conversation import Conversation
from parley.errors import LimitExceeded, NotFound
from parley.server.errors import shorten


@dataclass(eq=False)
class StoredConversation:
    id: str
    conversation: Conversation
    created: int = field(default_factory=lambda: int(time.time()))
    title: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    generation: Any = None          # the Generation writing the next reply (None: idle)
    preparing: bool = False         # its next turn's prompt is being built (no generation yet)
    last: dict | None = None        # usage and parley facts of the last reply

    @property
    def busy(self) -> bool:
        return self.generation is not None or self.preparing


class ConversationStore:
    def __init__(self, max_conversations: int):
        self.max_conversations = max_conversations
        self._items: dict[str, StoredConversation] = {}

    def __len__(self) -> int:
        return len(self._items)

    def create(self, conversation: Conversation, *, title: str | None = None,
               metadata: dict[str, str] | None = None) -> StoredConversation:
        if len(self._items) >= self.max_conversations:
            raise LimitExceeded(
                f"this server holds at most {self.max_conversations} conversations (max_conversations, "
                "`parley serve --max-conversations`); delete some with DELETE /v1/conversations/{id}",
                param="max_conversations", code="max_conversations")
        entry = StoredConversation(id=f"conv_{secrets.token_hex(12)}", conversation=conversation, title=title,
                                   metadata=dict(metadata or {}))
        self._items[entry.id] = entry
        return entry

    def get(self, conversation_id: str) -> StoredConversation:
        entry = self._items.get(conversation_id)
        if entry is None:
            raise NotFound(f"no conversation {shorten(conversation_id)!r} (GET /v1/conversations lists them)",
                           param="conversation_id")
        return entry

    def list(self) -> list[StoredConversation]:
        return sorted(self._items.values(), key=lambda e: e.created)

    def delete(self, conversation_id: str) -> StoredConversation:
        entry = self.get(conversation_id)
        del self._items[conversation_id]
        return entry

    def save(self, entry: StoredConversation) -> None:
        """Called after every recorded reply (a persistent store writes it here)."""
