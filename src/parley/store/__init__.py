"""The store: conversations and every message as rows in SQLite or PostgreSQL, below chat/ so every edge persists
through it."""

from parley.store.db import Store, StoreError, new_id
from parley.store.rows import Conversation, Document, Message, MessageStats, NewMessage, SearchHit

__all__ = ["Conversation", "Document", "Message", "MessageStats", "NewMessage", "SearchHit", "Store", "StoreError", "new_id"]
