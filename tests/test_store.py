"""The store on its own (no model), on both backends: rows, branches, search, documents, export/import,
migrations, and two processes writing one store; then what is SQLite's alone (its pragmas, bad files, a locked
or read-only file) and PostgreSQL's alone (a real server, tests/pg.py: refused connections, dropped ones,
another program's database, its column types and search index)."""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from parley.errors import InvalidRequest, NotFound
from parley.store import MessageStats, NewMessage, Store, StoreError
from parley.store import migrations as M
from parley.store.backend import connect
from parley.store.exchange import export_conversation, import_conversation

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(params=["sqlite", "postgresql"])
def new_target(request, tmp_path):
    """Makes a new, empty place for a store each call: a SQLite path, or a new PostgreSQL database's URL."""
    if request.param == "sqlite":
        n = itertools.count()
        yield lambda: str(tmp_path / f"parley{next(n)}.db")
        return
    server = request.getfixturevalue("postgres")
    made: list[str] = []

    def make() -> str:
        made.append(server.create_database())
        return made[-1]

    yield make
    for url in made:
        server.drop_database(url)


@pytest.fixture()
def store(new_target):
    s = Store(new_target())
    yield s
    s.close()


def chat(store: Store, *pairs: tuple[str, str], **conv) -> tuple[str, list]:
    c = store.create_conversation(**conv)
    rows = []
    for user, reply in pairs:
        rows += [NewMessage("user", user), NewMessage("assistant", reply, finish_reason="stop")]
    return c.id, store.add_messages(c.id, rows)


# ---- rows and branches ------------------------------------------------------------------------------------
def test_schema_is_current(store):
    assert M.applied(store._db) == M.names()
    assert M.apply(store._db) == []


def test_sqlite_pragmas(tmp_path):
    store = Store(tmp_path / "parley.db")
    db = store._db
    assert store.dialect == "sqlite"
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    store.close()


def test_messages_chain_leaf_and_title(store):
    cid, msgs = chat(store, ("What is the capital of France?\nAnswer briefly.", "Paris."), ("And Italy?", "Rome."))
    conv = store.get_conversation(cid)
    assert conv.title == "What is the capital of France?"
    assert conv.leaf_id == msgs[-1].id and conv.message_count == 4
    assert [m.content for m in store.branch(conv.leaf_id)] == ["What is the capital of France?\nAnswer briefly.",
                                                               "Paris.", "And Italy?", "Rome."]
    assert [m.parent_id for m in msgs] == [None, msgs[0].id, msgs[1].id, msgs[2].id]


def test_siblings_are_branches(store):
    cid, msgs = chat(store, ("Name a colour.", "Blue."))
    user = msgs[0]
    (red,) = store.add_messages(cid, [NewMessage("assistant", "Red.", parent_id=user.id)])
    (green,) = store.add_messages(cid, [NewMessage("assistant", "Green.", parent_id=user.id)])
    assert [m.content for m in store.children(user.id, cid)] == ["Blue.", "Red.", "Green."]
    assert store.get_conversation(cid).leaf_id == green.id
    assert [m.content for m in store.branch(red.id)] == ["Name a colour.", "Red."]
    (more,) = store.add_messages(cid, [NewMessage("user", "Another?", parent_id=red.id)])
    assert len(store.messages(cid)) == 5


def test_parent_from_another_conversation_is_refused(store):
    a, msgs = chat(store, ("Hi", "Hello"))
    b = store.create_conversation().id
    with pytest.raises(InvalidRequest, match="belongs to another conversation"):
        store.add_messages(b, [NewMessage("user", "x", parent_id=msgs[0].id)])
    with pytest.raises(NotFound, match="msg_nope"):
        store.add_messages(b, [NewMessage("user", "x", parent_id="msg_nope")])
    assert store.get_conversation(b).message_count == 0


