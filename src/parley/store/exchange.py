"""Export and import one conversation as JSON: the whole tree (every branch), the current leaf, the numbers.

    {"format": "parley.conversation", "version": 1,
     "conversation": {"title", "system", "defaults", "settings", "metadata", "created", "updated", "leaf_id"},
     "messages": [{"id", "parent_id", "role", "content", "created", "partial", "finish_reason", "stats", "meta"}]}

Token ids are not exported (they belong to one model file; a re-import recomputes the KV). Import checks every
field first and names the first bad one (`messages[3].parent_id`); nothing is written unless all of it is good.
Imported messages get new ids, so a file can be imported twice.
"""

from __future__ import annotations

import math
from typing import Any

from parley.errors import InvalidRequest
from parley.store.db import Store, new_id
from parley.store.rows import ROLES, STAT_FIELDS, Conversation, MessageStats, NewMessage

FORMAT = "parley.conversation"
VERSION = 1
TITLE_MAX = 200
MAX_MESSAGES = 100_000
MAX_CONTENT = 4_000_000
FINISH_REASONS = ("stop", "length", "cancelled", "error")
CREATED_MAX = 32503680000        # the year 3000: a bigger "created" is not a time
PROCESS_KEYS = ("writer",)       # meta a running process keeps on a row it writes (chat/liveness.py): not imported


def export_conversation(store: Store, conversation_id: str) -> dict:
    conv = store.get_conversation(conversation_id)
    return {
        "format": FORMAT,
        "version": VERSION,
        "conversation": {"id": conv.id, "title": conv.title, "system": conv.system, "defaults": conv.defaults,
                         "settings": conv.settings, "metadata": conv.metadata, "created": conv.created,
                         "updated": conv.updated, "leaf_id": conv.leaf_id},
        "messages": [{"id": m.id, "parent_id": m.parent_id, "role": m.role, "content": m.content,
                      "created": m.created, "partial": m.partial, "finish_reason": m.finish_reason,
                      "stats": m.stats.as_dict(), "meta": m.meta} for m in store.messages(conversation_id)],
    }


def _bad(where: str, what: str) -> InvalidRequest:
    return InvalidRequest(f"the conversation file is not valid: {where} {what}", param=where)


def _get(obj: dict, key: str, where: str, kinds: tuple, *, required: bool = True, default: Any = None):
    if key not in obj:
        if required:
            raise _bad(f"{where}.{key}" if where else key, "is missing")
        return default
    value = obj[key]
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(sorted({k.__name__ for k in kinds}))
        raise _bad(f"{where}.{key}" if where else key, f"must be {names}, got {type(value).__name__}")
    return value


def _text(value: str | None, where: str, limit: int) -> None:
    if value is not None and len(value) > limit:
        raise _bad(where, f"is {len(value)} characters; at most {limit}")


