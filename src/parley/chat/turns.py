"""Turns: a turn's whole life, written once, for every edge (terminal, Python, HTTP, web page).

    stream = turns.send(conversation_id, "Hello")        # prepare -> commit the user message -> generate
    for chunk in stream: ...                             # (or `async for`, with loop=...)
    stream.result                                        # recorded in the store before it is handed over
    stream.meta                                          # chat.meta.ReplyMeta: ids, window, note

prepare: load the branch the message continues (the conversation's leaf, or any `parent_id`), rebuild the exact
tokens its KV holds (chat/history.py), and plan the prompt (`Plan`): pinned blocks + the window of turns + the
new message (chat/window.py), within the door's prompt limit (chat/limits.py). commit: the user message and an
empty, partial reply row in one transaction. generate: the scheduler streams the reply; every second or so the
text so far is saved, so a crash keeps it. record: on the chat worker thread (never the scheduler's, never an
event loop): the reply row gets its text, how it ended, its numbers and its token ids, then the Result reaches
the consumer (its text as stored and shown: without the space a transcript line starts with), then the next
turn's fixed header is read into the cache while the user types (read-ahead).

Branches: retry adds a sibling reply under the same user message, edit a sibling user message under the same
parent, `parent_id` continues from any message; the conversation's leaf follows. One reply at a time per
conversation (409 otherwise). A reply that fails is removed (its user message stays, so it can be retried); one
cut short (cancelled, shutdown, a dead process) stays, marked partial.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from parley.chat import history as H
from parley.chat.conversations import Conversations
from parley.chat.frames import Frame
from parley.chat.limits import Limits
from parley.chat.liveness import CLAIM_LEASE_S, WRITER, Every, holder_tag, mark_cut_short
from parley.chat.meta import ReplyMeta
from parley.chat.model import Served
from parley.chat.prompt import Built, Prefix
from parley.chat.tools import FORCED_PREFIX, ToolPlan, call_ids, read_reply
from parley.chat.tools import render as render_tools
from parley.chat.window import PromptTooLong, fit, message_sizes, reply_room
from parley.errors import Conflict, InvalidRequest, ShuttingDown, shorten
from parley.sampling import SamplingParams
from parley.scheduler.request import Chunk, Result
from parley.scheduler.stream import Stream
from parley.store import Message, MessageStats, NewMessage
from parley.store.rows import Conversation

log = logging.getLogger("parley.chat")

SAVE_EVERY_S = 1.0          # how often a reply in progress is written to the store


@dataclass(frozen=True, slots=True)
class Plan:
    """A turn's prompt, planned: what to send and how it relates to what the branch's KV already holds."""

    built: Built                       # the prompt's text and token ids
    window_start: int                  # earlier history messages the prompt leaves out
    previous: Prefix | None            # the tokens the branch's KV holds, when this prompt continues them
    superseded: tuple[int, ...] = ()   # the previous window's tokens, when this prompt's window moved past them
    messages: tuple[dict, ...] = ()    # what the prompt rendered (pinned blocks, the window, the new message)

    def delta(self) -> tuple[list[int], str, str]:
        """The tokens this turn adds after the previous reply ("prev"), or the whole prompt ("full")."""
        prev, built = self.previous, self.built
        if prev is not None and built.reused == len(prev.tokens) and built.text.startswith(prev.text):
            return built.tokens[len(prev.tokens):], built.text[len(prev.text):], "prev"
        return list(built.tokens), built.text, "full"


@dataclass
class Turn:
    """A prepared generation: the plan, and everything recording and reading ahead need afterwards."""

    conversation_id: str
    user: Message                      # the message being answered
    reply_id: str                      # the (partial) reply row
    plan: Plan
    params: SamplingParams
    messages: list[dict]               # what the prompt rendered (for the next turn's read-ahead)
    frame: Frame
    served: Served                     # the model it is generated on
    note: str = ""                     # what a user can act on about this prompt ("" when nothing)
    tools: ToolPlan | None = None      # the functions this turn offers (chat/tools.py)
    suffix: tuple[int, ...] = ()       # a forced call's opening markup, after the prompt (FORCED_PREFIX)

    @property
    def tokens(self) -> list[int]:
        return self.plan.built.tokens + list(self.suffix)


@dataclass
class _Live:
    """Book-keeping of one reply being generated (scheduler thread appends, worker thread saves)."""

    turn: Turn
    stream: Stream
    text: list[str] = field(default_factory=list)
    saved_at: float = field(default_factory=time.monotonic)


def cache_note(turn: Turn, r: Result) -> str:
    reusable = turn.plan.built.reused
    if reusable and r.cached_tokens < reusable - 1:
        return (f"{reusable - r.cached_tokens} tokens of this conversation's memory were evicted and read again "
                "(raise --kv-size, --ram-cache-mb or --disk-cache-mb to keep more)")
    return ""


def _stats(r: Result) -> MessageStats:
    return MessageStats(prompt_tokens=r.prompt_tokens, cached_tokens=r.cached_tokens,
                        prefilled_tokens=r.prefilled_tokens, generated_tokens=r.generated_tokens,
                        ttft_s=round(r.ttft_s, 4), tokens_per_s=round(r.decode_tps, 2))


class Turns:
    def __init__(self, conversations: Conversations, *, skills=None):
        self.convs = conversations
        self.store = conversations.store
        self.skills = skills
        self._busy: dict[str, _Live | None] = {}
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="parley-chat")
        self._closed = False
        self.holder = holder_tag()   # whose claims and replies these are, in the store
        mark_cut_short(self.store)
        self._renewer = Every(CLAIM_LEASE_S / 3, self._renew, name="parley-claims")

    # ---- the turns ---------------------------------------------------------------------------------------
    def send(self, conversation_id: str, content: str, *, served: Served, limits: Limits,
             parent_id: str | None = None,
             params: dict | None = None, overflow: str | None = None, skill: str | None = None,
             skill_params: dict | None = None, speaker: str | None = None,
             loop: asyncio.AbstractEventLoop | None = None, at_root: bool = False,
             tools: ToolPlan | None = None, tool_call_id: str | None = None) -> Stream:
        """A new user message (under the leaf, or under `parent_id`, or with `at_root` as a new first message)
        and its reply. `skill` wraps the new message in a recipe (the history before it stays byte-identical);
        `speaker` picks who answers in a persona's group scene. `tools`: the functions the reply may call;
        `tool_call_id`: the message is the result of that call, which the reply it continues made."""
        if not isinstance(content, str) or (not content.strip() and tool_call_id is None):
            raise InvalidRequest("the message is empty", param="content")
        with self._claim(conversation_id):
            conv = self.store.get_conversation(conversation_id)
            parent = None if at_root else parent_id if parent_id is not None else conv.leaf_id
            if parent_id is not None:
                self.store.message_of(conversation_id, parent_id, "parent_id")
            branch = self.store.branch(parent)
            user_meta: dict[str, Any] = {}
            shown, extra = content, {}
            if tool_call_id is not None:
                _check_result(branch, tool_call_id, skill)
                user_meta[H.TOOL_RESULT] = tool_call_id
            elif skill is not None:
                recipe = self._skill(skill)
                shown = recipe.wrap(content, skill_params or {})
                extra = dict(recipe.sampling)
                user_meta.update({"skill": recipe.name, "skill_params": dict(skill_params or {})})
            elif skill_params:
                raise InvalidRequest("skill_params needs a skill", param="skill_params")
            frame = self.convs.frame(conv, branch, speaker, content, served)
            docs = self.convs.settings_of(conv).documents
            if docs and tool_call_id is None:  # long documents: the passages this message needs
                block, sources = served.documents.excerpts(docs, shown)
                if block:
                    shown = block
                    user_meta["sources"] = [x.as_dict() for x in sources]
            if tool_call_id is None:
                shown = frame.wrap(shown)
            if shown != content:
                user_meta[H.PROMPT_CONTENT] = shown
            new = ({"role": "tool", "content": content, "tool_call_id": tool_call_id} if tool_call_id is not None
                   else frame.named({"role": "user", "content": shown}))
            turn_params = self._params(conv, {**extra, **(params or {})}, frame, limits, served)
            plan = self._plan(conv, frame, branch, new, turn_params, overflow, limits, served, tools)
            suffix = _suffix(frame, tools)
            tokens, text, base = plan.delta()
            tokens, text = tokens + list(suffix), text + (FORCED_PREFIX if suffix else "")
            user_meta.update({H.WINDOW: plan.window_start, H.TOKENS_BASE: base})
            user, reply_row = self.store.add_messages(conversation_id, [
                NewMessage("user", content, parent_id=parent, meta=user_meta, tokens=tokens, tokens_text=text,
                           tokens_key=frame.key),
                NewMessage("assistant", "", partial=True, meta=self._reply_meta(plan, frame))])
            return self._start(self._turn(conv, frame, user, reply_row.id, plan, turn_params, served, tools,
                                          suffix), loop)

    def retry(self, conversation_id: str, *, served: Served, limits: Limits, message_id: str | None = None,
              params: dict | None = None, overflow: str | None = None, speaker: str | None = None,
              loop: asyncio.AbstractEventLoop | None = None, tools: ToolPlan | None = None) -> Stream:
        """A new reply, beside the old ones, to a user message: the one `message_id` names (or the user message
        an assistant `message_id` answers), else the one the leaf answers."""
        with self._claim(conversation_id):
            conv = self.store.get_conversation(conversation_id)
            target = message_id or conv.leaf_id
            if target is None:
                raise InvalidRequest("there is no user message to retry", param="message_id")
            msg = self.store.message_of(conversation_id, target, "message_id")
            if msg.role == "assistant":
                if msg.parent_id is None:
                    raise InvalidRequest("that reply answers no user message", param="message_id")
                if speaker is None:
                    speaker = msg.meta.get(H.SPEAKER)
                msg = self.store.get_message(msg.parent_id)
            if msg.role != "user":
                raise InvalidRequest(f"message {msg.id} is a {msg.role} message; retry takes a user message or "
                                     "a reply", param="message_id")
            branch = self.store.branch(msg.parent_id)
            frame = self.convs.frame(conv, branch, speaker, msg.content, served)
            new = H.prompt_message(msg)
            turn_params = self._params(conv, params, frame, limits, served)
            plan = self._plan(conv, frame, branch, new, turn_params, overflow, limits, served, tools)
            (reply_row,) = self.store.add_messages(conversation_id, [
                NewMessage("assistant", "", parent_id=msg.id, partial=True, meta=self._reply_meta(plan, frame))])
            return self._start(self._turn(conv, frame, msg, reply_row.id, plan, turn_params, served, tools,
                                          _suffix(frame, tools)), loop)

    def edit(self, conversation_id: str, message_id: str, content: str, **kw) -> Stream:
        """A user message said differently: a sibling under the same parent, and its reply."""
        msg = self.store.message_of(conversation_id, message_id, "message_id")
        if msg.role != "user":
            raise InvalidRequest(f"message {msg.id} is a {msg.role} message; only user messages are edited "
                                 "(retry makes a new reply)", param="message_id")
        # the first message said differently is a new first message: the conversation keeps its leaf until the
        # new branch is committed (readers never see it empty, and a refused edit leaves it as it was)
        return self.send(conversation_id, content, parent_id=msg.parent_id, at_root=msg.parent_id is None, **kw)

    def preview(self, conversation_id: str, content: str, *, served: Served, limits: Limits,
                params: dict | None = None) -> list[int]:
        """The prompt token ids send(content) would use now, without sending or storing anything (benchmarks
        give the very same ids to their baselines)."""
        conv = self.store.get_conversation(conversation_id)
        branch = self.store.branch(conv.leaf_id)
        frame = self.convs.frame(conv, branch, None, content, served)
        new = frame.named({"role": "user", "content": frame.wrap(content)})
        turn_params = self._params(conv, params, frame, limits, served)
        return list(self._plan(conv, frame, branch, new, turn_params, None, limits, served).built.tokens)

    def held_tokens(self, conversation_id: str, served: Served) -> list[int]:
        """The exact tokens the current branch's KV holds (chat/history.py), [] when they are not known."""
        conv = self.store.get_conversation(conversation_id)
        branch = self.store.branch(conv.leaf_id)
        frame = self.convs.frame_for(self.convs.settings_of(conv), conv.system, None, served)
        prefix = H.chain(branch, frame.key).prefix
        return list(prefix.tokens) if prefix is not None else []

    def generating(self, conversation_id: str) -> bool:
        with self._lock:
            return conversation_id in self._busy

    def cancel(self, conversation_id: str) -> None:
        """End the reply being generated in a conversation, if any (a deleted conversation's)."""
        with self._lock:
            live = self._busy.get(conversation_id)
        if live is not None:
            live.stream.cancel()

    def drain(self, timeout: float = 120.0) -> None:
        """Wait until every reply handed to the chat worker so far is recorded and read ahead: what a model's
        engine must outlive (recording tokenizes with it), so a model is freed only after this."""
        try:
            self._worker.submit(lambda: None).result(timeout)
        except RuntimeError:           # the worker has shut down: nothing is left to record
            pass

    def close(self) -> None:
        """After the scheduler has stopped (every reply got its Result): finish recording."""
        with self._lock:
            self._closed = True
        self._worker.shutdown(wait=True)
        self._renewer.stop()

    # ---- preparing ---------------------------------------------------------------------------------------
    class _Claim:
        def __init__(self, turns: Turns, cid: str):
            self.t, self.cid = turns, cid

        def __enter__(self):
            with self.t._lock:
                if self.t._closed:
                    raise ShuttingDown("parley is shutting down; no new replies")
                if self.cid in self.t._busy:
                    raise _busy_error(self.cid)
                self.t._busy[self.cid] = None
            try:    # then the store's claim, which front ends sharing the store (PostgreSQL) all respect
                if not self.t.store.claim(self.cid, self.t.holder, CLAIM_LEASE_S):
                    raise _busy_error(self.cid, elsewhere=True)
            except BaseException:
                with self.t._lock:
                    del self.t._busy[self.cid]
                raise
            return self

        def __exit__(self, *exc):
            with self.t._lock:  # no reply started (an error, or nothing to generate): free the conversation
                unstarted = self.cid in self.t._busy and self.t._busy[self.cid] is None
            if unstarted:
                self.t._release(self.cid)
            return False

    def _claim(self, conversation_id: str) -> _Claim:
        return Turns._Claim(self, conversation_id)

    def _release(self, conversation_id: str) -> None:
        """The store's claim first, then this process's: a next turn sent through here must find both free."""
        try:
            self.store.release(conversation_id, self.holder)
        except Exception:   # the store is unreachable: the claim lapses after CLAIM_LEASE_S
            log.exception("releasing conversation %s in the store failed", conversation_id)
        with self._lock:
            self._busy.pop(conversation_id, None)

    def _renew(self) -> None:
        """Every third of the lease while replies are written: extend this process's claims."""
        with self._lock:
            if not self._busy:
                return
        try:
            self.store.renew_claims(self.holder, CLAIM_LEASE_S)
        except Exception:
            log.exception("renewing conversation claims failed")

    def _skill(self, name: str):
        if self.skills is None:
            raise InvalidRequest(f"unknown skill {name!r}: no skills here", param="skill")
        return self.skills.get(name)

    def _params(self, conv: Conversation, overrides: dict | None, frame: Frame, limits: Limits,
                served: Served) -> SamplingParams:
        """The conversation's defaults, the turn's overrides over them, the frame's stop strings; a stored
        max_tokens over the door's limit (a conversation made elsewhere) is held to it."""
        base = self.convs.defaults(conv, served)
        params = (base.replace(**overrides) if overrides else base).with_stops(frame.stops)
        return params.replace(max_tokens=limits.max_tokens) if params.max_tokens > limits.max_tokens else params

    def _reply_meta(self, plan: Plan, frame: Frame) -> dict:
        meta = {"dropped": plan.window_start, WRITER: self.holder}
        if frame.speaker:
            meta[H.SPEAKER] = frame.speaker
        return meta

    def _plan(self, conv: Conversation, frame: Frame, branch: list[Message], new: dict, params: SamplingParams,
              overflow: str | None, limits: Limits, served: Served, tools: ToolPlan | None = None) -> Plan:
        """The prompt: pinned blocks + the window of turns + the new message, within the door's prompt limit
        and the room the reply needs (window.reply_room). Also the previous turn's tokens when the window moved
        on past them (their sequence can leave the context)."""
        model = served.model
        settings = self.convs.settings_of(conv)
        policy = settings.policy if overflow is None else dataclasses.replace(settings.policy, overflow=overflow)
        history = [frame.named(m) for m in H.prompt_messages(branch)]
        ch = H.chain(branch, frame.key)
        ctx = model.context_size
        budget = min(ctx - reply_room(ctx, params.max_tokens, policy.overflow), limits.prompt_tokens)

        def build(start: int, examples: bool) -> Built:
            prev = ch.prefix if start == ch.window_start else None
            messages = frame.pinned[1 if examples else 0] + history[start:] + [new]
            return frame.builder.build(render_tools(messages, tools), prev)   # (tools: their convention)

        try:
            fitted = fit(build, sizes=message_sizes(model.count, history), roles=[m["role"] for m in history],
                         budget=budget, policy=policy, has_examples=frame.pinned[1] != frame.pinned[0],
                         pinned_tokens=sum(message_sizes(model.count, frame.pinned[1])),
                         min_start=min(ch.window_start, len(history)))
        except PromptTooLong as e:
            if limits.prompt_setting and budget == limits.prompt_tokens:   # the door's limit, not the context's
                raise limits.too_long(e.tokens, param="content") from None
            raise
        moved = fitted.start > ch.window_start and ch.prefix is not None
        return Plan(fitted.built, fitted.start, ch.prefix if fitted.start == ch.window_start else None,
                    ch.prefix.tokens if moved else (),
                    tuple(frame.pinned[1] + history[fitted.start:] + [new]))

    def _turn(self, conv: Conversation, frame: Frame, user: Message, reply_id: str, plan: Plan,
              params: SamplingParams, served: Served, tools: ToolPlan | None = None,
              suffix: tuple[int, ...] = ()) -> Turn:
        notes = []
        if conv.model != served.name:      # the conversation keeps the model it is served with
            if conv.model and ":" not in conv.model and conv.message_count:   # (":": an older parley's label)
                notes.append(f"this conversation was last served with {conv.model}: its history was read again "
                             f"for {served.name}")
            self.store.update_conversation(conv.id, model=served.name)
        if plan.window_start:
            notes.append(f"{plan.window_start} earlier messages are outside the window (context "
                         f"{served.model.context_size} tokens)")
        if plan.built.note and plan.previous is not None:
            notes.append(plan.built.note)
        return Turn(conversation_id=conv.id, user=user, reply_id=reply_id, plan=plan, params=params,
                    messages=list(plan.messages), frame=frame, served=served, note="; ".join(notes), tools=tools,
                    suffix=suffix)

    # ---- generating and recording ------------------------------------------------------------------------
    def _start(self, turn: Turn, loop) -> Stream:
        sched = turn.served.model.scheduler
        holder: list = []
        meta = ReplyMeta(conversation_id=turn.conversation_id, message_id=turn.reply_id,
                         user_message_id=turn.user.id, prompt_tokens=len(turn.tokens),
                         dropped=turn.plan.window_start, note=turn.note, speaker=turn.frame.speaker,
                         model=turn.served.name)
        stream = Stream(lambda: sched.cancel(holder[0]) if holder else None, loop, meta)
        live = _Live(turn, stream)
        clean = turn.frame.clean

        def sink(event) -> None:  # the scheduler thread
            if isinstance(event, Result):
                self._worker.submit(self._finish, live, event)
                return
            if not live.text and event.text:  # the first text as the reply is stored and shown
                event = Chunk(clean(event.text), event.token_ids)
            live.text.append(event.text)
            stream.put(event)
            now = time.monotonic()
            if now - live.saved_at >= SAVE_EVERY_S:
                live.saved_at = now
                self._worker.submit(self._save_partial, turn.reply_id, "".join(live.text))

        with self._lock:  # before submitting: the reply may be recorded (and the conversation freed) at once
            self._busy[turn.conversation_id] = live
        try:
            req = sched.submit(turn.tokens, turn.params, sink, param="messages", session=turn.conversation_id)
        except BaseException:
            with self._lock:
                self._busy[turn.conversation_id] = None  # the claim frees it
            self.store.delete_message(turn.reply_id, leaf_id=turn.user.id)
            raise
        holder.append(req)
        stream.request = req
        return stream

    def _save_partial(self, reply_id: str, text: str) -> None:
        try:
            self.store.save_partial(reply_id, text)
        except Exception:
            log.exception("saving a reply in progress failed")

    def _finish(self, live: _Live, r: Result) -> None:
        """The chat worker thread: record the reply, then hand the Result over, then read ahead."""
        turn = live.turn
        note = turn.note or cache_note(turn, r)
        try:
            if r.finish_reason == "error":
                self.store.delete_message(turn.reply_id, leaf_id=turn.user.id)
            else:
                usable = r.finish_reason in ("stop", "length") and r.stop_string is None
                meta = {"dropped": turn.plan.window_start}
                if note:
                    meta["note"] = note
                if turn.frame.speaker:
                    meta[H.SPEAKER] = turn.frame.speaker
                content = turn.frame.clean(r.text)
                if turn.tools is not None:    # the calls apart from the content, with the ids the edges showed
                    content, calls = read_reply(r.text, turn.tools, call_ids(turn.reply_id))
                    if calls:
                        meta[H.TOOL_CALLS] = [{"id": c.id, "type": "function",
                                               "function": {"name": c.name, "arguments": c.arguments}}
                                              for c in calls]
                self.store.finish_message(
                    turn.reply_id, content=content, finish_reason=r.finish_reason,
                    partial=r.finish_reason not in ("stop", "length"), stats=_stats(r),
                    tokens=list(r.token_ids) if usable else None, tokens_text=r.text if usable else None,
                    tokens_key=turn.frame.key if usable else None, meta=meta)
        except Exception:
            log.exception("recording a reply failed")
        finally:
            self._release(turn.conversation_id)
            live.stream.meta.note = note
            shown = r.text if turn.tools is not None else turn.frame.clean(r.text)    # (tools: the edge reads
            live.stream.put(dataclasses.replace(r, text=shown))   # the calls out of the text, as it streamed)
        if turn.plan.superseded:  # the window moved: the previous window's sequence will not be continued
            turn.served.model.scheduler.retire(turn.plan.superseded)
        if r.finish_reason in ("stop", "length"):
            try:
                self._read_ahead(turn, r)
            except Exception:
                log.exception("reading the next turn's header ahead failed")

    def _read_ahead(self, turn: Turn, r: Result) -> None:
        """Prefill the tokens the next prompt starts with whatever the user writes (the reply's closing and the
        next user header) while the user types."""
        if r.stop_string is not None or turn.tools is not None or turn.suffix:
            return     # (after a tool turn comes a tool's result, not a user header)
        frame = turn.frame
        prev = Prefix(turn.plan.built.text + r.text, tuple(turn.tokens) + tuple(r.token_ids))
        done = turn.messages + [frame.named({"role": "assistant", "content": frame.clean(r.text)})]
        probes = [frame.builder.build(done + [frame.named({"role": "user", "content": c})], prev).tokens
                  for c in ("a", "b")]
        n = len(prev.tokens)
        while n < min(len(probes[0]), len(probes[1])) and probes[0][n] == probes[1][n]:
            n += 1
        if n > len(prev.tokens):
            turn.served.model.scheduler.prefetch(probes[0][:n])


