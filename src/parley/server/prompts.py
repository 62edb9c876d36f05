"""Prompts for the stateless APIs: request messages -> the {"role", "content"} dicts the facade windows
(Parley.chat_prompt: a prompt that does not fit is a 400 saying by how much, never silent truncation; with
`truncate` the oldest messages go, the leading system messages stay, and the response says how many)."""

from __future__ import annotations

from parley.api import ToolPlan, read_plan, read_tools, validate_messages
from parley.errors import InvalidRequest
from parley.server.errors import NotSupported

TRUNCATE_HINT = ' (send "truncate": true to drop the oldest messages)'


def chat_messages(messages) -> list[dict]:
    """Request messages -> {"role", "content"} dicts: "developer" is the system role, text parts are joined; an
    assistant's tool_calls and a tool message's tool_call_id ride along (Parley.chat_prompt writes them in the
    tool convention, chat/tools.py). Only an assistant message with tool calls may leave content out."""
    out = []
    for i, m in enumerate(messages):
        if m.function_call is not None or m.audio is not None:
            name = "function_call" if m.function_call is not None else "audio"
            raise NotSupported(f"messages[{i}].{name} is not supported: send tool_calls", param=f"messages[{i}].{name}")
        if m.content is None and not (m.role == "assistant" and m.tool_calls):
            raise InvalidRequest(f"messages.{i}.content is required (only an assistant message with tool_calls "
                                 "may leave it out)", param=f"messages.{i}.content")
        if m.tool_calls and m.role != "assistant":
            raise InvalidRequest(f"messages[{i}].tool_calls: only an assistant message makes tool calls",
                                 param=f"messages[{i}].tool_calls")
        content = m.content if isinstance(m.content, str) or m.content is None else "".join(
            part.text for part in m.content)
        d = {"role": "system" if m.role == "developer" else m.role, "content": content or ""}
        if m.tool_calls:
            d["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.function.name,
                                                                         "arguments": c.function.arguments}}
                               for c in m.tool_calls]
        if m.role == "tool":
            d["tool_call_id"] = m.tool_call_id
        out.append(d)
    if not any(d["role"] == "tool" or "tool_calls" in d for d in out):
        validate_messages(out)      # early, as before: a plain chat's errors before any model work
    return out


def tool_plan(body) -> ToolPlan | None:
    """A request's tools and tool_choice (chat/tools.py), or None when it offers none and forces nothing."""
    if body.tools is None and body.tool_choice in (None, "none", "auto"):
        return None
    return read_plan(read_tools(body.tools), body.tool_choice, body.parallel_tool_calls)