def test_finish_partial_and_interrupted(store):
    cid = store.create_conversation().id
    _, reply = store.add_messages(cid, [NewMessage("user", "Tell me a story."),
                                        NewMessage("assistant", "", partial=True)])
    store.save_partial(reply.id, "Once upon")
    assert store.get_message(reply.id).content == "Once upon"
    assert store.mark_interrupted() == 1           # a process died here
    got = store.get_message(reply.id)
    assert got.partial and got.finish_reason == "cancelled" and got.content == "Once upon"
    store.finish_message(reply.id, content="Once upon a time.", finish_reason="stop", partial=False,
                         stats=MessageStats(prompt_tokens=10, cached_tokens=4, generated_tokens=5, ttft_s=0.1),
                         tokens=[1, 2, 3], tokens_key="k")
    got = store.get_message(reply.id)
    assert (got.content, got.partial, got.stats.cached_tokens, got.tokens) == ("Once upon a time.", False, 4,
                                                                               [1, 2, 3])
    assert store.mark_interrupted() == 0


def test_list_pages_newest_first_without_bodies(store):
    ids = [chat(store, (f"question {i}", f"answer {i}"))[0] for i in range(7)]
    page1 = store.list_conversations(limit=3)
    page2 = store.list_conversations(limit=3, before=page1[-1].id)
    page3 = store.list_conversations(limit=3, before=page2[-1].id)
    got = [c.id for c in page1 + page2 + page3]
    assert got == list(reversed(ids))
    assert all(c.message_count == 2 for c in page1)
    with pytest.raises(NotFound, match="before"):
        store.list_conversations(before="conv_gone")


def test_owner_scopes_lists_and_search(store):
    mine = chat(store, ("purple elephants", "ok"), owner="alice")[0]
    chat(store, ("purple giraffes", "ok"), owner="bob")
    assert [c.id for c in store.list_conversations(owner="alice")] == [mine]
    assert len(store.list_conversations()) == 2
    assert [h.conversation_id for h in store.search("purple", owner="alice")] == [mine]


def test_update_and_delete(store):
    cid, _ = chat(store, ("Hello there", "Hi"))
    conv = store.update_conversation(cid, title="Greetings", system="Be kind.", defaults={"temperature": 0.2})
    assert (conv.title, conv.title_auto, conv.system, conv.defaults) == ("Greetings", False, "Be kind.",
                                                                         {"temperature": 0.2})
    store.delete_conversation(cid)
    with pytest.raises(NotFound):
        store.get_conversation(cid)
    assert store._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0
    assert store.search("Hello") == []


def test_search_finds_messages_with_snippets(store):
    cid, msgs = chat(store, ("How do I bake sourdough bread?", "Feed the starter, then knead the dough."),
                     ("What about rye?", "Rye dough is stickier."))
    hits = store.search("dough")
    assert {h.message_id for h in hits} == {msgs[1].id, msgs[3].id}
    assert all("[dough]" in h.snippet.lower() for h in hits)
    assert hits[0].conversation_id == cid and hits[0].conversation_title.startswith("How do I bake")
    for odd in ('"', 'AND OR NOT', 'dough*', "NEAR(", "'; DROP TABLE messages; --", "col:umn"):
        store.search(odd)  # FTS syntax in user text is taken as words, never an error
    with pytest.raises(InvalidRequest):
        store.search("   ")


def test_search_reaches_into_a_long_message(store):
    """A 2.4 MB message (300,000 different words) is stored and found by its first words (PostgreSQL indexes
    a message's first 100,000 characters: a tsvector holds at most 1 MB)."""
    long_text = " ".join(f"w{i:06x}" for i in range(300_000))
    cid, msgs = chat(store, ("needle " + long_text, "ok"))
    assert store.get_message(msgs[0].id).content == "needle " + long_text
    (hit,) = store.search("needle w000001")
    assert hit.message_id == msgs[0].id and "[needle]" in hit.snippet


# ---- documents ----------------------------------------------------------------------------------------------
def add_doc(store: Store, name: str = "paper.pdf", owner: str | None = None):
    return store.add_document(name=name, content_hash="h" + name, size_bytes=10, text="some text",
                              parts=[{"name": name, "start": 0, "end": 9}], notes=[], tokens=None,
                              tokens_key=None, owner=owner)


