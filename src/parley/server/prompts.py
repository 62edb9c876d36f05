"""Prompts for the stateless APIs: request messages -> the {"role", "content"} dicts the facade windows
(Parley.chat_prompt: a prompt that does not fit is a 400 saying by how much, never silent truncation; with
`truncate` the oldest messages go, the leading system messages stay, and the response says how many)."""

from __future__ import annotations

from parley.api import validate_messages

TRUNCATE_HINT = ' (send "truncate": true to drop the oldest messages)'


def chat_messages(messages) -> list[dict]:
    """Request messages -> {"role", "content"} dicts: "developer" is the system role, text parts are joined."""
    out = []
    for m in messages:
        content = m.content if isinstance(m.content, str) else "".join(part.text for part in m.content)
        out.append({"role": "system" if m.role == "developer" else m.role, "content": content})
    return validate_messages(out)
