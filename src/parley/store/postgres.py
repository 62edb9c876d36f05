"""The PostgreSQL backend (psycopg 3): one database that several parley front ends share.

    PostgresBackend("postgresql://parley:secret@db.lan:5432/parley", busy_timeout=5.0)

One connection in autocommit mode; a write is BEGIN, pg_advisory_xact_lock(WRITE_LOCK), the statements,
COMMIT: writers are serialised across every front end as SQLite's BEGIN IMMEDIATE serialises processes, so a
check and the write it guards (a document pinned while it is deleted) never race, and two front ends opening
one empty database run its migrations once. lock_timeout bounds the wait (busy_timeout). A connection the
server dropped (a restart, pg_terminate_backend) is reopened once, when a read or the start of a write meets it.

Columns read back as in SQLite: JSON stays TEXT (cast to jsonb only inside a query), floats are DOUBLE
PRECISION, token ids BYTEA. Full-text search: a GIN index over to_tsvector('simple', ...) of each message's
first SEARCHED_CHARS characters (a tsvector holds at most 1 MB), plainto_tsquery (every word, no syntax),
ts_headline marking hits [like this], best ts_rank first. Errors name PARLEY_DB_URL and never the password.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from parley.errors import InvalidRequest, ParleyError
from parley.store.backend import Backend, StoreError

SETTING = "PARLEY_DB_URL"
FLAG = "--db-url"
WRITE_LOCK = int.from_bytes(b"parley", "big")   # the advisory lock key every parley writer takes
CONNECT_TIMEOUT_S = 10
# 100,000 characters keep any text's tsvector under PostgreSQL's 1 MB limit (at most ~6 bytes a character).
SEARCHED_CHARS = 100_000


def search_vector(column: str) -> str:
    """What is searched of a message. Never change it: migration m002's GIN index is built over this very
    expression, and a query only uses the index when it spells the same (a new migration would replace it)."""
    return f"to_tsvector('simple', left({column}, {SEARCHED_CHARS}))"


_PINNED_BY = ("SELECT c.id, c.owner FROM conversations c"
              " WHERE (c.settings::jsonb -> 'documents') @> jsonb_build_array(CAST(? AS TEXT))"
              " ORDER BY c.updated DESC")

_SEARCH = ("SELECT m.conversation_id, c.title, m.id, m.role,"
           f" ts_headline('simple', left(m.content, {SEARCHED_CHARS}), q,"
           " 'StartSel=[, StopSel=], MaxWords=12, MinWords=5'), m.created"
           " FROM plainto_tsquery('simple', ?) q, messages m JOIN conversations c ON c.id = m.conversation_id"
           f" WHERE {search_vector('m.content')} @@ q {{where}}"
           f" ORDER BY ts_rank({search_vector('m.content')}, q) DESC, m.created, m.id LIMIT ?")


@functools.lru_cache(maxsize=1024)
def _paramstyle(sql: str) -> str:
    """`?` placeholders -> psycopg's %s (outside quoted literals); a literal % doubled."""
    parts = sql.replace("%", "%%").split("'")
    parts[::2] = [p.replace("?", "%s") for p in parts[::2]]   # even parts lie outside '...' literals
    return "'".join(parts)


def redact(url: str) -> str:
    """The URL as errors show it: no password, neither in the user part nor as a query parameter."""
    scheme, sep, rest = url.partition("://")
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    netloc, tail = rest[:cut], rest[cut:]
    userinfo, at, hosts = netloc.rpartition("@")
    if at:
        netloc = userinfo.split(":", 1)[0] + "@" + hosts
    path, _, query = tail.partition("?")
    kept = [p for p in query.split("&") if p and "password" not in p.split("=", 1)[0].lower()]
    return scheme + sep + netloc + path + ("?" + "&".join(kept) if kept else "")


def _reason(error: BaseException) -> str:
    """libpq's reason, without its preamble: 'connection refused', 'database "x" does not exist'."""
    line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    line = line.rsplit("failed: ", 1)[-1].removeprefix("FATAL:").strip()
    return line[:1].lower() + line[1:]


