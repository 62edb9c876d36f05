"""The SQLite backend (stdlib sqlite3): the embedded default, one file under $PARLEY_HOME.

WAL journal with synchronous=NORMAL (a power cut loses at most the last commits, never the file), foreign keys
on, a busy timeout so two processes can share a file; BEGIN IMMEDIATE takes the file's write lock at the start
of every write. Full-text search is FTS5 (migration m002), its snippets marked [like this].
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from parley.errors import ParleyError
from parley.store.backend import MEMORY, Backend, StoreError

# the conversations whose settings pin a document (settings.documents is a list of document ids)
_PINNED_BY = ("SELECT c.id, c.owner FROM conversations c, json_each(c.settings, '$.documents') d "
              "WHERE json_type(c.settings, '$.documents') = 'array' AND d.value = ? ORDER BY c.updated DESC")

_SEARCH = ("SELECT m.conversation_id, c.title, m.id, m.role,"
           " snippet(messages_fts, 0, '[', ']', '...', 12), m.created"
           " FROM messages_fts JOIN messages m ON m.rowid = messages_fts.rowid"
           " JOIN conversations c ON c.id = m.conversation_id"
           " WHERE messages_fts MATCH ? {where} ORDER BY rank LIMIT ?")


class SQLiteBackend(Backend):
    dialect = "sqlite"
    setting = "PARLEY_HOME"
    elsewhere = "move it away or point PARLEY_HOME at another directory"
    real = "REAL"
    blob = "BLOB"
    pinned_by = _PINNED_BY
    errors = (sqlite3.Error,)

    def __init__(self, path: str | Path, busy_timeout: float):
        super().__init__(str(path), busy_timeout)
        if self.where != MEMORY:
            parent = Path(self.where).parent
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create the directory {parent} for the conversation store: "
                                 f"{e.strerror}; point PARLEY_HOME at a writable directory",
                                 param="PARLEY_HOME") from None
        try:
            self._conn = sqlite3.connect(self.where, timeout=busy_timeout, isolation_level=None,
                                         check_same_thread=False)
        except sqlite3.Error as e:
            raise self.fail("opening", e) from None
        try:
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            if self.where != MEMORY:
                self._wal()
            self._conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as e:
            self._conn.close()
            raise self.fail("opening", e) from None

    def _wal(self) -> None:
        """Switch to the WAL journal. On a new file that other processes open at the same moment, SQLite can
        answer "locked" at once, without waiting through its busy timeout: wait here instead."""
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)
        if mode.lower() != "wal":
            raise sqlite3.OperationalError(f"journal mode {mode} (WAL needed)")

    @property
    def label(self) -> str:
        return f"the file {self.where}"

    def execute(self, sql: str, args: Sequence = ()) -> Any:
        return self._conn.execute(sql, args)

    def begin(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def tables(self) -> set[str]:
        return {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def search_sql(self, where: str) -> str:
        return _SEARCH.format(where=where)

    def search_terms(self, text: str) -> str:
        """An FTS5 query matching every word (each quoted, so no word is taken for syntax)."""
        words = [w for w in text.split() if any(ch.isalnum() for ch in w)]
        return " ".join('"' + w.replace('"', '""') + '"' for w in words)

    def fail(self, what: str, error: BaseException) -> ParleyError:
        text = str(error)
        if "locked" in text or "busy" in text:
            why = (f"is locked by another program (waited {self.busy_timeout:g} s); close it, or point PARLEY_HOME "
                   "at another directory")
        elif "readonly" in text or "read-only" in text or ("unable to open" in text and Path(self.where).exists()):
            why = ("is read-only, or its directory is (SQLite writes -wal and -shm files beside it); make both "
                   "writable, or point PARLEY_HOME at a writable directory")
        elif "not a database" in text or "malformed" in text:
            why = ("is not a SQLite database parley can read (another program's file, or damaged); move it away "
                   "or point PARLEY_HOME at another directory")
        elif "unable to open" in text:
            why = "cannot be opened (does its directory exist and is it writable?); point PARLEY_HOME elsewhere"
        else:
            why = f"failed: {text}"
        return StoreError(f"the conversation store {self.where} {why} ({what})", param="PARLEY_HOME")

    def close(self) -> None:
        self._conn.close()