def _busy_error(cid: str, *, elsewhere: bool = False) -> Conflict:
    where = " (through another parley sharing this store)" if elsewhere else ""
    return Conflict(f"conversation {cid} is still generating its previous reply{where}; wait for it to finish "
                    "(or stop it) and send again", param="conversation_id", code="conversation_busy")


def _suffix(frame: Frame, tools: ToolPlan | None) -> tuple[int, ...]:
    """A forced call's reply starts inside its markup: those tokens end the prompt."""
    return tuple(frame.builder.tokenize_text(FORCED_PREFIX)) if tools is not None and tools.forced else ()


def _check_result(branch: list[Message], call_id: str, skill: str | None) -> None:
    """A tool's result answers a call a reply on this branch made, and that no result answered yet (parallel
    calls: one result a turn, each answered in turn)."""
    if skill is not None:
        raise InvalidRequest("a tool's result takes no skill", param="skill")
    made = [c.get("id") for m in branch for c in (m.meta.get(H.TOOL_CALLS) or [])]
    open_ = [c for c in made if c not in {m.meta.get(H.TOOL_RESULT) for m in branch}]
    if call_id not in open_:
        raise InvalidRequest(f"tool_call_id {shorten(call_id)!r} names no call waiting for its result on this "
                             f"branch (waiting: {', '.join(open_) or 'none'})", param="tool_call_id")
