"""Library: the stored conversations without loading a model (what `parley conversations` uses): the same
conversations service as a loaded Parley's, over the store alone, so listing, reading, searching, exporting,
importing, deleting and forking work exactly as they do there. Sending needs a model (parley.load())."""

from __future__ import annotations

import os

from parley.api.conversations import ConversationsService
from parley.api.guard import LoopGuard
from parley.chat.conversations import Conversations
from parley.settings import Settings
from parley.store import Store


class Library(ConversationsService):
    def __init__(self, home: str | os.PathLike | None = None, *, db_url: str | None = None):
        s = Settings.at_home(home)
        s = s.replace(db_url=db_url) if db_url else s        # else $PARLEY_DB_URL, else $PARLEY_HOME/parley.db
        self._store_file = Store(s.store_target)
        super().__init__(Conversations(self._store_file), None, LoopGuard())

    def close(self) -> None:
        self._store_file.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
