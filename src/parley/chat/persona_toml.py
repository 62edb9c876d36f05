"""The TOML persona file: read (`load_toml`) and write (`persona_toml`) a `Persona` exactly.

Every key is a `Persona` field of the same name and all are optional but `name`. Unknown keys are refused by
name (typos do not pass silently).

    name = "Maren"                         # who the model speaks as: {{char}}
    format = "transcript"                  # or "template" (the default)
    user_name = "Traveller"                # {{user}}; default "User"
    description = '''The narrative...'''   # any TOML string; multi-line strings for long text
    personality = "..."
    scenario = "..."
    first_message = "..."                  # the greeting
    alternate_greetings = ["...", "..."]
    example_dialogue = '''<START>
    {{user}}: ...
    {{char}}: ...'''
    system_prompt = "..."
    post_history_instructions = "..."
    creator = "..."; creator_notes = "..."; character_version = "..."; tags = ["..."]

    [[characters]]                         # the other characters of a group scene
    name = "Tobias"
    description = "..."

    [extensions]                           # anything; kept verbatim, like a card's extensions
    ...

A card imported into TOML also keeps its other fields under the same names (`nickname`, `source`,
`group_only_greetings`, `creation_date`, `modification_date`, `creator_notes_multilingual`, `assets`,
`character_book`, and the card's unknown keys in `[extra]` and `[extra_top]`). TOML has no null, so a persona
holding one (in `extensions`, say) cannot be written as TOML (an `InvalidRequest` naming the key);
`Personas.save` writes a V3 JSON card instead. The writer is stdlib only (tomllib reads, nothing writes).
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from typing import Any

from parley.chat.persona import Persona, build
from parley.errors import InvalidRequest

_FIELDS = [f.name for f in dataclasses.fields(Persona)]


def load_toml(text: str, filename: str = "") -> Persona:
    """A persona from the TOML file format in the module docstring."""
    label = filename or "the persona file"
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InvalidRequest(f"{label} is not valid TOML ({e})", param="persona") from None
    unknown = [k for k in doc if k not in _FIELDS]
    if unknown:
        raise InvalidRequest(f"{label}: unknown key {unknown[0]!r}; known: {', '.join(_FIELDS)}", param=unknown[0])
    if "name" not in doc:
        raise InvalidRequest(f"{label}: name is missing; a persona needs the name the model speaks as",
                             param="name")
    return build(doc, label)


def persona_toml(p: Persona) -> str:
    """The persona as a TOML persona file (fields left at their defaults are left out)."""
    defaults = Persona(name=p.name)
    doc: dict[str, Any] = {}
    for name in _FIELDS:
        value = getattr(p, name)
        if name in ("name", "format") or value != getattr(defaults, name):
            if name == "characters":
                value = [{"name": c.name, **({"description": c.description} if c.description else {})}
                         for c in value]
            doc[name] = value
    lines = ["# A parley persona: the format is described in parley.chat.persona_toml"]
    try:
        _toml_table(lines, [], doc, array=False)
    except _Null as e:
        raise InvalidRequest(f"persona {p.name!r} cannot be written as TOML: {e} is null and TOML has no null; "
                             f"save it as a JSON card (card_json) instead", param="persona") from None
    return "\n".join(lines) + "\n"


class _Null(Exception):
    """A None inside a value: TOML cannot hold it."""


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key, multiline=False)


def _control(c: str) -> bool:
    return c < " " or c == "\x7f"


def _toml_string(s: str, *, multiline: bool) -> str:
    if not (multiline and "\n" in s):
        return '"' + "".join(_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if _control(c) else c) for c in s) + '"'
    # a multi-line basic string: escape backslashes and control characters but newlines and tabs, break every
    # run of three quotes, and escape the quotes just before the closing delimiter
    main = s.rstrip('"')
    out, quotes = [], 0
    for c in main:
        if c == '"':
            quotes += 1
            out.append('\\"' if quotes == 3 else c)
            quotes %= 3
            continue
        quotes = 0
        out.append("\\\\" if c == "\\" else c if c in "\n\t" else f"\\u{ord(c):04x}" if _control(c) else c)
    return '"""\n' + "".join(out) + '\\"' * (len(s) - len(main)) + '"""'


def _toml_value(v: Any, path: str, *, inline: bool) -> str:
    if v is None:
        raise _Null(path)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return ("nan" if math.isnan(v) else "inf" if v > 0 else "-inf") if not math.isfinite(v) else repr(v)
    if isinstance(v, str):
        return _toml_string(v, multiline=not inline)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x, f"{path}[{i}]", inline=True) for i, x in enumerate(v)) + "]"
    if isinstance(v, dict):
        items = [f"{_toml_key(k)} = {_toml_value(x, f'{path}.{k}', inline=True)}" for k, x in v.items()]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise InvalidRequest(f"{path} holds a {type(v).__name__}, which a persona file cannot store", param=path)


def _is_table(v: Any) -> bool:
    return isinstance(v, dict) and bool(v)


def _is_table_array(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and bool(v) and all(isinstance(x, dict) for x in v)


def _toml_table(lines: list[str], path: list[str], table: dict, *, array: bool) -> None:
    nested = [(k, v) for k, v in table.items() if _is_table(v) or _is_table_array(v)]
    if path and (array or len(nested) < len(table)):   # a table holding only tables needs no header of its own
        dotted = ".".join(_toml_key(k) for k in path)
        lines += ["", f"[[{dotted}]]" if array else f"[{dotted}]"]
    for key, value in table.items():
        if not (_is_table(value) or _is_table_array(value)):
            lines.append(f"{_toml_key(key)} = {_toml_value(value, '.'.join([*path, key]), inline=False)}")
    for key, value in nested:
        for item in value if isinstance(value, (list, tuple)) else [value]:
            _toml_table(lines, [*path, key], item, array=isinstance(value, (list, tuple)))


__all__ = ["load_toml", "persona_toml"]
