"""The store's schema, as an ordered list of small named migrations.

Each migration is a function that takes a store backend (store/backend.py) inside an open write transaction;
`apply()` runs, in order, the ones a database has not recorded yet, each in its own transaction together with
its row in `_parley_migrations`, so an empty database, and one made by any earlier parley, both open. One list
for SQLite and PostgreSQL: a column type that differs is the backend's (`db.real`, `db.blob`), and a migration
whose DDL differs (the full-text index) branches on `db.dialect`. Never edit a migration that has shipped (the
SQLite text of each stays as it shipped): add a new one.

Writers are serialised (BEGIN IMMEDIATE; an advisory lock in PostgreSQL) and each migration checks, inside its
transaction, that no one applied it meanwhile: two front ends opening one empty database run each once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from parley.store import postgres
from parley.store.backend import Backend

Migration = Callable[[Backend], None]
MIGRATIONS: list[Migration] = []
migration = MIGRATIONS.append
TABLE = "_parley_migrations"


@migration
def m001_conversations_and_messages(db: Backend) -> None:
    real = db.real
    db.execute(f"""
        CREATE TABLE conversations (
            id TEXT PRIMARY KEY,
            title TEXT,
            title_auto INTEGER NOT NULL DEFAULT 1,
            system TEXT,
            defaults TEXT NOT NULL DEFAULT '{{}}',
            settings TEXT NOT NULL DEFAULT '{{}}',
            model TEXT,
            leaf_id TEXT,
            owner TEXT,
            metadata TEXT NOT NULL DEFAULT '{{}}',
            created {real} NOT NULL,
            updated {real} NOT NULL
        )""")
    db.execute("CREATE INDEX conversations_by_update ON conversations (owner, updated, id)")
    db.execute(f"""
        CREATE TABLE messages (
            id TEXT PRIMARY KEY,
            conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            parent_id TEXT REFERENCES messages (id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
            content TEXT NOT NULL,
            created {real} NOT NULL,
            partial INTEGER NOT NULL DEFAULT 0,
            finish_reason TEXT,
            prompt_tokens INTEGER,
            cached_tokens INTEGER,
            prefilled_tokens INTEGER,
            generated_tokens INTEGER,
            ttft_s {real},
            tokens_per_s {real},
            meta TEXT NOT NULL DEFAULT '{{}}'
        )""")
    db.execute("CREATE INDEX messages_by_conversation ON messages (conversation_id, created)")
    db.execute("CREATE INDEX messages_by_parent ON messages (parent_id)")


@migration
def m002_message_search(db: Backend) -> None:
    """Full-text search over every message. SQLite: FTS5, external content (the text is stored once, in
    messages). PostgreSQL: a GIN index over the expression its search queries spell (postgres.search_vector)."""
    if db.dialect == "postgresql":
        db.execute(f"CREATE INDEX messages_fts ON messages USING GIN (({postgres.search_vector('content')}))")
        return
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
def m003_message_tokens(db: Backend) -> None:
    """The exact token ids a message added to its prompt, so a resumed conversation rebuilds the very tokens
    its KV cache was saved under (tokens_key names the model and template they belong to)."""
    db.execute(f"ALTER TABLE messages ADD COLUMN tokens {db.blob}")
    db.execute("ALTER TABLE messages ADD COLUMN tokens_text TEXT")
    db.execute("ALTER TABLE messages ADD COLUMN tokens_key TEXT")


@migration
def m004_documents(db: Backend) -> None:
    """Documents loaded into model memory: their text (parts and page spans in `parts`), kept so a restart
    rebuilds the very same prompt, whose KV the disk tier holds under the same key."""
    db.execute(f"""
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
            created {db.real} NOT NULL
        )""")
    db.execute("CREATE INDEX documents_by_hash ON documents (content_hash)")
    db.execute("CREATE INDEX documents_by_owner ON documents (owner, created)")


@migration
def m005_conversation_claims(db: Backend) -> None:
    """Which front end is generating a conversation's reply, until when (a lease it renews): the database, not
    a process, decides that a second writer gets a 409, so front ends sharing one store agree."""
    db.execute("ALTER TABLE conversations ADD COLUMN claimed_by TEXT")
    db.execute(f"ALTER TABLE conversations ADD COLUMN claimed_until {db.real}")


@migration
def m006_registry_files(db: Backend) -> None:
    """The user's personas and skills, kept in the store (parley/registry.py SharedFiles), so the front ends
    sharing one database list and serve the same ones. One row per file, as the file registry names them."""
    db.execute(f"""
        CREATE TABLE registry_files (
            kind TEXT NOT NULL,
            name TEXT NOT NULL,
            suffix TEXT NOT NULL,
            data {db.blob} NOT NULL,
            updated {db.real} NOT NULL,
            PRIMARY KEY (kind, name, suffix)
        )""")


def names() -> list[str]:
    return [m.__name__ for m in MIGRATIONS]


def applied(db: Backend) -> list[str]:
    """The migrations the database records, in the order they ran."""
    if TABLE not in db.tables():
        return []
    order = "seq" if db.dialect == "postgresql" else "rowid"
    return [row[0] for row in db.read(f"SELECT name FROM {TABLE} ORDER BY {order}")]


def _record_table(db: Backend) -> None:
    if db.dialect == "postgresql":
        db.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (seq BIGINT GENERATED ALWAYS AS IDENTITY, "
                   "name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")
    else:
        db.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")


def apply(db: Backend, upto: int | None = None) -> list[str]:
    """Run the migrations `db` lacks (the first `upto` of them when given: tests build old schemas that way).
    Returns the names applied now. A database that lacks none is only read (a read-only store opens)."""
    if all(m.__name__ in applied(db) for m in MIGRATIONS[:upto]):
        return []
    ran = []
    for m in MIGRATIONS[:upto]:
        db.begin()
        try:
            _record_table(db)
            if m.__name__ not in applied(db):       # another front end may have run it while this one waited
                m(db)
                db.execute(f"INSERT INTO {TABLE} (name, applied_at) VALUES (?, ?)", (m.__name__, time.time()))
                ran.append(m.__name__)
            db.commit()
        except BaseException:
            db.rollback()
            raise
    return ran
