"""Store: conversations and their messages, in SQLite or PostgreSQL. Every SQL statement of parley is here.

    store = Store(path)                               # $PARLEY_HOME/parley.db by default; ":memory:" for none
    store = Store("postgresql://parley@db.lan/parley") # a PostgreSQL URL (postgres:// too): shared by front ends
    conv = store.create_conversation(system="...")
    user, reply = store.add_messages(conv.id, [NewMessage("user", "Hi"), NewMessage("assistant", "", partial=True)])
    store.finish_message(reply.id, content="Hello!", finish_reason="stop", stats=...)
    store.branch(conv.leaf_id)                        # root .. leaf, in order

Every message is a row (never one blob per conversation); a message's parent makes the tree, so retry and edit
are siblings and every branch is kept; the conversation points at its current leaf. One transaction per write,
writers serialised. Each statement is written once, in SQL both databases read (WITH RECURSIVE, row values, no
RETURNING, null-safe equality built by _is); the backend (store/backend.py: store/sqlite.py, store/postgres.py)
runs it and holds the few pieces that differ (full-text search, the pinned-document query, error messages).

Thread-safety: one connection, guarded by a lock; calls are short (well under a millisecond each here).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from parley.errors import Conflict, InvalidRequest, NotFound
from parley.store import migrations
from parley.store.backend import BUSY_TIMEOUT_S, MEMORY, Backend, StoreError, connect
from parley.store.rows import (
    ROLES,
    STAT_FIELDS,
    Conversation,
    Document,
    Message,
    MessageStats,
    NewMessage,
    SearchHit,
    pack_tokens,
    unpack_tokens,
)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


_CONV_COLS = ("id, title, title_auto, system, defaults, settings, model, leaf_id, owner, metadata, created, "
              "updated")
_MSG_COLS = ("id, conversation_id, parent_id, role, content, created, partial, finish_reason, "
             + ", ".join(STAT_FIELDS) + ", meta, tokens, tokens_text, tokens_key")
_DOC_COLS = "id, name, content_hash, size_bytes, text, parts, notes, tokens, tokens_key, owner, created"
_CONV_FIELDS = frozenset({"title", "title_auto", "system", "defaults", "settings", "model", "leaf_id", "owner",
                          "metadata"})
_JSON_FIELDS = frozenset({"defaults", "settings", "metadata"})


def _is(column: str, value: Any) -> tuple[str, tuple]:
    """Null-safe equality as both databases read it and an index serves it: `col IS NULL`, or `col = ?`."""
    return (f"{column} IS NULL", ()) if value is None else (f"{column} = ?", (value,))


def _owned(column: str, owner: str | None) -> tuple[str, tuple]:
    """The owner filter of lists and search: everyone's rows when `owner` is None."""
    return ("1 = 1", ()) if owner is None else (f"{column} = ?", (owner,))


def _check_documents(db: Backend, settings: Any) -> None:
    """Inside a write: every document a conversation's settings pin is still there (a delete cannot slip in
    between a check and the write that pins it)."""
    docs = settings.get("documents") if isinstance(settings, dict) else None
    for i, d in enumerate(docs if isinstance(docs, list) else ()):
        if db.execute("SELECT 1 FROM documents WHERE id = ?", (d,)).fetchone() is None:
            raise NotFound(f"no document {_short(str(d))}", param=f"document_ids[{i}]")


def _conversation(row: Sequence, count: int = 0) -> Conversation:
    return Conversation(id=row[0], title=row[1], title_auto=bool(row[2]), system=row[3],
                        defaults=json.loads(row[4]), settings=json.loads(row[5]), model=row[6], leaf_id=row[7],
                        owner=row[8], metadata=json.loads(row[9]), created=row[10], updated=row[11],
                        message_count=count)


def _document(row: Sequence) -> Document:
    return Document(id=row[0], name=row[1], content_hash=row[2], size_bytes=row[3], text=row[4],
                    parts=json.loads(row[5]), notes=json.loads(row[6]), tokens=row[7], tokens_key=row[8],
                    owner=row[9], created=row[10])


def _message(row: Sequence) -> Message:
    n = 8 + len(STAT_FIELDS)
    return Message(id=row[0], conversation_id=row[1], parent_id=row[2], role=row[3], content=row[4],
                   created=row[5], partial=bool(row[6]), finish_reason=row[7],
                   stats=MessageStats(*row[8:n]), meta=json.loads(row[n]), tokens=unpack_tokens(row[n + 1]),
                   tokens_text=row[n + 2], tokens_key=row[n + 3])