def parse(data: Any) -> tuple[dict, list[dict]]:
    """Check a parsed JSON document; returns (conversation fields, messages in parent-before-child order)."""
    if not isinstance(data, dict):
        raise _bad("the document", f"must be a JSON object, got {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise _bad("format", f"must be {FORMAT!r}, got {data.get('format')!r}")
    if data.get("version") != VERSION:
        raise _bad("version", f"must be {VERSION}, got {data.get('version')!r}")
    conv = _get(data, "conversation", "", (dict,))
    for key in ("title", "system"):
        _text(_get(conv, key, "conversation", (str, type(None)), required=False),
              f"conversation.{key}", TITLE_MAX if key == "title" else MAX_CONTENT)
    for key in ("defaults", "settings", "metadata"):
        _get(conv, key, "conversation", (dict,), required=False, default={})
    metadata = conv.get("metadata") or {}
    for k, v in metadata.items():
        if not isinstance(v, str):
            raise _bad(f"conversation.metadata.{k}", f"must be a string, got {type(v).__name__}")
    leaf = _get(conv, "leaf_id", "conversation", (str, type(None)), required=False)
    msgs = _get(data, "messages", "", (list,))
    if len(msgs) > MAX_MESSAGES:
        raise _bad("messages", f"holds {len(msgs)} messages; at most {MAX_MESSAGES}")
    seen: dict[str, dict] = {}
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise _bad(where, f"must be an object, got {type(m).__name__}")
        mid = _get(m, "id", where, (str,))
        if not mid or len(mid) > 100:
            raise _bad(f"{where}.id", "must be 1 to 100 characters")
        if mid in seen:
            raise _bad(f"{where}.id", f"repeats the id {mid!r}")
        _get(m, "parent_id", where, (str, type(None)), required=False)
        role = _get(m, "role", where, (str,))
        if role not in ROLES:
            raise _bad(f"{where}.role", f"must be one of {', '.join(ROLES)}, got {role!r}")
        _text(_get(m, "content", where, (str,)), f"{where}.content", MAX_CONTENT)
        created = _get(m, "created", where, (int, float), required=False)
        if created is not None and not (math.isfinite(created) and 0 <= created < CREATED_MAX):
            raise _bad(f"{where}.created", f"must be a time in seconds since 1970, got {created}")
        _get(m, "partial", where, (bool,), required=False)
        reason = _get(m, "finish_reason", where, (str, type(None)), required=False)
        if reason is not None and reason not in FINISH_REASONS:
            raise _bad(f"{where}.finish_reason", f"must be one of {', '.join(FINISH_REASONS)} or null")
        stats = _get(m, "stats", where, (dict,), required=False, default={})
        for k, v in stats.items():
            if k not in STAT_FIELDS:
                raise _bad(f"{where}.stats.{k}", f"is not a known number; known: {', '.join(STAT_FIELDS)}")
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise _bad(f"{where}.stats.{k}", f"must be a number or null, got {type(v).__name__}")
        _get(m, "meta", where, (dict,), required=False)
        seen[mid] = m
    for i, m in enumerate(msgs):
        parent = m.get("parent_id")
        if parent is not None and parent not in seen:
            raise _bad(f"messages[{i}].parent_id", f"names {parent!r}, which is not a message of this file")
    if leaf is not None and leaf not in seen:
        raise _bad("conversation.leaf_id", f"names {leaf!r}, which is not a message of this file")
    return conv, _ordered(msgs)


def _ordered(msgs: list[dict]) -> list[dict]:
    """Parents before children (a cycle is an error naming a message in it)."""
    by_id = {m["id"]: m for m in msgs}
    out: list[dict] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done
    for m in msgs:
        stack = []
        cur: dict | None = m
        while cur is not None and state.get(cur["id"]) != 2:
            if state.get(cur["id"]) == 1:
                raise _bad("messages", f"the parents of {cur['id']!r} form a cycle")
            state[cur["id"]] = 1
            stack.append(cur)
            parent = cur.get("parent_id")
            cur = by_id[parent] if parent is not None else None
        for x in reversed(stack):
            state[x["id"]] = 2
            out.append(x)
    return out


def import_conversation(store: Store, data: Any, *, owner: str | None = None) -> Conversation:
    """Write a checked conversation file as a new conversation (one transaction). `data`: the parsed JSON
    document, or what parse() made of it."""
    conv, msgs = data if isinstance(data, tuple) else parse(data)
    ids = {m["id"]: new_id("msg") for m in msgs}
    rows = [NewMessage(role=m["role"], content=m["content"], id=ids[m["id"]],
                       parent_id=ids[m["parent_id"]] if m.get("parent_id") else None,
                       meta={k: v for k, v in (m.get("meta") or {}).items() if k not in PROCESS_KEYS},
                       partial=bool(m.get("partial", False)), finish_reason=m.get("finish_reason"),
                       stats=MessageStats(**(m.get("stats") or {})), created=m.get("created"))
            for m in msgs]
    leaf = conv.get("leaf_id")
    return store.create_conversation(
        title=conv.get("title"), system=conv.get("system"), defaults=conv.get("defaults") or {},
        settings=conv.get("settings") or {}, metadata=conv.get("metadata") or {}, owner=owner, messages=rows,
        leaf_id=ids[leaf] if leaf else None)
