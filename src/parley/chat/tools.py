"""Tool calls: the functions a request offers go into the prompt, and the calls the model makes come out.

One documented convention, carried by every chat template (parley renders it as message text, so a template
with no tool markup of its own carries it as well as one with): the markup of the Hermes / Qwen family, which
models trained on tool use know.

    system:    ...the request's system prompt...
               # Tools
               You may call these functions. Each is given as its JSON schema:
               <tools>
               {"type": "function", "function": {"name": "get_weather", "description": ..., "parameters": {...}}}
               </tools>
               To call one, answer with a line <tool_call>{"name": NAME, "arguments": {...}}</tool_call> for
               each call, and nothing else.
    assistant: <tool_call>
               {"name": "get_weather", "arguments": {"city": "Oslo"}}
               </tool_call>
    user:      <tool_response>
               {"temperature": 3}
               </tool_response>          (a `tool` message: a user turn, which every template takes)

`tool_choice`: "none" offers no tools (they are not in the prompt); "auto" lets the model answer or call
(its calls are parsed out of the text; text that is not a well-formed call stays content); "required" or a
named function forces a call: the reply starts inside `<tool_call>` (those tokens are part of the prompt) and
is constrained to the call's JSON (the name, and the arguments' JSON schema), so it always parses. A forced
turn makes one call. A call is rendered back into the history exactly as it is written here, so a client that
resends the conversation with the assistant's tool_calls and the tool results keeps its KV cache hitting.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from parley.errors import InvalidRequest
from parley.sampling import Grammar

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
RESULT_OPEN, RESULT_CLOSE = "<tool_response>", "</tool_response>"
MAX_TOOLS = 128
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    parameters: str                    # its JSON schema, as JSON text (frozen and hashable)

    def schema(self) -> dict:
        return json.loads(self.parameters)


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str                     # a JSON object, as text (OpenAI's shape)


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """What a request's tools mean for its prompt and its reply."""

    tools: tuple[Tool, ...]
    mode: str                          # "none" | "auto" | "required" | "named"
    name: str | None = None            # the function a named choice forces
    parallel: bool = True

    @property
    def forced(self) -> bool:
        return self.mode in ("required", "named")

    @property
    def offered(self) -> tuple[Tool, ...]:
        return () if self.mode == "none" else self.tools

    def grammar(self) -> Grammar | None:
        """What a forced reply is constrained to (call_schema), or None when the model may answer freely."""
        schema = call_schema(self)
        return None if schema is None else Grammar("json_schema", json.dumps(schema, ensure_ascii=False))


def new_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