def test_documents_found_listed_and_pinned(store):
    doc = add_doc(store, owner="alice")
    other = add_doc(store, "notes.txt")
    assert store.find_document(name="paper.pdf", content_hash="hpaper.pdf", owner="alice").id == doc.id
    assert store.find_document(name="paper.pdf", content_hash="hpaper.pdf") is None     # owner None: unowned only
    assert store.find_document(name="notes.txt", content_hash="hnotes.txt").id == other.id
    assert [d.id for d in store.list_documents(owner="alice")] == [doc.id]
    assert {d.id for d in store.list_documents()} == {doc.id, other.id}
    assert store.get_document(doc.id).parts == [{"name": "paper.pdf", "start": 0, "end": 9}]
    pins = store.create_conversation(settings={"documents": [other.id, doc.id]}, owner="bob")
    store.create_conversation(settings={"documents": doc.id})              # not a list: pins nothing
    store.create_conversation(settings={"documents": {"id": doc.id}})
    assert store.delete_document(doc.id) == [(pins.id, "bob")]
    with pytest.raises(NotFound) as e:
        store.create_conversation(settings={"documents": [doc.id, "doc_gone"]})
    assert e.value.param == "document_ids[1]"
    store.update_conversation(pins.id, settings={"documents": []})
    assert store.delete_document(doc.id) == []
    with pytest.raises(NotFound):
        store.get_document(doc.id)
    store.set_document_tokens(other.id, 42, "model-a")
    assert (store.get_document(other.id).tokens, store.get_document(other.id).tokens_key) == (42, "model-a")


# ---- export / import --------------------------------------------------------------------------------------
def tree(store: Store, cid: str) -> tuple:
    """A conversation's tree without ids: each message as (role, content, parent's content), and the leaf's."""
    msgs = store.messages(cid)
    by_id = {m.id: m for m in msgs}
    leaf = store.get_conversation(cid).leaf_id
    return (sorted((m.role, m.content, by_id[m.parent_id].content if m.parent_id else None) for m in msgs),
            by_id[leaf].content if leaf else None)


def test_export_import_round_trip(store):
    cid, msgs = chat(store, ("Name a colour.", "Blue."), ("Another?", "Green."), system="Be brief.",
                     defaults={"temperature": 0.0}, metadata={"topic": "colours"})
    store.add_messages(cid, [NewMessage("assistant", "Red.", parent_id=msgs[0].id)])
    data = json.loads(json.dumps(export_conversation(store, cid)))
    new = import_conversation(store, data)
    assert new.id != cid
    assert tree(store, new.id) == tree(store, cid)
    assert (new.system, new.defaults, new.metadata, new.title) == ("Be brief.", {"temperature": 0.0},
                                                                   {"topic": "colours"}, "Name a colour.")
    assert not {m.id for m in store.messages(new.id)} & {m.id for m in store.messages(cid)}
    again = import_conversation(store, data)  # importing twice makes two conversations
    assert tree(store, again.id) == tree(store, cid)


def _doc(**changes) -> dict:
    doc = {"format": "parley.conversation", "version": 1,
           "conversation": {"title": "t", "system": None, "leaf_id": "b"},
           "messages": [{"id": "a", "parent_id": None, "role": "user", "content": "hi"},
                        {"id": "b", "parent_id": "a", "role": "assistant", "content": "hello"}]}
    for path, value in changes.items():
        target = doc
        keys = path.split(".")
        for k in keys[:-1]:
            target = target[int(k)] if isinstance(target, list) else target[k]
        last = keys[-1]
        if isinstance(target, list):
            target[int(last)] = value
        elif value is ...:
            del target[last]
        else:
            target[last] = value
    return doc


@pytest.mark.parametrize(("changes", "named"), [
    ({"format": "other"}, "format"),
    ({"version": 2}, "version"),
    ({"messages": "nope"}, "messages"),
    ({"messages.1.role": "robot"}, "messages[1].role"),
    ({"messages.1.parent_id": "zz"}, "messages[1].parent_id"),
    ({"messages.0.parent_id": "b"}, "cycle"),
    ({"messages.1.id": "a"}, "messages[1].id"),
    ({"messages.0.content": ...}, "messages[0].content"),
    ({"messages.0.content": 5}, "messages[0].content"),
    ({"conversation.leaf_id": "q"}, "conversation.leaf_id"),
    ({"conversation.title": "x" * 100_000}, "conversation.title"),
    ({"messages.1.stats": {"tokens_per_s": "fast"}}, "messages[1].stats.tokens_per_s"),
    ({"messages.1.finish_reason": "boom"}, "messages[1].finish_reason"),
])
def test_malformed_import_names_the_field_and_writes_nothing(store, changes, named):
    before = len(store.list_conversations())
    with pytest.raises(InvalidRequest) as e:
        import_conversation(store, _doc(**changes))
    assert named in e.value.message
    assert len(store.list_conversations()) == before
    import_conversation(store, _doc())  # the unbroken document imports