class Store:
    def __init__(self, path: str | Path = MEMORY, *, busy_timeout: float = BUSY_TIMEOUT_S):
        """`path`: a SQLite file (":memory:" for none), or a postgresql:// URL (psycopg needed). Opening checks
        the database is a parley store and brings its schema up to date."""
        self._lock = threading.RLock()
        self._db = connect(str(path), busy_timeout)
        self.path = self._db.where          # shown in errors: a URL without its password
        self.busy_timeout = busy_timeout
        try:
            self._check_owner()
            migrations.apply(self._db)
        except self._db.errors as e:
            self._db.close()
            raise self._db.fail("opening", e) from None
        except BaseException:
            self._db.close()
            raise

    @property
    def dialect(self) -> str:
        """The backend's kind: "sqlite" or "postgresql"."""
        return self._db.dialect

    def _check_owner(self) -> None:
        db = self._db
        tables = db.tables()
        if tables and migrations.TABLE not in tables:
            raise StoreError(f"{db.label} holds tables of another program, not a parley store; {db.elsewhere}",
                             param=db.setting)
        unknown = [n for n in migrations.applied(db) if n not in migrations.names()]
        if unknown:
            raise StoreError(f"{db.label} was written by a newer parley (migration {unknown[0]}); upgrade parley "
                             "to open it", param=db.setting)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- transactions ------------------------------------------------------------------------------------
    @contextmanager
    def _write(self, what: str) -> Iterator[Backend]:
        with self._lock:
            db = self._db
            try:
                db.begin()
            except db.errors as e:
                raise db.fail(what, e) from None
            try:
                yield db
                db.commit()
            except db.errors as e:
                db.rollback()
                raise db.fail(what, e) from None
            except BaseException:
                db.rollback()
                raise

    def _read(self, sql: str, args: Sequence = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.read(sql, args)
            except self._db.errors as e:
                raise self._db.fail("reading", e) from None

    # ---- conversations -----------------------------------------------------------------------------------
    def create_conversation(self, *, title: str | None = None, system: str | None = None,
                            defaults: dict | None = None, settings: dict | None = None, model: str | None = None,
                            owner: str | None = None, metadata: dict | None = None,
                            messages: Sequence[NewMessage] = (), leaf_id: str | None = None) -> Conversation:
        """A new conversation; with `messages` (each with its id and parent_id set, parents first: an import or
        a fork), the whole tree is written in the same transaction and `leaf_id` is its current leaf."""
        now = time.time()
        cid = new_id("conv")
        first_user = next((m.content for m in messages if m.role == "user" and m.content.strip()), None)
        auto = title is None
        if auto and first_user:
            title = auto_title(first_user)
        with self._write("creating a conversation") as db:
            _check_documents(db, settings)
            db.execute(f"INSERT INTO conversations ({_CONV_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?)",
                       (cid, title, int(auto), system, _json(defaults or {}), _json(settings or {}),
                        model, owner, _json(metadata or {}), now, now))
            for i, m in enumerate(messages):
                self._insert(db, cid, m, m.parent_id, m.id or new_id("msg"), now + i * 1e-6)
            if leaf_id is not None:
                db.execute("UPDATE conversations SET leaf_id = ? WHERE id = ?", (leaf_id, cid))
        return self.get_conversation(cid)

    def get_conversation(self, conversation_id: str) -> Conversation:
        rows = self._read(f"SELECT {_CONV_COLS}, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) "
                          "FROM conversations c WHERE id = ?", (conversation_id,))
        if not rows:
            raise NotFound(f"no conversation {_short(conversation_id)} (GET /v1/conversations lists them)",
                           param="conversation_id")
        return _conversation(rows[0][:-1], rows[0][-1])

    def list_conversations(self, *, limit: int = 50, before: str | None = None,
                           owner: str | None = None) -> list[Conversation]:
        """Most recently updated first; `before` (a conversation id) pages on from that one. Never loads
        message bodies."""
        owned, args = _owned("owner", owner)
        where, args = [owned], list(args)
        if before is not None:
            anchor = self._read("SELECT updated, id FROM conversations WHERE id = ?", (before,))
            if not anchor:
                raise NotFound(f"no conversation {_short(before)} to page from (before)", param="before")
            where.append("(updated, id) < (?, ?)")
            args += list(anchor[0])
        rows = self._read(
            f"SELECT {_CONV_COLS}, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) "
            f"FROM conversations c WHERE {' AND '.join(where)} ORDER BY updated DESC, id DESC LIMIT ?",
            (*args, limit))
        return [_conversation(r[:-1], r[-1]) for r in rows]

    def count_conversations(self, *, owner: str | None = None) -> int:
        owned, args = _owned("owner", owner)
        return self._read(f"SELECT COUNT(*) FROM conversations WHERE {owned}", args)[0][0]

    def update_conversation(self, conversation_id: str, **fields: Any) -> Conversation:
        unknown = set(fields) - _CONV_FIELDS
        if unknown:
            raise InvalidRequest(f"unknown conversation field {sorted(unknown)[0]!r}", param=sorted(unknown)[0])
        if "title" in fields and "title_auto" not in fields:
            fields["title_auto"] = fields["title"] is None
        if "leaf_id" in fields and fields["leaf_id"] is not None:
            self._check_message_of(conversation_id, fields["leaf_id"], "leaf_id")
        sets = ", ".join(f"{k} = ?" for k in fields) + ", updated = ?"
        values = [(_json(v) if k in _JSON_FIELDS else int(v) if k == "title_auto" else v) for k, v in fields.items()]
        with self._write("updating a conversation") as db:
            _check_documents(db, fields.get("settings"))
            n = db.execute(f"UPDATE conversations SET {sets} WHERE id = ?",
                           (*values, time.time(), conversation_id)).rowcount
        if not n:
            raise NotFound(f"no conversation {_short(conversation_id)}", param="conversation_id")
        return self.get_conversation(conversation_id)

    def delete_conversation(self, conversation_id: str) -> None:
        with self._write("deleting a conversation") as db:
            db.execute("UPDATE conversations SET leaf_id = NULL WHERE id = ?", (conversation_id,))
            db.execute("DELETE FROM messages WHERE conversation_id = ?", (conversation_id,))
            n = db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,)).rowcount
        if not n:
            raise NotFound(f"no conversation {_short(conversation_id)}", param="conversation_id")

    # ---- messages ----------------------------------------------------------------------------------------
    def add_messages(self, conversation_id: str, messages: Sequence[NewMessage], *,
                     set_leaf: bool = True) -> list[Message]:
        """Insert messages in one transaction; each without a parent_id hangs under the one before it (the
        first under its own parent_id, or the root). The last becomes the conversation's leaf; the first user
        message names an untitled conversation."""
        conv = self.get_conversation(conversation_id)
        out_ids: list[str] = []
        now = time.time()
        with self._write("adding messages") as db:
            prev: str | None = None
            for i, m in enumerate(messages):
                parent = m.parent_id if (i == 0 or m.parent_id is not None) else prev
                if i == 0 and parent is not None:
                    self._check_message_of(conversation_id, parent, "parent_id", db)
                mid = m.id or new_id("msg")
                self._insert(db, conversation_id, m, parent, mid, now + i * 1e-6)
                out_ids.append(mid)
                prev = mid
            sets, args = ["updated = ?"], [now]
            if set_leaf and out_ids:
                sets.append("leaf_id = ?")
                args.append(out_ids[-1])
            if conv.title_auto and conv.title is None:
                first = next((m.content for m in messages if m.role == "user" and m.content.strip()), None)
                if first:
                    sets.append("title = ?")
                    args.append(auto_title(first))
            db.execute(f"UPDATE conversations SET {', '.join(sets)} WHERE id = ?", (*args, conversation_id))
        return [self.get_message(i) for i in out_ids]

    @staticmethod
    def _insert(db: Backend, conversation_id: str, m: NewMessage, parent: str | None, mid: str,
                now: float) -> None:
        if m.role not in ROLES:
            raise InvalidRequest(f"role must be one of {', '.join(ROLES)}, got {m.role!r}", param="role")
        db.execute(f"INSERT INTO messages ({_MSG_COLS}) VALUES ({', '.join('?' * (12 + len(STAT_FIELDS)))})",
                   (mid, conversation_id, parent, m.role, m.content, m.created if m.created is not None else now,
                    int(m.partial), m.finish_reason, *(getattr(m.stats, f) for f in STAT_FIELDS), _json(m.meta),
                    pack_tokens(m.tokens), m.tokens_text, m.tokens_key))

    def finish_message(self, message_id: str, *, content: str, finish_reason: str | None, partial: bool,
                       stats: MessageStats | None = None, tokens: list[int] | None = None,
                       tokens_text: str | None = None, tokens_key: str | None = None,
                       meta: dict | None = None) -> None:
        """A reply is done (or cut short): its text, how it ended and its numbers, in one transaction."""
        stats = stats or MessageStats()
        sets = ("content = ?, finish_reason = ?, partial = ?, " + ", ".join(f"{f} = ?" for f in STAT_FIELDS)
                + ", tokens = ?, tokens_text = ?, tokens_key = ?")
        args: list[Any] = [content, finish_reason, int(partial), *(getattr(stats, f) for f in STAT_FIELDS),
                           pack_tokens(tokens), tokens_text, tokens_key]
        if meta is not None:
            sets += ", meta = ?"
            args.append(_json(meta))
        with self._write("finishing a reply") as db:
            db.execute(f"UPDATE messages SET {sets} WHERE id = ?", (*args, message_id))
            db.execute("UPDATE conversations SET updated = ? WHERE id = "
                       "(SELECT conversation_id FROM messages WHERE id = ?)", (time.time(), message_id))

    def save_partial(self, message_id: str, content: str) -> None:
        """The text of a reply still being written (so a crash keeps what was said)."""
        with self._write("saving a reply in progress") as db:
            db.execute("UPDATE messages SET content = ? WHERE id = ? AND partial = 1", (content, message_id))

    def delete_message(self, message_id: str, *, leaf_id: str | None = None) -> None:
        """Remove a message and everything under it; the conversation's leaf moves to `leaf_id` if given."""
        msg = self.get_message(message_id)
        with self._write("deleting a message") as db:
            db.execute("UPDATE conversations SET leaf_id = ?, updated = ? WHERE id = ?",
                       (leaf_id, time.time(), msg.conversation_id))
            db.execute("DELETE FROM messages WHERE id = ?", (message_id,))

    def get_message(self, message_id: str) -> Message:
        rows = self._read(f"SELECT {_MSG_COLS} FROM messages WHERE id = ?", (message_id,))
        if not rows:
            raise NotFound(f"no message {_short(message_id)}", param="message_id")
        return _message(rows[0])

    def message_of(self, conversation_id: str, message_id: str, param: str = "message_id") -> Message:
        """The message, checked to belong to the conversation (404 / 400 naming `param` otherwise)."""
        msg = self.get_message(message_id)
        if msg.conversation_id != conversation_id:
            raise InvalidRequest(f"{param} {_short(message_id)} belongs to another conversation", param=param)
        return msg

    def _check_message_of(self, conversation_id: str, message_id: str, param: str, db=None) -> None:
        rows = (db.execute("SELECT conversation_id FROM messages WHERE id = ?", (message_id,)).fetchall()
                if db is not None else self._read("SELECT conversation_id FROM messages WHERE id = ?", (message_id,)))
        if not rows:
            raise NotFound(f"no message {_short(message_id)} ({param})", param=param)
        if rows[0][0] != conversation_id:
            raise InvalidRequest(f"{param} {_short(message_id)} belongs to another conversation", param=param)

    def branch(self, leaf_id: str | None) -> list[Message]:
        """The messages from the root down to `leaf_id`, in order ([] for None)."""
        if leaf_id is None:
            return []
        rows = self._read(
            "WITH RECURSIVE path (id, depth) AS ("
            " SELECT id, 0 FROM messages WHERE id = ?"
            " UNION ALL SELECT m.parent_id, p.depth + 1 FROM messages m JOIN path p ON m.id = p.id"
            " WHERE m.parent_id IS NOT NULL)"
            f" SELECT {', '.join('m.' + c.strip() for c in _MSG_COLS.split(','))}"
            " FROM path JOIN messages m ON m.id = path.id ORDER BY path.depth DESC", (leaf_id,))
        if not rows:
            raise NotFound(f"no message {_short(leaf_id)}", param="message_id")
        return [_message(r) for r in rows]

    def messages(self, conversation_id: str) -> list[Message]:
        """Every message of the conversation, every branch, oldest first."""
        rows = self._read(f"SELECT {_MSG_COLS} FROM messages WHERE conversation_id = ? ORDER BY created, id",
                          (conversation_id,))
        return [_message(r) for r in rows]

    def children(self, message_id: str | None, conversation_id: str) -> list[Message]:
        parent, args = _is("parent_id", message_id)
        rows = self._read(f"SELECT {_MSG_COLS} FROM messages WHERE conversation_id = ? AND {parent} "
                          "ORDER BY created, id", (conversation_id, *args))
        return [_message(r) for r in rows]

    def unfinished_replies(self) -> list[Message]:
        """Replies still being written (or left so by a process that died mid-reply)."""
        rows = self._read(f"SELECT {_MSG_COLS} FROM messages WHERE role = 'assistant' AND finish_reason IS NULL")
        return [_message(r) for r in rows]

    # ---- claims: who generates a conversation's reply ------------------------------------------------------
    def claim(self, conversation_id: str, holder: str, lease_s: float) -> bool:
        """Take the conversation for `holder` until now + lease_s, unless another holder's lease still runs
        (False then). One UPDATE decides it, so of two front ends sharing the store exactly one wins."""
        now = time.time()
        with self._write("claiming a conversation") as db:
            n = db.execute("UPDATE conversations SET claimed_by = ?, claimed_until = ? WHERE id = ? AND "
                           "(claimed_by IS NULL OR claimed_by = ? OR claimed_until < ?)",
                           (holder, now + lease_s, conversation_id, holder, now)).rowcount
            if not n and not db.read("SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)):
                raise NotFound(f"no conversation {_short(conversation_id)}", param="conversation_id")
        return bool(n)

    def release(self, conversation_id: str, holder: str) -> None:
        """Give the conversation back (only `holder`'s own claim)."""
        with self._write("releasing a conversation") as db:
            db.execute("UPDATE conversations SET claimed_by = NULL, claimed_until = NULL WHERE id = ? AND "
                       "claimed_by = ?", (conversation_id, holder))

    def renew_claims(self, holder: str, lease_s: float) -> int:
        """Extend every claim `holder` has to now + lease_s. Returns how many."""
        with self._write("renewing claims") as db:
            return db.execute("UPDATE conversations SET claimed_until = ? WHERE claimed_by = ?",
                              (time.time() + lease_s, holder)).rowcount

    def claims(self) -> dict[str, tuple[str, float]]:
        """conversation id -> (holder, lease end) of every claim, lapsed ones included."""
        return {r[0]: (r[1], r[2]) for r in
                self._read("SELECT id, claimed_by, claimed_until FROM conversations WHERE claimed_by IS NOT NULL")}

    def release_claims_of(self, holders: Sequence[str]) -> int:
        """Drop every claim of these holders (processes known to be dead). Returns how many."""
        n = 0
        with self._write("releasing claims") as db:
            for h in holders:
                n += db.execute("UPDATE conversations SET claimed_by = NULL, claimed_until = NULL "
                                "WHERE claimed_by = ?", (h,)).rowcount
        return n

    def mark_interrupted(self, message_ids: Sequence[str] | None = None) -> int:
        """Replies cut short by a process that died are marked partial and cancelled (all unfinished ones when
        `message_ids` is None)."""
        with self._write("marking interrupted replies") as db:
            if message_ids is None:
                return db.execute("UPDATE messages SET finish_reason = 'cancelled', partial = 1 "
                                  "WHERE role = 'assistant' AND finish_reason IS NULL").rowcount
            n = 0
            for mid in message_ids:
                n += db.execute("UPDATE messages SET finish_reason = 'cancelled', partial = 1 "
                                "WHERE id = ? AND finish_reason IS NULL", (mid,)).rowcount
            return n

    # ---- documents ---------------------------------------------------------------------------------------
    def add_document(self, *, name: str, content_hash: str, size_bytes: int, text: str, parts: list[dict],
                     notes: list[str], tokens: int | None, tokens_key: str | None,
                     owner: str | None = None) -> Document:
        did = new_id("doc")
        with self._write("adding a document") as db:
            db.execute(f"INSERT INTO documents ({_DOC_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (did, name, content_hash, size_bytes, text, _json(parts), _json(notes), tokens, tokens_key,
                        owner, time.time()))
        return self.get_document(did)

    def find_document(self, *, name: str, content_hash: str, owner: str | None = None) -> Document | None:
        """The document already stored under this name with this content (loading a file again reuses it)."""
        owned, args = _is("owner", owner)
        rows = self._read(f"SELECT {_DOC_COLS} FROM documents WHERE name = ? AND content_hash = ? AND {owned} "
                          "ORDER BY created LIMIT 1", (name, content_hash, *args))
        return _document(rows[0]) if rows else None

    def get_document(self, document_id: str) -> Document:
        rows = self._read(f"SELECT {_DOC_COLS} FROM documents WHERE id = ?", (document_id,))
        if not rows:
            raise NotFound(f"no document {_short(document_id)} (GET /v1/documents lists them)", param="document_id")
        return _document(rows[0])

    def list_documents(self, *, owner: str | None = None, limit: int = 200) -> list[Document]:
        """Newest first, without their text (text is "")."""
        cols = _DOC_COLS.replace("text,", "'' AS text,")
        owned, args = _owned("owner", owner)
        rows = self._read(f"SELECT {cols} FROM documents WHERE {owned} ORDER BY created DESC, id DESC LIMIT ?",
                          (*args, limit))
        return [_document(r) for r in rows]

    def set_document_tokens(self, document_id: str, tokens: int, tokens_key: str) -> None:
        with self._write("recording a document's size") as db:
            db.execute("UPDATE documents SET tokens = ?, tokens_key = ? WHERE id = ?", (tokens, tokens_key,
                                                                                       document_id))

    def delete_document(self, document_id: str) -> list[tuple[str, str | None]]:
        """Delete a document unless conversations pin it, deciding both in one transaction (a conversation made
        to pin it meanwhile either comes first and keeps it, or finds it gone). Returns the (id, owner) of the
        conversations that pin it, newest first: [] when it was deleted."""
        with self._write("deleting a document") as db:
            users = db.execute(db.pinned_by, (document_id,)).fetchall()
            if users:
                return [(r[0], r[1]) for r in users]
            n = db.execute("DELETE FROM documents WHERE id = ?", (document_id,)).rowcount
        if not n:
            raise NotFound(f"no document {_short(document_id)}", param="document_id")
        return []

    # ---- search ------------------------------------------------------------------------------------------
    def search(self, text: str, *, limit: int = 20, owner: str | None = None) -> list[SearchHit]:
        if not text.strip():
            raise InvalidRequest("the search text is empty", param="q")
        terms = self._db.search_terms(text)
        if not terms:
            return []
        owned, args = _owned("c.owner", owner)
        rows = self._read(self._db.search_sql(f"AND {owned}"), (terms, *args, limit))
        return [SearchHit(*r) for r in rows]


    # ---- registry files (personas, skills: parley/registry.py SharedFiles) ---------------------------------
    def registry_files(self, kind: str) -> list[tuple[str, str, float]]:
        """(name, suffix, updated) of every stored file of this kind."""
        rows = self._read("SELECT name, suffix, updated FROM registry_files WHERE kind = ? ORDER BY name, suffix",
                          (kind,))
        return [(r[0], r[1], float(r[2])) for r in rows]

    def registry_file(self, kind: str, name: str, suffix: str) -> bytes | None:
        rows = self._read("SELECT data FROM registry_files WHERE kind = ? AND name = ? AND suffix = ?",
                          (kind, name, suffix))
        return bytes(rows[0][0]) if rows else None

    def put_registry_file(self, kind: str, name: str, suffix: str, data: bytes, *, overwrite: bool) -> float:
        """Store a file as `name` (its files of other suffixes removed); without `overwrite`, a file of that name
        stored meanwhile (by another front end) is a Conflict, decided in the transaction. Returns its time."""
        now = time.time()
        with self._write(f"saving {kind} {name!r}") as db:
            if not overwrite and db.read("SELECT 1 FROM registry_files WHERE kind = ? AND name = ?", (kind, name)):
                raise Conflict(f"a user {kind} {_short(name)} exists (saved by another front end?); delete it "
                               "first or save with overwrite", param="name")
            db.execute("DELETE FROM registry_files WHERE kind = ? AND name = ?", (kind, name))
            db.execute("INSERT INTO registry_files (kind, name, suffix, data, updated) VALUES (?, ?, ?, ?, ?)",
                       (kind, name, suffix, data, now))
        return now

    def delete_registry_files(self, kind: str, name: str) -> None:
        with self._write(f"deleting {kind} {name!r}") as db:
            db.execute("DELETE FROM registry_files WHERE kind = ? AND name = ?", (kind, name))


def auto_title(text: str, limit: int = 60) -> str:
    """A title from the first user message: its first line, cut at a word near `limit` characters."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), text.strip())
    if len(line) <= limit:
        return line
    cut = line[:limit].rsplit(" ", 1)[0] or line[:limit]
    return cut.rstrip(" ,.;:") + "..."


def _short(value: str, limit: int = 64) -> str:
    """An id as shown in an error: quoted, and cut when a client sent something huge."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}... ({len(value)} characters)"
