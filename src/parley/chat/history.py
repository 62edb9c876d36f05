"""A stored branch -> the chat messages to render, and the exact token ids its KV cache holds.

Every user message row keeps the token ids its turn added to the prompt (`tokens`, with the text they spell in
`tokens_text`): either the tail after the previous reply (`meta["tokens_base"] == "prev"`) or the whole prompt
("full", when the prompt could not simply be appended to: the first turn, a moved window, a changed system
prompt). Every assistant row keeps the ids it added (its generated tokens, or nothing when its text is not exactly
its tokens' text: a stop string, a cut-short reply). Concatenating them along a branch gives, byte for byte, the
tokens that were prefilled and generated, so a conversation resumed after a restart asks the prefix cache for
exactly the tokens its saved KV is keyed by, instead of a re-tokenization that may split the old replies
differently. Tokens only count when their `tokens_key` names the model and template in use.
"""

from __future__ import annotations

from dataclasses import dataclass

from parley.chat.prompt import Prefix
from parley.store.rows import Message

TOKENS_BASE = "tokens_base"   # meta key on user rows: "prev" | "full"
WINDOW = "window_start"       # meta key on user rows: how many earlier history messages the prompt left out
PROMPT_CONTENT = "prompt_content"   # meta key: the text the prompt used for a message, when not its content
SPEAKER = "speaker"                  # meta key: who speaks (transcript personas)
TOOL_CALLS = "tool_calls"            # meta key on assistant rows: the calls the reply made (OpenAI's shape)
TOOL_RESULT = "tool_call_id"         # meta key on user rows: this row is the result of that call (role "tool")


def prompt_message(m: Message) -> dict:
    """The message as the prompt renders it (a skill's wrapped text, the speaker's name, a reply's tool calls,
    a tool's result: chat/tools.py writes those two in its convention)."""
    if TOOL_RESULT in m.meta:
        return {"role": "tool", "content": m.content, "tool_call_id": m.meta[TOOL_RESULT]}
    out = {"role": m.role, "content": m.meta.get(PROMPT_CONTENT, m.content)}
    if SPEAKER in m.meta:
        out["name"] = m.meta[SPEAKER]
    if m.meta.get(TOOL_CALLS):
        out["tool_calls"] = m.meta[TOOL_CALLS]
    return out


def prompt_messages(branch: list[Message]) -> list[dict]:
    return [prompt_message(m) for m in branch if m.role in ("user", "assistant")]


@dataclass(frozen=True, slots=True)
class Chain:
    """The exact tokens a branch's KV holds up to some message, and the window start of the turn they end."""

    prefix: Prefix | None       # None: the tokens are not known for the model and template in use
    window_start: int           # the window start of the last user turn in the branch (0 when none)


def chain(branch: list[Message], key: str) -> Chain:
    """The prefix held after the last message of `branch` (a user message: its prompt; an assistant one: its
    prompt and reply)."""
    tokens: list[int] = []
    text: list[str] = []
    known = False
    window = 0
    for m in branch:
        if m.role == "user":
            window = int(m.meta.get(WINDOW, window))
            base = m.meta.get(TOKENS_BASE)
            if m.tokens is None or m.tokens_key != key or base not in ("prev", "full"):
                known = False
                continue
            if base == "full":
                tokens, text, known = list(m.tokens), [m.tokens_text or ""], True
            elif known:
                tokens += m.tokens
                text.append(m.tokens_text or "")
        elif m.role == "assistant" and known:
            if m.tokens is not None and m.tokens_key == key:
                tokens += m.tokens
                text.append(m.tokens_text or "")
            elif m.tokens is not None:  # another model's tokens: nothing after this is known
                known = False
    if not known or not tokens:
        return Chain(None, window)
    return Chain(Prefix("".join(text), tuple(tokens)), window)
