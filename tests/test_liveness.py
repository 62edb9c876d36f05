"""Replies cut short: at start, only replies whose writer process died are marked partial and cancelled. A
reply without a writer (imported, or from an older parley) is never rewritten, nor is one whose writer still
runs (a second process sharing the store). No model needed: the store and chat/liveness.py alone."""

from __future__ import annotations

import pytest

from parley.api import Library
from parley.chat.liveness import MY_TAG, WRITER, holder_tag, mark_cut_short
from parley.store import NewMessage, Store

DEAD = "999999999:12345"   # no such pid


@pytest.fixture()
def store(tmp_path):
    s = Store(tmp_path / "parley.db")
    yield s
    s.close()


def reply_row(store: Store, meta: dict):
    conv = store.create_conversation()
    _, reply = store.add_messages(conv.id, [NewMessage("user", "Hi."),
                                            NewMessage("assistant", "Hel", partial=True, meta=meta)])
    return reply.id


def test_only_a_dead_writers_replies_are_marked(store):
    dead = reply_row(store, {WRITER: DEAD})
    alive = reply_row(store, {WRITER: MY_TAG})
    untagged = reply_row(store, {})
    assert mark_cut_short(store) == 1
    got = {mid: store.get_message(mid) for mid in (dead, alive, untagged)}
    assert (got[dead].partial, got[dead].finish_reason) == (True, "cancelled")
    assert got[alive].finish_reason is None and got[untagged].finish_reason is None
    assert mark_cut_short(store) == 0                      # a second start changes nothing more


def test_a_restart_leaves_imported_replies_as_they_were(tmp_path):
    """3,500 imported messages whose replies carry no finish_reason used to become "cut short" (partial,
    cancelled) at the next start; an exported writer tag is not imported either."""
    messages = []
    for i in range(40):
        messages += [{"id": f"u{i}", "parent_id": f"a{i - 1}" if i else None, "role": "user", "content": f"Q{i}"},
                     {"id": f"a{i}", "parent_id": f"u{i}", "role": "assistant", "content": f"A{i}",
                      "meta": {WRITER: DEAD} if i == 0 else {}}]
    doc = {"format": "parley.conversation", "version": 1, "conversation": {"leaf_id": "a39"}, "messages": messages}
    with Library(tmp_path) as lib:
        view = lib.import_(doc)
    store = Store(tmp_path / "parley.db")
    try:
        assert mark_cut_short(store) == 0
        rows = store.messages(view.id)
        assert all(not m.partial and m.finish_reason is None for m in rows)
        assert all(WRITER not in m.meta for m in rows)
    finally:
        store.close()


def test_a_writer_on_another_host_is_dead_only_once_its_claim_lapsed(store):
    """A front end on another host (a shared PostgreSQL store) cannot be checked by pid: its reply is cut short
    only when its claim on the conversation has lapsed."""
    elsewhere_live, elsewhere_gone = "41:777@another-host#aa", "42:777@another-host#bb"
    live = reply_row(store, {WRITER: elsewhere_live})
    gone = reply_row(store, {WRITER: elsewhere_gone})
    store.claim(store.get_message(live).conversation_id, elsewhere_live, 30)
    store.claim(store.get_message(gone).conversation_id, elsewhere_gone, -1)
    assert mark_cut_short(store) == 1
    assert store.get_message(live).finish_reason is None
    assert store.get_message(gone).finish_reason == "cancelled"


def test_a_dead_local_holders_claims_are_released_at_start(store):
    """A crash leaves its conversations claimed; the next start on this host frees them at once, without
    waiting for the lease, and leaves a running holder's claims alone."""
    mine, dead_conv = store.create_conversation().id, store.create_conversation().id
    me = holder_tag()
    store.claim(mine, me, 30)
    store.claim(dead_conv, DEAD + "@" + me.partition("@")[2], 30)
    mark_cut_short(store)
    assert set(store.claims()) == {mine}
    assert store.claim(dead_conv, "someone-else", 30) is True
