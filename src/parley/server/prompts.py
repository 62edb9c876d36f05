"""Prompts for the stateless APIs: messages or text -> token ids that fit the context, or a 400 that says by how
much they do not. Never silent truncation: with `truncate` the oldest messages go (the leading system messages
stay), and the caller reports how many in the response."""

from __future__ import annotations

from dataclasses import dataclass

from parley.errors import LimitExceeded
from parley.server.settings import ServerSettings
from parley.text.template import validate_messages


@dataclass
class Prompt:
    tokens: list[int]
    dropped: int = 0        # messages left out to fit the context
    note: str = ""          # said in the response when something was dropped


def chat_messages(messages) -> list[dict]:
    """Request messages -> {"role", "content"} dicts: "developer" is the system role, text parts are joined."""
    out = []
    for m in messages:
        content = m.content if isinstance(m.content, str) else "".join(part.text for part in m.content)
        out.append({"role": "system" if m.role == "developer" else m.role, "content": content})
    return validate_messages(out)


def too_long(n: int, limit: int, context_size: int, *, param: str, hint: str = "") -> LimitExceeded:
    if limit >= context_size - 1:
        where = f"the context holds {context_size} (with at least 1 left for the reply)"
    else:
        where = f"this server takes at most {limit} prompt tokens (max_prompt_tokens, `parley serve --max-prompt-tokens`)"
    return LimitExceeded(f"the prompt is {n} tokens and {where}: {n - limit} tokens too many{hint}",
                         param=param, code="context_length_exceeded")


def fit_chat(parley, messages: list[dict], *, max_tokens: int, settings: ServerSettings, truncate: bool) -> Prompt:
    ctx = parley.context_size
    limit = settings.prompt_limit(ctx)
    built = parley.builder.build(messages)
    n = len(built.tokens)
    if not truncate:
        if n > limit:
            raise too_long(n, limit, ctx, param="messages",
                           hint=' (send "truncate": true to drop the oldest messages)')
        return Prompt(built.tokens)
    # keep room for a useful reply, as parley's Conversation does
    budget = min(limit, ctx - min(max_tokens, max(1, ctx // 4)))
    if n <= budget:
        return Prompt(built.tokens)
    pinned = 0
    while pinned < len(messages) - 1 and messages[pinned]["role"] == "system":
        pinned += 1
    head, rest = messages[:pinned], messages[pinned:]
    cuts = drop_points(rest)
    # the smallest cut whose prompt fits: fewer messages never render to more tokens, so bisect (a few builds,
    # not one per message: thousands of messages would take minutes)
    lo, hi, fitted = 0, len(cuts) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        built = parley.builder.build(head + rest[cuts[mid]:])
        n = len(built.tokens)
        if n <= budget:
            fitted, hi = (cuts[mid], built), mid - 1
        else:
            lo = mid + 1
    if fitted is None:  # n: the last message alone (the last cut tried) or the whole prompt (no cut possible)
        raise LimitExceeded(
            f"the system prompt and the last message alone are {n} tokens; with room for the reply the "
            f"prompt may be {budget} tokens: {n - budget} too many even after dropping every older message",
            param="messages", code="context_length_exceeded")
    dropped, built = fitted
    return Prompt(built.tokens, dropped, f"{dropped} oldest messages were dropped to fit the context")


def drop_points(rest: list[dict]) -> list[int]:
    """How many of the oldest messages may be dropped, ascending: the kept window starts at a user message, or
    is the last message alone."""
    cuts = [d for d in range(1, len(rest) - 1) if rest[d]["role"] == "user"]
    return [*cuts, len(rest) - 1] if len(rest) > 1 else []


def fit_tokens(parley, tokens: list[int], *, settings: ServerSettings, param: str) -> Prompt:
    limit = settings.prompt_limit(parley.context_size)
    if len(tokens) > limit:
        raise too_long(len(tokens), limit, parley.context_size, param=param)
    return Prompt(tokens)
