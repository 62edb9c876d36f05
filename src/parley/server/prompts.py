"""Prompts for the stateless APIs: messages or text -> token ids that fit the context, or a 400 that says by how
much they do not. Never silent truncation: with `truncate` the oldest messages go (the leading system messages
stay), and the caller reports how many in the response."""

from __future__ import annotations

from parley.api import Prompt, PromptTooLong, validate_messages
from parley.errors import LimitExceeded
from parley.server.settings import ServerSettings


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
    """The chat prompt, windowed by the facade (chat/window.py), with the server's limit named in errors."""
    ctx = parley.context_size
    limit = settings.prompt_limit(ctx)
    try:
        return parley.chat_prompt(messages, max_tokens=max_tokens, truncate=truncate, prompt_limit=limit)
    except PromptTooLong as e:
        if truncate:
            raise
        raise too_long(e.tokens, limit, ctx, param="messages",
                       hint=' (send "truncate": true to drop the oldest messages)') from None


def fit_tokens(parley, tokens: list[int], *, settings: ServerSettings, param: str) -> Prompt:
    limit = settings.prompt_limit(parley.context_size)
    if len(tokens) > limit:
        raise too_long(len(tokens), limit, parley.context_size, param=param)
    return Prompt(tokens)