# ---- migrations and bad files -----------------------------------------------------------------------------
def test_store_of_the_first_schema_opens_and_migrates(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript((FIXTURES / "store_m001.sql").read_text())
    db.close()
    s = Store(path)
    assert M.applied(s._db) == M.names()
    (conv,) = s.list_conversations()
    assert [m.content for m in s.branch(conv.leaf_id)] == ["Name a colour.", "Red.", "Another one, please."]
    assert [h.message_id for h in s.search("colour")] == ["msg_000000000000000000000001"]  # indexed on upgrade
    assert s.get_message("msg_000000000000000000000002").tokens is None
    s.close()
    assert M.applied(Store(path)._db) == M.names()  # reopening applies nothing twice


def test_each_partial_schema_upgrades(new_target):
    for upto in range(len(M.MIGRATIONS) + 1):
        target = new_target()
        db = connect(target)
        assert M.apply(db, upto=upto) == M.names()[:upto]
        if upto:
            db.execute("INSERT INTO conversations (id, title, created, updated) VALUES ('conv_old', 'old', 1, 2)")
            db.execute("INSERT INTO messages (id, conversation_id, role, content, created) "
                       "VALUES ('msg_old', 'conv_old', 'user', 'written before the upgrade', 1)")
        db.close()
        s = Store(target)
        chat(s, ("hello", "world"))
        assert M.applied(s._db) == M.names()
        assert len(s.search("hello")) == 1
        if upto:
            assert [h.message_id for h in s.search("before the upgrade")] == ["msg_old"]  # indexed on upgrade
        s.close()


def test_front_ends_opening_one_empty_store_at_once(new_target):
    """Four front ends open one empty database together: the migrations run once, every one opens."""
    target = new_target()
    start = threading.Barrier(4)
    opened: list[Store | BaseException] = []

    def open_one() -> None:
        start.wait()
        try:
            opened.append(Store(target))
        except BaseException as e:       # reported by the assert below
            opened.append(e)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(isinstance(s, Store) for s in opened) and len(opened) == 4, opened
    assert M.applied(opened[0]._db) == M.names()
    for s in opened:
        s.close()


def test_two_front_ends_see_each_others_writes(new_target):
    target = new_target()
    a, b = Store(target), Store(target)
    try:
        cid, msgs = chat(a, ("written by a", "ok"))
        assert b.get_conversation(cid).message_count == 2
        b.add_messages(cid, [NewMessage("user", "and by b", parent_id=msgs[-1].id)])
        assert [m.content for m in a.branch(a.get_conversation(cid).leaf_id)] == ["written by a", "ok", "and by b"]
        assert [h.message_id for h in a.search("by b")] == [b.get_conversation(cid).leaf_id]
    finally:
        a.close()
        b.close()


def test_one_claim_per_conversation_decided_by_the_database(new_target):
    """Two front ends on one store: the first claim wins, the second is refused until it is released or its
    lease lapses; a claim renews; an unknown conversation is a 404, not a conflict."""
    target = new_target()
    a, b = Store(target), Store(target)
    try:
        cid = a.create_conversation().id
        assert a.claim(cid, "front-a", 30) is True
        assert b.claim(cid, "front-b", 30) is False
        assert a.claim(cid, "front-a", 30) is True                # its own claim again: still its own
        assert b.renew_claims("front-b", 30) == 0 and a.renew_claims("front-a", 30) == 1
        b.release(cid, "front-b")                                 # not b's to release
        assert b.claim(cid, "front-b", 30) is False
        a.release(cid, "front-a")
        assert b.claim(cid, "front-b", -1) is True                # lapsed the moment it was taken
        assert set(a.claims()) == {cid} and a.claims()[cid][0] == "front-b"
        assert a.claim(cid, "front-a", 30) is True                # a lapsed lease is free to take
        assert a.release_claims_of(["front-a"]) == 1 and a.claims() == {}
        with pytest.raises(NotFound):
            b.claim("conv_nope", "front-b", 30)
    finally:
        a.close()
        b.close()


def test_file_of_another_program(tmp_path):
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE invoices (id INTEGER)")
    db.close()
    with pytest.raises(StoreError, match="another program"):
        Store(other)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match=str(junk)):
        Store(junk)


