"""A store backend: one connection to one kind of database, and the few SQL pieces that differ between kinds.

    db = connect("/home/me/.cache/parley/parley.db")     # SQLite (the embedded default; ":memory:" for none)
    db = connect("postgresql://parley@db.lan:5432/parley") # PostgreSQL through psycopg 3 (imported only then)

store/db.py writes every statement once, in the subset both databases read: `?` placeholders, WITH RECURSIVE,
row values, no RETURNING, no `IS ?` (null-safe equality is built as `col IS NULL` or `col = ?`, which an index
serves in both). What differs is asked of the backend, by name:

    db.execute(sql, args) -> cursor    the statement in the driver's placeholder style (translated once, cached)
    db.read(sql, args) -> rows         a read; reconnects once when a server dropped the connection
    db.begin() / commit() / rollback() one write transaction; writers are serialised (SQLite's BEGIN IMMEDIATE,
                                       a PostgreSQL advisory lock), so a check and the write it guards never race
    db.fail(what, error)               a driver error as one line naming the setting to change
    db.tables()                        the tables a new store would share its database (or schema) with
    db.real, db.blob                   column types of migrations (an 8-byte float; bytes)
    db.pinned_by                       the conversations whose settings.documents list holds a document id
    db.search_sql(where), db.search_terms(text)   full-text search over every message

`db.dialect` ("sqlite" | "postgresql") is what a migration with dialect-specific DDL branches on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from parley.errors import ParleyError

MEMORY = ":memory:"
BUSY_TIMEOUT_S = 5.0
URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(target: str) -> bool:
    """A PostgreSQL URL (anything else is a SQLite path)."""
    return target.lower().startswith(URL_SCHEMES)


def connect(target: str, busy_timeout: float = BUSY_TIMEOUT_S) -> Backend:
    """The backend `target` names, connected and set up (raises StoreError naming the setting to change)."""
    if is_url(target):
        from parley.store.postgres import PostgresBackend

        return PostgresBackend(target, busy_timeout)
    from parley.store.sqlite import SQLiteBackend

    return SQLiteBackend(target, busy_timeout)


class StoreError(ParleyError):
    """The store cannot be used (locked, read-only, unreachable, not a parley store); the message names where
    it is and the setting that points parley elsewhere."""

    status = 503
    type = "server_error"
    code = "store_unavailable"


class Backend(ABC):
    dialect: str                 # "sqlite" | "postgresql"
    setting: str                 # what a user changes to point parley at another store (named in every error)
    elsewhere: str               # the fix for "this store cannot be used": point `setting` at another one
    real: str                    # column types for migrations
    blob: str
    pinned_by: str               # (document id) -> (conversation id, owner), newest first
    errors: tuple[type[BaseException], ...]   # the driver's errors, which fail() turns into ParleyErrors

    def __init__(self, where: str, busy_timeout: float):
        self.where = where       # the path, or the URL without its password: safe to show
        self.busy_timeout = busy_timeout

    @property
    def label(self) -> str:
        """The store as an error names it."""
        return f"the conversation store {self.where}"

    @abstractmethod
    def execute(self, sql: str, args: Sequence = ()) -> Any:
        """Run one statement (`?` placeholders) on the connection as it is; returns the driver's cursor."""

    def read(self, sql: str, args: Sequence = ()) -> list[tuple]:
        return self.execute(sql, args).fetchall()

    @abstractmethod
    def begin(self) -> None:
        """Open a write transaction, waiting (up to busy_timeout) while another writer holds one."""

    def commit(self) -> None:
        self.execute("COMMIT")

    def rollback(self) -> None:
        try:
            self.execute("ROLLBACK")
        except self.errors:
            pass        # no transaction left to undo (the database ended it, or the connection went with it)

    @abstractmethod
    def tables(self) -> set[str]:
        """The names of the tables in the database (PostgreSQL: in the schema parley creates its tables in)."""

    @abstractmethod
    def search_sql(self, where: str) -> str:
        """SELECT conversation_id, title, message id, role, snippet ([word] marked), created of the messages
        matching the terms (first parameter), `where` (extra `AND ...` on m, c) applied, best first, LIMIT ?."""

    @abstractmethod
    def search_terms(self, text: str) -> str:
        """User text as the search's first parameter: every word must match, none is taken for syntax ("" when
        no word is left)."""

    @abstractmethod
    def fail(self, what: str, error: BaseException) -> ParleyError:
        """A driver error met while doing `what` ("adding messages"), as the error a user sees."""

    @abstractmethod
    def close(self) -> None: ...
