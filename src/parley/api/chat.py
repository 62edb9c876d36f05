"""Chat: one stored conversation, talked to from Python or the terminal.

    chat = parley.load().chat(system="You are terse.", temperature=0)
    for text in chat.send("Hello"):          # the reply as it is generated
        print(text, end="")
    chat.last.result.stats                   # prompt/cached tokens, time to first token, tokens/s
    chat.retry(); chat.back(); chat.branches(); chat.switch(message_id)

Every message is in the store as it happens; a Chat only remembers which conversation it is and the last reply.
It is a thin handle over the conversations service (api/conversations.py), so the terminal does exactly what
the HTTP API and the web page do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from parley.sampling import SamplingParams
from parley.scheduler.request import Result
from parley.scheduler.stream import Stream


@dataclass
class LastReply:
    """What Chat.last holds once a reply has ended."""

    text: str
    result: Result
    dropped: int = 0        # earlier messages outside the window
    note: str = ""          # what a user can act on about this reply ("" when nothing)
    message_id: str = ""


class Chat:
    def __init__(self, parley, conversation_id: str):
        self.parley = parley
        self.id = conversation_id
        self.last: LastReply | None = None
        self._reply: Stream | None = None

    @property
    def _convs(self):
        return self.parley.conversations

    @property
    def conversation(self):
        """The conversation as stored now (api.views.ConversationView, without its messages)."""
        return self._convs.get(self.id, messages=False)

    @property
    def messages(self) -> list[dict]:
        """The current branch as {"role", "content"} dicts (the system prompt first)."""
        view = self._convs.get(self.id)
        out = [{"role": "system", "content": view.system}] if view.system else []
        return out + [{"role": m.role, "content": m.content} for m in view.messages]

    @property
    def params(self) -> SamplingParams:
        """The sampling a message uses unless told otherwise: the conversation's defaults, with the chat format's
        end-of-turn strings."""
        return self.conversation.defaults.with_stops(self.parley.chat_stops)

    def send(self, text: str, *, skill: str | None = None, skill_params: dict | None = None,
             speaker: str | None = None, **sampling) -> Iterator[str]:
        """Your message, and the reply as it is generated. `skill` wraps the message in a recipe (translate,
        summarize, ...); `speaker` picks who answers in a persona's group scene."""
        return self._run(lambda: self._convs.send(self.id, text, params=sampling or None, skill=skill,
                                                  skill_params=skill_params, speaker=speaker))

    def retry(self, *, speaker: str | None = None, **sampling) -> Iterator[str]:
        """A new reply to the last user message, kept beside the old one (a branch); its prompt's KV is reused."""
        return self._run(lambda: self._convs.retry(self.id, params=sampling or None, speaker=speaker))

    def ask(self, text: str, **sampling) -> str:
        """send() and return the whole reply."""
        return "".join(self.send(text, **sampling))

    def stop(self) -> None:
        """Stop the reply being generated (from any thread, or a signal handler); what was said is kept."""
        reply = self._reply
        if reply is not None:
            reply.cancel()

    def clear(self) -> Chat:
        """Start over: a new conversation with this one's system prompt and defaults (this one stays stored)."""
        conv = self.conversation
        new = self._convs.create(system=conv.system, defaults=conv.defaults, overflow=conv.overflow,
                                 max_messages=conv.max_messages)
        self.id, self.last = new.id, None
        return self

    def prompt_for(self, text: str, **sampling) -> list[int]:
        """The prompt token ids send(text) would use now (nothing is sent or stored)."""
        return self._convs.preview(self.id, text, params=sampling or None)

    def held_tokens(self) -> list[int]:
        """The exact token ids the current branch's KV holds (its last prompt and reply); [] when unknown."""
        return self._convs.held_tokens(self.id)

    def back(self, n: int = 2) -> int:
        """Go `n` messages back on the current branch: the next message continues from there (a new branch).
        Returns how many messages the branch keeps."""
        return self._convs.back(self.id, n)

    def branches(self) -> list[tuple[str, str, bool]]:
        """Every branch as (its last message id, a one-line preview, whether it is the current one)."""
        leaf = self.conversation.leaf_id
        out = []
        for m in self._convs.branches(self.id):
            text = " ".join(m.content.split())
            out.append((m.id, f"{m.role}: {text[:70]}{'...' if len(text) > 70 else ''}", m.id == leaf))
        return out

    def switch(self, message_id: str) -> None:
        """Make the branch ending at `message_id` the current one."""
        self._convs.update(self.id, leaf_id=message_id)

    def set_system(self, text: str | None) -> None:
        self._convs.update(self.id, system=text or None)

    def set_title(self, title: str) -> None:
        self._convs.update(self.id, title=title)

    def _run(self, start: Callable[[], Stream]) -> Iterator[str]:
        reply = start()  # raises here (bad input, a full context) before anything is yielded
        return self._consume(reply)

    def _consume(self, reply: Stream) -> Iterator[str]:
        self._reply = reply
        try:
            yield from reply.text()
        finally:
            if reply.result is None:  # stopped early (Ctrl-C, break): keep what was said, as it was said
                reply.cancel()
                reply.wait()
            self._reply = None
            r, meta = reply.result, reply.meta
            self.last = LastReply(r.text, r, meta.dropped, meta.note, meta.message_id)