def test_store_of_a_newer_parley(tmp_path):
    path = tmp_path / "new.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute(f"INSERT INTO {M.TABLE} VALUES ('m999_from_the_future', 0)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer parley"):
        Store(path)


def test_locked_store_is_a_clear_error(tmp_path):
    path = tmp_path / "locked.db"
    s = Store(path, busy_timeout=0.2)
    cid = s.create_conversation().id
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="locked"):
            s.add_messages(cid, [NewMessage("user", "hi")])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    s.add_messages(cid, [NewMessage("user", "hi")])
    assert s.get_conversation(cid).message_count == 1


def _make_read_only(path: Path) -> None:
    if os.geteuid() != 0:
        path.chmod(0o444)
        path.parent.chmod(0o555)
        return
    for p in (path, path.parent):  # root ignores permissions: the immutable attribute stops even root
        if subprocess.run(["chattr", "+i", str(p)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not available here")


def _undo_read_only(path: Path) -> None:
    if os.geteuid() != 0:
        path.parent.chmod(0o755)
        path.chmod(0o644)
    else:
        for p in (path.parent, path):
            subprocess.run(["chattr", "-i", str(p)], capture_output=True)


def test_read_only_store_is_a_clear_error(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    path = d / "parley.db"
    Store(path).close()
    _make_read_only(path)
    try:
        with pytest.raises(StoreError, match="read-only") as e:
            Store(path).create_conversation()
        assert str(path) in e.value.message
    finally:
        _undo_read_only(path)


def test_unusable_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="PARLEY_HOME"):
        Store(blocker / "parley.db")


WRITER = textwrap.dedent("""
    import sys
    from parley.store import Store, NewMessage
    s = Store(sys.argv[1])
    cid = s.create_conversation(title=sys.argv[2]).id
    parent = None
    for i in range(150):
        (m,) = s.add_messages(cid, [NewMessage("user" if i % 2 == 0 else "assistant", f"{sys.argv[2]} {i}",
                                               parent_id=parent)])
        parent = m.id
    print(cid)
""")


def test_two_processes_write_one_store(new_target):
    target = new_target()
    Store(target).close()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, target, name], stdout=subprocess.PIPE, text=True)
             for name in ("alpha", "beta")]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    s = Store(target)
    if s.dialect == "sqlite":
        assert s._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    for cid, name in zip(outs, ("alpha", "beta"), strict=True):
        branch = s.branch(s.get_conversation(cid).leaf_id)
        assert [m.content for m in branch] == [f"{name} {i}" for i in range(150)]
    s.close()


# ---- PostgreSQL alone ---------------------------------------------------------------------------------------
def psycopg():
    return pytest.importorskip("psycopg", reason="psycopg is not installed: pip install 'parley[postgres]'")


def test_pg_columns_read_as_sqlite_and_search_uses_its_index(pg_url):
    s = Store(pg_url)
    assert s.dialect == "postgresql"
    types = dict(s._db.read("SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
                            "WHERE table_schema = current_schema()"))
    assert types["messages.created"] == types["conversations.updated"] == "double precision"
    assert types["messages.tokens"] == "bytea" and types["conversations.settings"] == "text"
    assert M.applied(s._db) == M.names()
    s._db.execute("SET enable_seqscan = off")   # a handful of rows: the planner would scan them otherwise
    plan = "\n".join(r[0] for r in s._db.read("EXPLAIN " + s._db.search_sql(""), ("word", 5)))
    assert "messages_fts" in plan, plan
    s.close()


def test_pg_database_of_another_program(pg_url):
    with psycopg().connect(pg_url, autocommit=True) as db:
        db.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(StoreError, match="another program") as e:
        Store(pg_url)
    assert e.value.param == "PARLEY_DB_URL" and "PARLEY_DB_URL" in e.value.message


def test_pg_store_of_a_newer_parley(pg_url):
    Store(pg_url.replace("postgresql://", "postgres://", 1)).close()      # the short scheme opens it too
    with psycopg().connect(pg_url, autocommit=True) as db:
        db.execute(f"INSERT INTO {M.TABLE} (name, applied_at) VALUES ('m999_from_the_future', 0)")
    with pytest.raises(StoreError, match="newer parley"):
        Store(pg_url)