def read_tools(raw: Any, param: str = "tools") -> tuple[Tool, ...]:
    """OpenAI's `tools` ([{"type": "function", "function": {name, description, parameters}}]) -> Tools; an
    InvalidRequest naming the first bad field."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidRequest(f"{param} must be a list of tools", param=param)
    if len(raw) > MAX_TOOLS:
        raise InvalidRequest(f"{param} holds {len(raw)} tools; at most {MAX_TOOLS}", param=param)
    out, seen = [], set()
    for i, t in enumerate(raw):
        where = f"{param}[{i}]"
        if not isinstance(t, dict) or t.get("type", "function") != "function":
            raise InvalidRequest(f"{where} must be {{\"type\": \"function\", \"function\": {{...}}}}", param=where)
        f = t.get("function")
        if not isinstance(f, dict):
            raise InvalidRequest(f"{where}.function must be an object with a name", param=f"{where}.function")
        name = f.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidRequest(f"{where}.function.name must be 1-64 letters, digits, '_', '.' or '-', got "
                                 f"{name!r}", param=f"{where}.function.name")
        if name in seen:
            raise InvalidRequest(f"{where}.function.name {name!r} is offered twice", param=f"{where}.function.name")
        seen.add(name)
        params = f.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict):
            raise InvalidRequest(f"{where}.function.parameters must be a JSON schema (an object)",
                                 param=f"{where}.function.parameters")
        desc = f.get("description", "")
        if not isinstance(desc, str):
            raise InvalidRequest(f"{where}.function.description must be a string",
                                 param=f"{where}.function.description")
        out.append(Tool(name, desc, json.dumps(params, ensure_ascii=False)))   # the client's key order: its arguments' order
    return tuple(out)


def read_plan(tools: tuple[Tool, ...], choice: Any, parallel: bool | None = None,
              param: str = "tool_choice") -> ToolPlan:
    """`tool_choice` ("none" | "auto" | "required" | {"type": "function", "function": {"name": ...}}) over
    the tools; a name that is not offered is a 400 listing the ones that are."""
    par = True if parallel is None else bool(parallel)
    if choice is None:
        return ToolPlan(tools, "auto" if tools else "none", parallel=par)
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise InvalidRequest(f"{param} must be none, auto, required or a function, got {choice!r}", param=param)
        if choice == "required" and not tools:
            raise InvalidRequest(f"{param} is required but no tools are offered", param=param)
        return ToolPlan(tools, choice, parallel=par)
    if isinstance(choice, dict):
        f = choice.get("function") if choice.get("type", "function") == "function" else None
        name = f.get("name") if isinstance(f, dict) else None
        if not isinstance(name, str):
            raise InvalidRequest(f"{param} must name a function: {{\"type\": \"function\", \"function\": "
                                 "{\"name\": ...}}", param=param)
        if name not in {t.name for t in tools}:
            known = ", ".join(t.name for t in tools) or "none"
            raise InvalidRequest(f"{param} names the function {name!r}, which is not offered; tools: {known}",
                                 param=f"{param}.function.name")
        return ToolPlan(tools, "named", name=name, parallel=par)
    raise InvalidRequest(f"{param} must be a string or an object", param=param)


def tools_block(tools: tuple[Tool, ...]) -> str:
    lines = ["# Tools", "You may call these functions. Each is given as its JSON schema:", "<tools>"]
    for t in tools:
        fn = {"name": t.name, "description": t.description, "parameters": t.schema()}
        lines.append(json.dumps({"type": "function", "function": fn}, ensure_ascii=False))
    lines += ["</tools>", f"To call one, answer with a line {CALL_OPEN}{{\"name\": NAME, \"arguments\": {{...}}}}"
              f"{CALL_CLOSE} for each call, and nothing else."]
    return "\n".join(lines)


def call_json(name: str, arguments: Any) -> str:
    """A call's JSON as parley writes it (and constrains a forced call to): one line, ", " and ": "."""
    args = json.loads(arguments) if isinstance(arguments, str) else arguments
    return json.dumps({"name": name, "arguments": args}, ensure_ascii=False)


def call_text(name: str, arguments: Any) -> str:
    return f"{CALL_OPEN}\n{call_json(name, arguments)}\n{CALL_CLOSE}"


