"""Chat templates: turn a list of messages into the prompt text a model was trained on.

Templates are Jinja, rendered in a sandbox the way Hugging Face renders them, so a model file's own template
(`tokenizer.chat_template`) cannot reach Python internals. Named fallback formats cover models without one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from parley.errors import InvalidRequest, TemplateError

MODEL = "model"  # --chat-format name for the model file's own template
ROLES = ("system", "user", "assistant")

FORMATS: dict[str, str] = {
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    # Llama 2: the system prompt goes inside the first [INST] block.
    "llama2": (
        "{% if messages[0]['role'] == 'system' %}"
        "{% set system = '<<SYS>>\\n' + messages[0]['content'] + '\\n<</SYS>>\\n\\n' %}"
        "{% set loop_messages = messages[1:] %}"
        "{% else %}{% set system = '' %}{% set loop_messages = messages %}{% endif %}"
        "{% if not loop_messages %}{{ bos_token + '[INST] ' + system + ' [/INST]' }}{% endif %}"
        "{% for message in loop_messages %}"
        "{% if message['role'] == 'assistant' %}{{ ' ' + message['content'] + ' ' + eos_token }}"
        "{% else %}{{ bos_token + '[INST] ' + (system if loop.first else '') + message['content'] + ' [/INST]' }}"
        "{% endif %}"
        "{% endfor %}"
    ),
    "llama3": (
        "{{ bos_token }}"
        "{% for message in messages %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
        " + message['content'] | trim + '<|eot_id|>' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    ),
    # Gemma has no system role: a leading system message is put at the top of the first user turn.
    "gemma": (
        "{{ bos_token }}"
        "{% if messages[0]['role'] == 'system' %}"
        "{% set system = messages[0]['content'] | trim %}"
        "{% set loop_messages = messages[1:] %}"
        "{% if not loop_messages or loop_messages[0]['role'] != 'user' %}"
        "{{ '<start_of_turn>user\\n' + system + '<end_of_turn>\\n' }}{% set system = '' %}"
        "{% endif %}"
        "{% else %}{% set system = '' %}{% set loop_messages = messages %}{% endif %}"
        "{% for message in loop_messages %}"
        "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else 'user') + '\\n'"
        " + (system + '\\n\\n' if loop.first and system else '')"
        " + message['content'] | trim + '<end_of_turn>\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
    ),
    "user-assistant": (
        "{% for message in messages %}"
        "{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
        "{% elif message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\\n' }}"
        "{% else %}{{ 'Assistant: ' + message['content'] + '\\n' }}{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
    ),
    # For base models: the text itself, no roles.
    "raw": "{% for message in messages %}{{ message['content'] }}{% endfor %}",
}

FORMAT_STOPS: dict[str, tuple[str, ...]] = {
    "chatml": ("<|im_end|>",),
    "llama2": ("</s>", "[INST]"),
    "llama3": ("<|eot_id|>",),
    "gemma": ("<end_of_turn>",),
    "user-assistant": ("\nUser:",),
    "raw": (),
}

KNOWN_FORMATS = (MODEL, *FORMATS)
_PICK = f"use --chat-format NAME; known: {', '.join(KNOWN_FORMATS)}"


def _raise_exception(message: str) -> None:
    raise TemplateError(str(message))


def _tojson(
    value: Any, indent: int | None = None, ensure_ascii: bool = False, sort_keys: bool = False
) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


_ENV = ImmutableSandboxedEnvironment(
    trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
)
_ENV.filters["tojson"] = _tojson
_ENV.globals["raise_exception"] = _raise_exception
_ENV.globals["strftime_now"] = _strftime_now


class ChatTemplate:
    """A compiled chat template. `name` is "model" for the model file's own, else the format's name;
    `stops` are the end-of-turn strings the format needs as stop strings (empty for the model's own)."""

    __slots__ = ("name", "source", "bos_token", "eos_token", "stops", "_template")

    def __init__(self, name: str, source: str, template: jinja2.Template, bos_token: str, eos_token: str):
        self.name = name
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.stops: tuple[str, ...] = FORMAT_STOPS.get(name, ())
        self._template = template

    @classmethod
    def from_source(cls, source: str, *, name: str, bos_token: str = "", eos_token: str = "") -> ChatTemplate:
        try:
            template = _ENV.from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise TemplateError(
                f"chat template {name!r} has a syntax error at line {e.lineno}: {(e.message or '').rstrip('.')}; {_PICK}",
                param="chat_format",
            ) from None
        return cls(name, source, template, bos_token, eos_token)

    def render(self, messages: list[dict], *, add_generation_prompt: bool = True, **extra: Any) -> str:
        variables = {
            **extra,
            "messages": messages,
            "add_generation_prompt": add_generation_prompt,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
        }
        try:
            prompt = self._template.render(variables)
        except TemplateError as e:  # the template's own raise_exception(...)
            raise TemplateError(f"chat template {self.name!r} rejected the messages: {e.message}") from None
        except Exception as e:
            raise TemplateError(
                f"chat template {self.name!r} failed: {type(e).__name__}: {str(e).rstrip('.')}; {_PICK}",
                param="chat_format",
            ) from None
        if not prompt and messages:
            raise TemplateError(
                f"chat template {self.name!r} rendered an empty prompt for {len(messages)} message(s); {_PICK}",
                param="chat_format",
            )
        return prompt

    def __repr__(self) -> str:
        return f"ChatTemplate(name={self.name!r})"


def resolve_template(
    model_template: str | None, chat_format: str | None, *, bos_token: str, eos_token: str
) -> ChatTemplate:
    """The template to use: the named `chat_format` if given, else the model file's own. Never guesses."""
    if chat_format is not None and chat_format != MODEL:
        source = FORMATS.get(chat_format)
        if source is None:
            raise TemplateError(
                f"unknown --chat-format {chat_format!r}; known: {', '.join(KNOWN_FORMATS)}",
                param="chat_format",
            )
        return ChatTemplate.from_source(source, name=chat_format, bos_token=bos_token, eos_token=eos_token)
    if not model_template or not model_template.strip():
        raise TemplateError(
            "the model file carries no chat template (tokenizer.chat_template); pass --chat-format NAME to pick "
            f"one; known: {', '.join(FORMATS)}",
            param="chat_format",
        )
    return ChatTemplate.from_source(model_template, name=MODEL, bos_token=bos_token, eos_token=eos_token)


def validate_messages(messages: Any) -> list[dict]:
    """Check a chat request's messages; returns clean {"role", "content"} dicts."""
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)):
        raise InvalidRequest(
            f"messages must be a list of {{role, content}} objects, got {type(messages).__name__}",
            param="messages",
        )
    if not messages:
        raise InvalidRequest("messages must hold at least one message", param="messages")
    clean = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequest(
                f"messages[{i}] must be an object with role and content, got {type(message).__name__}",
                param=f"messages[{i}]",
            )
        role = message.get("role")
        if role not in ROLES:
            raise InvalidRequest(
                f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}",
                param=f"messages[{i}].role",
            )
        content = message.get("content")
        if not isinstance(content, str):
            hint = (
                " (content parts are not supported: send the text as one string)"
                if isinstance(content, list)
                else ""
            )
            raise InvalidRequest(
                f"messages[{i}].content must be a string, got {type(content).__name__}{hint}",
                param=f"messages[{i}].content",
            )
        clean.append({"role": role, "content": content})
    return clean