def test_pg_connection_refused_names_the_setting_not_the_password():
    psycopg()
    with pytest.raises(StoreError) as e:
        Store("postgresql://parley:s3cret@127.0.0.1:1/parley?password=s3cret&sslmode=disable")
    msg = e.value.message
    assert msg.startswith("cannot connect to postgresql://parley@127.0.0.1:1/parley?sslmode=disable: "
                          "connection refused"), msg
    assert "PARLEY_DB_URL" in msg and e.value.param == "PARLEY_DB_URL" and "s3cret" not in msg


def test_pg_without_psycopg_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(StoreError, match=r"pip install 'parley\[postgres\]'"):
        Store("postgres://parley@db.example/parley")


def test_pg_dropped_connection_is_reopened(pg_url, postgres):
    s = Store(pg_url)
    cid, msgs = chat(s, ("before the restart", "ok"))
    assert postgres.terminate(pg_url) == 1
    assert s.get_conversation(cid).message_count == 2                 # a read reconnects
    assert postgres.terminate(pg_url) == 1
    s.save_partial(msgs[1].id, "unchanged")                           # so does the start of a write
    s.add_messages(cid, [NewMessage("user", "after the restart")])
    assert s.get_conversation(cid).message_count == 3
    s.close()


def test_pg_locked_store_is_a_clear_error(pg_url):
    from parley.store.postgres import WRITE_LOCK

    s = Store(pg_url, busy_timeout=0.2)
    cid = s.create_conversation().id
    with psycopg().connect(pg_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (WRITE_LOCK,))
        with pytest.raises(StoreError, match="locked by another front end"):
            s.add_messages(cid, [NewMessage("user", "hi")])
    s.add_messages(cid, [NewMessage("user", "hi")])
    assert s.get_conversation(cid).message_count == 1
    s.close()


def test_pg_text_with_a_nul_is_a_clear_error(pg_url):
    s = Store(pg_url)
    cid = s.create_conversation().id
    with pytest.raises(InvalidRequest, match="NUL"):
        s.add_messages(cid, [NewMessage("user", "a\x00b")])
    assert s.get_conversation(cid).message_count == 0                # nothing half-written
    s.close()


def test_front_ends_on_one_store_share_the_users_personas(new_target, tmp_path):
    """Personas kept in the store (as with --db-url): what one front end imports, edits or deletes, the other
    lists at once; a persona file a front end had before is copied in once; two saves of one new name race in
    the database, and the second is a 409."""
    from parley.chat.personas import Persona, Personas, card_json
    from parley.errors import Conflict
    from parley.registry import SharedFiles

    target = new_target()
    stores = [Store(target), Store(target)]
    try:
        local = tmp_path / "a-personas"
        local.mkdir()
        (local / "old-friend.toml").write_text('name = "Old Friend"\ndescription = "Knew you before."\n')
        a = Personas(local, shared=SharedFiles(stores[0], "persona", tmp_path / "a" / "shared"))
        b = Personas(tmp_path / "b-personas", shared=SharedFiles(stores[1], "persona", tmp_path / "b" / "shared"))
        assert "old-friend" in b.names() and b.get("old-friend").description == "Knew you before."
        assert b.origin("old-friend") == "user" and "lighthouse" in b.names()      # the bundled ones stay

        name, _ = a.import_card(json.dumps(card_json(Persona("Ada", description="A kind engineer."))).encode(),
                                "ada.json")
        assert b.get(name).description == "A kind engineer."
        b.save(Persona("Ada", description="A kinder engineer."), overwrite=True)
        assert a.get(name).description == "A kinder engineer."
        with pytest.raises(Conflict):       # a's mirror is stale-free, but the database decides
            stores[0].put_registry_file("persona", name, ".toml", b"name = 'Ada'\n", overwrite=False)
        with pytest.raises((Conflict, InvalidRequest)):
            a.save(Persona("Ada"))

        b.delete("old-friend")
        assert "old-friend" not in a.names() and (local / "old-friend.toml").exists()
        again = Personas(local, shared=SharedFiles(stores[0], "persona", tmp_path / "a" / "shared"))
        assert "old-friend" not in again.names()        # deleted from the store: not copied in again
    finally:
        for s in stores:
            s.close()