class PostgresBackend(Backend):
    dialect = "postgresql"
    setting = SETTING
    elsewhere = f"point {SETTING} ({FLAG}) at another database"
    real = "DOUBLE PRECISION"
    blob = "BYTEA"
    pinned_by = _PINNED_BY

    def __init__(self, url: str, busy_timeout: float):
        super().__init__(redact(url), busy_timeout)
        self._url = url
        self._in_write = False   # a dropped connection is only reopened between writes, never inside one
        try:
            import psycopg
        except ImportError:
            raise StoreError(f"{self.label} is a PostgreSQL URL, which needs psycopg: "
                             "pip install 'parley[postgres]'", param=SETTING) from None
        self._psycopg = psycopg
        self.errors = (psycopg.Error,)
        self._conn = self._connect()

    def _connect(self) -> Any:
        psycopg = self._psycopg
        try:
            conn = psycopg.connect(self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                                   application_name="parley")
        except psycopg.Error as e:
            raise StoreError(f"cannot connect to {self.where}: {_reason(e)}; start the server, or point "
                             f"{SETTING} ({FLAG}) at another database", param=SETTING) from None
        try:
            conn.execute(f"SET lock_timeout = {max(1, int(self.busy_timeout * 1000))}")  # 0 would wait forever
        except psycopg.Error as e:
            conn.close()
            raise self.fail("opening", e) from None
        return conn

    def _lost(self) -> bool:
        return self._conn.closed

    def _reconnect(self) -> None:
        self._conn.close()
        self._conn = self._connect()

    def execute(self, sql: str, args: Sequence = ()) -> Any:
        return self._conn.execute(_paramstyle(sql), tuple(args))

    def read(self, sql: str, args: Sequence = ()) -> list[tuple]:
        try:
            return self.execute(sql, args).fetchall()
        except self._psycopg.OperationalError:
            if self._in_write or not self._lost():
                raise
        self._reconnect()
        return self.execute(sql, args).fetchall()

    def begin(self) -> None:
        for attempt in (1, 2):
            try:
                self.execute("BEGIN")
                self._in_write = True
                self.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK,))
                return
            except self._psycopg.OperationalError:
                self.rollback()
                if attempt == 2 or not self._lost():
                    raise
            self._reconnect()

    def commit(self) -> None:
        self._in_write = False
        self.execute("COMMIT")

    def rollback(self) -> None:
        self._in_write = False
        super().rollback()

    def tables(self) -> set[str]:
        return {r[0] for r in self.read("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}

    def search_sql(self, where: str) -> str:
        return _SEARCH.format(where=where)

    def search_terms(self, text: str) -> str:
        return " ".join(w for w in text.split() if any(ch.isalnum() for ch in w))

    def fail(self, what: str, error: BaseException) -> ParleyError:
        errors = self._psycopg.errors
        if isinstance(error, self._psycopg.DataError) and "NUL" in str(error):
            return InvalidRequest("a text holds a NUL character (\\u0000), which PostgreSQL cannot store; remove "
                                  f"it ({what})")
        if isinstance(error, errors.LockNotAvailable):
            why = (f"is locked by another front end (waited {self.busy_timeout:g} s for its write to end); retry, "
                   f"or {self.elsewhere}")
        elif isinstance(error, self._psycopg.OperationalError) and self._lost():
            why = f"lost its connection ({_reason(error)}); check the server, or {self.elsewhere}"
        elif isinstance(error, errors.InsufficientPrivilege):
            why = (f"refused: {_reason(error)} (parley creates its tables on first use: grant the user CREATE on "
                   f"the schema, or {self.elsewhere})")
        elif isinstance(error, errors.ReadOnlySqlTransaction):
            why = f"is read-only (a standby server?); point {SETTING} ({FLAG}) at the primary"
        else:
            why = f"failed: {_reason(error)}"
        return StoreError(f"{self.label} {why} ({what})", param=SETTING)

    def close(self) -> None:
        self._conn.close()