def render(messages: list[dict], plan: ToolPlan | None) -> list[dict]:
    """Request messages, tool calls and tool results included, as plain {"role", "content"} turns, with the
    offered tools described in the system message. What is not a list of dicts passes through as it is (for
    validate_messages to name)."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return messages
    if plan is None and not any(m.get("role") == "tool" or m.get("tool_calls") for m in messages):
        return messages
    out: list[dict] = []
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        if role == "tool":
            text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
            out.append({"role": "user", "content": f"{RESULT_OPEN}\n{text}\n{RESULT_CLOSE}"})
            continue
        calls = m.get("tool_calls") or []
        if role == "assistant" and calls:
            parts = [content] if isinstance(content, str) and content else []
            for k, c in enumerate(calls):
                f = c.get("function") if isinstance(c, dict) else None
                if not isinstance(f, dict) or not isinstance(f.get("name"), str):
                    raise InvalidRequest(f"messages[{i}].tool_calls[{k}] must have a function with a name",
                                         param=f"messages[{i}].tool_calls[{k}]")
                try:
                    parts.append(call_text(f["name"], f.get("arguments") or {}))
                except (TypeError, ValueError):
                    raise InvalidRequest(f"messages[{i}].tool_calls[{k}].function.arguments must be a JSON "
                                         "object", param=f"messages[{i}].tool_calls[{k}].function.arguments") from None
            out.append({"role": "assistant", "content": "\n".join(parts)})
            continue
        out.append({"role": role, "content": content if content is not None else ""})
    if plan is not None and plan.offered:
        block = tools_block(plan.offered)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{block}"}
        else:
            out.insert(0, {"role": "system", "content": block})
    return out


def call_schema(plan: ToolPlan) -> dict | None:
    """The JSON schema a forced call is constrained to: {"name": one of the tools, "arguments": its schema}."""
    if not plan.forced:
        return None
    tools = [t for t in plan.tools if plan.mode != "named" or t.name == plan.name]
    shapes = [{"type": "object", "properties": {"name": {"const": t.name}, "arguments": t.schema()},
               "required": ["name", "arguments"], "additionalProperties": False} for t in tools]
    return shapes[0] if len(shapes) == 1 else {"anyOf": shapes}


FORCED_PREFIX = f"{CALL_OPEN}\n"      # what a forced reply starts with: part of its prompt


def forced_call(text: str) -> ToolCall | None:
    """The call a forced reply (the JSON after FORCED_PREFIX) makes; None if the JSON was cut (max_tokens)."""
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    return ToolCall(new_call_id(), obj["name"], json.dumps(obj.get("arguments", {}), ensure_ascii=False))


def _call(body: str) -> ToolCall | None:
    return forced_call(body.strip())


def parse(text: str, tools: tuple[Tool, ...]) -> tuple[str, list[ToolCall]]:
    """(the content, the calls) of a whole reply; a block that is not a well-formed call of an offered tool
    stays content."""
    names = {t.name for t in tools}
    content, calls, pos = [], [], 0
    while True:
        start = text.find(CALL_OPEN, pos)
        if start < 0:
            content.append(text[pos:])
            break
        end = text.find(CALL_CLOSE, start)
        stop = end if end >= 0 else len(text)
        call = _call(text[start + len(CALL_OPEN):stop])
        if call is not None and call.name in names:
            content.append(text[pos:start])
            calls.append(call)
        else:
            content.append(text[pos:stop + (len(CALL_CLOSE) if end >= 0 else 0)])
        pos = stop + len(CALL_CLOSE) if end >= 0 else len(text)
    return "".join(content).strip(), calls


class CallSplitter:
    """A streamed reply -> content text and calls, as they come. Text that could be the start of a call's
    opening tag is held back until it is known not to be (as stop strings are), so no call markup is ever
    streamed as content."""

    def __init__(self, tools: tuple[Tool, ...]):
        self.names = {t.name for t in tools}
        self.buf = ""
        self.in_call = False

    def feed(self, text: str) -> list[str | ToolCall]:
        self.buf += text
        out: list[str | ToolCall] = []
        while True:
            if self.in_call:
                end = self.buf.find(CALL_CLOSE)
                if end < 0:
                    return out
                body, self.buf = self.buf[:end], self.buf[end + len(CALL_CLOSE):]
                self.in_call = False
                call = _call(body)
                out.append(call if call is not None and call.name in self.names else
                           f"{CALL_OPEN}{body}{CALL_CLOSE}")
                continue
            start = self.buf.find(CALL_OPEN)
            if start >= 0:
                if start:
                    out.append(self.buf[:start])
                self.buf, self.in_call = self.buf[start + len(CALL_OPEN):], True
                continue
            keep = _held(self.buf)
            if len(self.buf) > keep:
                out.append(self.buf[:len(self.buf) - keep])
                self.buf = self.buf[len(self.buf) - keep:]
            return out

    def flush(self) -> list[str | ToolCall]:
        """The end of the reply: what was held back (a call the reply left open is parsed if it is whole)."""
        buf, self.buf = self.buf, ""
        if self.in_call:
            self.in_call = False
            call = _call(buf)
            return [call] if call is not None and call.name in self.names else [f"{CALL_OPEN}{buf}"]
        return [buf] if buf else []


def _held(text: str) -> int:
    """How many trailing characters could begin CALL_OPEN."""
    for k in range(min(len(text), len(CALL_OPEN) - 1), 0, -1):
        if CALL_OPEN.startswith(text[-k:]):
            return k
    return 0


# ---- a reply as content and calls, as it streams ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CallStart:
    """A call begins: its id and function name (OpenAI's first tool_calls delta of a call)."""

    index: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class CallArgs:
    """More of a call's arguments (JSON text; the pieces of one call join into its `arguments`)."""

    index: int
    text: str


Event = str | CallStart | CallArgs      # a str is content


_FORCED_HEAD = re.compile(r'\{"name": "([A-Za-z0-9_.-]{1,64})", "arguments": ')


class ReplyReader:
    """A reply's text -> content and calls, as it comes (feed, then flush at the end). A forced reply is the
    call's JSON itself ({"name": ..., "arguments": {...}}, constrained to that shape and key order): its name is
    known as soon as it is written and its arguments stream as they are generated, as OpenAI streams them. A
    free reply ("auto") is split by CallSplitter: content streams (never any call markup), each call comes
    whole. `calls` and `content` hold everything read so far."""

    def __init__(self, plan: ToolPlan, ids: Callable[[int], str] | None = None):
        self._id = ids or (lambda _index: new_call_id())     # call i's id (a stored reply's: from its own id)
        self.forced = plan.forced
        self.parallel = plan.parallel
        self.calls: list[ToolCall] = []
        self.content: list[str] = []
        self._split = None if self.forced else CallSplitter(plan.offered)
        self._buf = ""
        self._args: list[str] = []
        self._head: CallStart | None = None

    def feed(self, text: str) -> list[Event]:
        if not self.forced:
            return self._record(self._split.feed(text))
        self._buf += text
        out: list[Event] = []
        if self._head is None:
            m = _FORCED_HEAD.match(self._buf)
            if m is None:
                return out
            self._head = CallStart(0, self._id(0), m.group(1))
            self._buf = self._buf[m.end():]
            out.append(self._head)
        if len(self._buf) > 1:         # the last character may be the object's closing brace: hold it
            piece, self._buf = self._buf[:-1], self._buf[-1:]
            self._args.append(piece)
            out.append(CallArgs(0, piece))
        return out

    def flush(self) -> list[Event]:
        if not self.forced:
            return self._record(self._split.flush())
        out: list[Event] = []
        buf, self._buf = self._buf, ""
        if self._head is None:          # cut before the name was whole (max_tokens): no call to report
            return out
        if buf.endswith("}"):
            buf = buf[:-1]
        if buf:
            self._args.append(buf)
            out.append(CallArgs(0, buf))
        self.calls.append(ToolCall(self._head.id, self._head.name, "".join(self._args)))
        return out

    def _record(self, items: list[str | ToolCall]) -> list[Event]:
        out: list[Event] = []
        for item in items:
            if isinstance(item, ToolCall):
                if self.calls and not self.parallel:    # parallel_tool_calls false: the first call only
                    continue
                index = len(self.calls)
                item = ToolCall(self._id(index), item.name, item.arguments)
                self.calls.append(item)
                out += [CallStart(index, item.id, item.name), CallArgs(index, item.arguments)]
            elif item:
                self.content.append(item)
                out.append(item)
        return out


def call_ids(message_id: str) -> Callable[[int], str]:
    """The ids of a stored reply's calls, made from the reply's own id: the same when the reply is streamed,
    recorded and read back, so a tool result can name its call."""
    return lambda index: f"call_{message_id.removeprefix('msg_')}_{index}"


def read_reply(text: str, plan: ToolPlan, ids: Callable[[int], str] | None = None) -> tuple[str, list[ToolCall]]:
    """(content, calls) of a whole reply under `plan`."""
    reader = ReplyReader(plan, ids)
    reader.feed(text)
    reader.flush()
    content = "".join(reader.content)
    return (content.strip() if reader.calls else content), reader.calls
