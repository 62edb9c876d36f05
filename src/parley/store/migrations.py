"""The store's schema, as an ordered list of small named migrations.

Each migration is a function that takes a sqlite3 connection inside an open transaction; `apply()` runs, in
order, the ones a database has not recorded yet, each in its own transaction together with its row in
`_parley_migrations`, so an empty file, and a file made by any earlier parley, both open. Never edit a
migration that has shipped: add a new one. Statements stay portable (no SQLite-only types), except the
full-text index, which is SQLite's FTS5 and lives in its own migration.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[Migration] = []
migration = MIGRATIONS.append
TABLE = "_parley_migrations"


@migration
def m001_conversations_and_messages(db: sqlite3.Connection) -> None:
    db.execute("""
        CREATE TABLE conversations (
            id TEXT PRIMARY KEY,
            title TEXT,
            title_auto INTEGER NOT NULL DEFAULT 1,
            system TEXT,
            defaults TEXT NOT NULL DEFAULT '{}',
            settings TEXT NOT NULL DEFAULT '{}',
            model TEXT,
            leaf_id TEXT,
            owner TEXT,
            metadata TEXT NOT NULL DEFAULT '{}',
            created REAL NOT NULL,
            updated REAL NOT NULL
        )""")
    db.execute("CREATE INDEX conversations_by_update ON conversations (owner, updated, id)")
    db.execute("""
        CREATE TABLE messages (
            id TEXT PRIMARY KEY,
            conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            parent_id TEXT REFERENCES messages (id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
            content TEXT NOT NULL,
            created REAL NOT NULL,
            partial INTEGER NOT NULL DEFAULT 0,
            finish_reason TEXT,
            prompt_tokens INTEGER,
            cached_tokens INTEGER,
            prefilled_tokens INTEGER,
            generated_tokens INTEGER,
            ttft_s REAL,
            tokens_per_s REAL,
            meta TEXT NOT NULL DEFAULT '{}'
        )""")
    db.execute("CREATE INDEX messages_by_conversation ON messages (conversation_id, created)")
    db.execute("CREATE INDEX messages_by_parent ON messages (parent_id)")


@migration
def m002_message_search(db: sqlite3.Connection) -> None:
    """Full-text search over every message (FTS5, external content: the text is stored once, in messages)."""
    db.execute("CREATE VIRTUAL TABLE messages_fts USING fts5 (content, content='messages', content_rowid='rowid',"
               " tokenize='unicode61 remove_diacritics 2')")
    db.execute("CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN "
               "INSERT INTO messages_fts (rowid, content) VALUES (new.rowid, new.content); END")
    db.execute("CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN "
               "INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.rowid, old.content); END")
    db.execute("CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN "
               "INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.rowid, old.content); "
               "INSERT INTO messages_fts (rowid, content) VALUES (new.rowid, new.content); END")
    db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")  # rows written before this migration


@migration
def m003_message_tokens(db: sqlite3.Connection) -> None:
    """The exact token ids a message added to its prompt, so a resumed conversation rebuilds the very tokens
    its KV cache was saved under (tokens_key names the model and template they belong to)."""
    db.execute("ALTER TABLE messages ADD COLUMN tokens BLOB")
    db.execute("ALTER TABLE messages ADD COLUMN tokens_text TEXT")
    db.execute("ALTER TABLE messages ADD COLUMN tokens_key TEXT")


@migration
def m004_documents(db: sqlite3.Connection) -> None:
    """Documents loaded into model memory: their text (parts and page spans in `parts`), kept so a restart
    rebuilds the very same prompt, whose KV the disk tier holds under the same key."""
    db.execute("""
        CREATE TABLE documents (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            size_bytes INTEGER NOT NULL,
            text TEXT NOT NULL,
            parts TEXT NOT NULL DEFAULT '[]',
            notes TEXT NOT NULL DEFAULT '[]',
            tokens INTEGER,
            tokens_key TEXT,
            owner TEXT,
            created REAL NOT NULL
        )""")
    db.execute("CREATE INDEX documents_by_hash ON documents (content_hash)")
    db.execute("CREATE INDEX documents_by_owner ON documents (owner, created)")


def names() -> list[str]:
    return [m.__name__ for m in MIGRATIONS]


def applied(db: sqlite3.Connection) -> list[str]:
    db.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    return [row[0] for row in db.execute(f"SELECT name FROM {TABLE} ORDER BY rowid")]


def apply(db: sqlite3.Connection, upto: int | None = None) -> list[str]:
    """Run the migrations `db` lacks (the first `upto` of them when given: tests build old schemas that way).
    Returns the names applied now. The connection must be in autocommit mode (isolation_level=None)."""
    done = set(applied(db))
    ran = []
    for m in MIGRATIONS[:upto]:
        if m.__name__ in done:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            m(db)
            db.execute(f"INSERT INTO {TABLE} (name, applied_at) VALUES (?, ?)", (m.__name__, time.time()))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        ran.append(m.__name__)
    return ran
