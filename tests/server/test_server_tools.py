"""Tool calls over the OpenAI API with the official client, on the real model: forced calls always parse and match
their function's schema, streamed deltas arrive as OpenAI sends them, an agent loop reads only its new tokens."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from parley.api import ToolPlan, read_reply, read_tools
from parley.chat.tools import CallSplitter, ReplyReader, ToolCall

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"]}}}
ADD = {"type": "function", "function": {
    "name": "add", "description": "Add two integers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "required": ["a", "b"]}}}
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, ADD)}
ASK = [{"role": "user", "content": "What is the weather in Oslo?"}]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def named(name: str) -> dict:
    return {"type": "function", "function": {"name": name}}


def call(client, **kw):
    args = {"model": "parley", "messages": ASK, "tools": [WEATHER, ADD], "temperature": 0, "max_tokens": 60}
    return client.chat.completions.create(**(args | kw))


def test_a_named_call_is_made_and_matches_its_schema(client):
    r = call(client, tool_choice=named("get_weather"))
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (c,) = choice.message.tool_calls
    assert c.type == "function" and c.function.name == "get_weather" and c.id.startswith("call_")
    jsonschema.validate(json.loads(c.function.arguments), SCHEMAS["get_weather"])


def test_required_picks_one_of_the_tools(client):
    for content in ("Add 2 and 3.", "Weather in Paris?"):
        r = call(client, messages=[{"role": "user", "content": content}], tool_choice="required",
                 temperature=0.7, seed=4)
        (c,) = r.choices[0].message.tool_calls
        jsonschema.validate(json.loads(c.function.arguments), SCHEMAS[c.function.name])


def test_streamed_tool_call_deltas_are_openais(client):
    plain = call(client, tool_choice=named("add"), messages=[{"role": "user", "content": "Add 7 and 5."}])
    deltas, finish = [], None
    with call(client, tool_choice=named("add"), messages=[{"role": "user", "content": "Add 7 and 5."}],
              stream=True) as stream:
        for event in stream:
            for choice in event.choices:
                deltas += choice.delta.tool_calls or []
                finish = choice.finish_reason or finish
    first, rest = deltas[0], deltas[1:]
    assert first.index == 0 and first.id and first.type == "function"
    assert first.function.name == "add" and first.function.arguments == ""
    assert rest and all(d.id is None and d.function.name is None and d.index == 0 for d in rest)
    assert "".join(d.function.arguments for d in rest) == plain.choices[0].message.tool_calls[0].function.arguments
    assert finish == "tool_calls"


def test_an_agent_loop_reads_only_its_new_tokens(client):
    """Five tool round trips, the SDK's own message objects sent back: from the second round on, the cache holds
    all of the prompt but the tool's result and the markup around it (here 42 of ~300-500 tokens a round: the
    call is written back token for token as the model wrote it). The first round reads the tools block cold,
    so five rounds read 4.5x fewer tokens than the history they send (1915 vs 427 here)."""
    messages: list = [{"role": "system", "content": "You are a calculator. Use the tool."},
                      {"role": "user", "content": "Add 1 and 2, then keep adding 3."}]
    prefilled = total = 0
    for round_ in range(5):
        r = call(client, messages=messages, tool_choice=named("add"), max_tokens=30)
        u = r.usage
        if round_:
            assert u.prompt_tokens_details.cached_tokens >= 0.8 * u.prompt_tokens, (round_, u)
        prefilled += u.prompt_tokens - u.prompt_tokens_details.cached_tokens
        total += u.prompt_tokens
        message = r.choices[0].message
        (c,) = message.tool_calls
        args = json.loads(c.function.arguments)
        messages += [message, {"role": "tool", "tool_call_id": c.id, "content": json.dumps({"sum": args["a"] + args["b"]})}]
    assert total >= 3 * prefilled


def test_tool_choice_none_offers_nothing(client):
    r = call(client, tool_choice="none", max_tokens=8)
    assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason in ("stop", "length")
    with_tools = call(client, tool_choice="none", max_tokens=1).usage.prompt_tokens
    without = client.chat.completions.create(model="parley", messages=ASK, max_tokens=1).usage.prompt_tokens
    assert with_tools == without


@pytest.mark.parametrize("kw, param", [
    ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools[0].function.name"),
    ({"tool_choice": named("nope")}, "tool_choice.function.name"),
    ({"tools": None, "tool_choice": "required"}, "tool_choice"),
    ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{oops"}}]},
        {"role": "user", "content": "go"}]}, "messages[0].tool_calls[0].function.arguments"),
    ({"messages": [{"role": "user"}]}, "messages.0.content"),
])
def test_bad_tools_are_400s_naming_the_field(client, kw, param):
    with pytest.raises(openai.BadRequestError) as e:
        call(client, **kw)
    assert e.value.body["param"] == param, e.value.body


# ---- the convention, on texts (no model needed) ---------------------------------------------------------------
TOOLS = read_tools([WEATHER, ADD])


def test_auto_replies_split_into_content_and_calls():
    text = ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}'
            '\n</tool_call>\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>')
    content, calls = read_reply(text, ToolPlan(TOOLS, "auto"))
    assert content == "Let me check." and [c.name for c in calls] == ["get_weather", "add"]
    assert json.loads(calls[1].arguments) == {"a": 1, "b": 2}
    _, one = read_reply(text, ToolPlan(TOOLS, "auto", parallel=False))
    assert [c.name for c in one] == ["get_weather"]
    # a call of a function not offered, or not JSON, stays content
    content, calls = read_reply('<tool_call>{"name": "rm", "arguments": {}}</tool_call> done', ToolPlan(TOOLS, "auto"))
    assert not calls and "rm" in content


def test_streamed_auto_replies_never_leak_call_markup():
    text = 'Sure <tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'
    for step in (1, 3, 7):
        splitter, out = CallSplitter(TOOLS), []
        for i in range(0, len(text), step):
            out += splitter.feed(text[i:i + step])
        out += splitter.flush()
        content = "".join(x for x in out if isinstance(x, str))
        assert content == "Sure " and [x.name for x in out if isinstance(x, ToolCall)] == ["add"]


def test_a_forced_reply_streams_its_arguments():
    reader, events = ReplyReader(ToolPlan(TOOLS, "named", name="add")), []
    text = '{"name": "add", "arguments": {"a": 10, "b": 20}}'
    for i in range(0, len(text), 4):
        events += reader.feed(text[i:i + 4])
    events += reader.flush()
    assert events[0].name == "add" and "".join(e.text for e in events[1:]) == '{"a": 10, "b": 20}'
    assert reader.calls[0].arguments == '{"a": 10, "b": 20}'


def test_a_langchain_tool_agent_loop(server):
    """LangChain's own tool binding and messages: the bound tool is forced, its result goes back as a
    ToolMessage, and the next round's prompt comes from the cache."""
    langchain_openai = pytest.importorskip("langchain_openai")
    from langchain_core.messages import HumanMessage, ToolMessage

    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b
    llm = langchain_openai.ChatOpenAI(base_url=f"{server.url}/v1", api_key="unused", model="parley", temperature=0,
                                      max_tokens=30, max_retries=0)
    agent = llm.bind_tools([add], tool_choice="add")
    messages: list = [HumanMessage("Add 4 and 5, then add 6 to the result.")]
    for round_ in range(3):
        reply = agent.invoke(messages)
        (c,) = reply.tool_calls
        assert c["name"] == "add" and isinstance(c["args"]["a"], int) and isinstance(c["args"]["b"], int)
        usage = reply.usage_metadata
        if round_:
            assert usage["input_token_details"]["cache_read"] >= 0.8 * usage["input_tokens"], (round_, usage)
        messages += [reply, ToolMessage(str(add(**c["args"])), tool_call_id=c["id"])]
