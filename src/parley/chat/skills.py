"""Skills: named recipes that wrap the user's new message ("Translate the text delimited by triple backticks to
{to}. ```{text}```"), with parameters, from bundled files and the user's own.

Contract:
- `Skill.apply(text, params)` returns the wrapped message. Only the NEW message is wrapped, so the history before
  it stays byte-identical and the KV cache keeps hitting. Placeholders are `{text}` and the skill's parameters
  (`{to}`, `{sentences}`, `{language}`: letters, digits and `_`); `{{` and `}}` are literal braces. They are
  filled by one regex pass, not str.format: no attribute access, no format specs, and text substituted in is
  never scanned again (a message holding "{to}" stays as it is).
- A parameter without a default is required. A missing required parameter, an unknown or empty one, is an
  `InvalidRequest` naming it and listing the skill's parameters with their defaults.
- `system` (optional) is used as it is, no placeholders. `sampling` holds SamplingParams field names only
  (temperature 0.2 for proofread, say), validated against SamplingParams' own ranges; `sampling_params(base)`
  applies them.
- A skill file is TOML named <skill name>.toml:

      description = "Translate the text into another language."       # required
      template = "Translate the text delimited by triple backticks to {to}. ```{text}```"   # required
      system = "..."                                                   # optional
      examples = ["Good morning!", { text = "Where is the station?", params = { to = "French" } }]

      [params.to]                                                      # one table per parameter
      description = "the language to translate into"
      # default = "English"                                            # no default: required

      [sampling]
      temperature = 0.2

  Unknown keys, a template that never uses {text}, a placeholder that is not a parameter, a parameter the
  template never uses, a stray brace, or an example that does not apply are errors naming the file.
- `Skills(user_dir)`: the bundled files (src/parley/data/skills) plus the user's ($PARLEY_HOME/skills/*.toml),
  a `parley.registry.FileRegistry`: a user file replaces the bundled skill of the same name, and `describe()`
  says so. A broken user file is an error naming the file when it is used, and a warning line (not a crash)
  when listing. `Skill.as_dict()` and
  `Skills.view()` / `listing()` give the same as plain, JSON-ready dicts (the HTTP API, `parley skills`).
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parley.errors import InvalidRequest
from parley.paths import data_dir
from parley.registry import FileRegistry, decode_utf8, read_capped
from parley.sampling import SamplingParams

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "data" / "skills"
MAX_SKILL_BYTES = 1024 * 1024        # a skill file
TEXT = "text"                        # the placeholder of the user's message

_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|[{}]")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_SAMPLING_FIELDS = tuple(f.name for f in dataclasses.fields(SamplingParams))
_FILE_KEYS = ("description", "template", "system", "params", "sampling", "examples")
_ORIGIN_NOTES = {"bundled": "", "user": " [user file]",                 # describe(): after the description
                 "user, replaces bundled": " [user file, replaces the bundled one]"}


@dataclass(frozen=True, slots=True)
class Param:
    default: str | None = None       # None: required
    description: str = ""

    @property
    def required(self) -> bool:
        return self.default is None


@dataclass(frozen=True)
class Example:
    """An example input the web page can offer, with the parameters it needs."""

    text: str
    params: dict[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Skill:
    name: str
    description: str
    template: str                                   # the wrapper of the new message
    params: dict[str, Param] = field(default_factory=dict, hash=False)
    system: str | None = None
    sampling: dict[str, Any] = field(default_factory=dict, hash=False)
    examples: tuple[Example, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise InvalidRequest(f"skill name {self.name!r} must be 1-64 letters, digits, '-' or '_'", param="skill")
        used = placeholders(self.template, f"skill {self.name!r}: template")
        if TEXT in self.params:
            raise InvalidRequest(f"skill {self.name!r}: {{text}} is the user's message, not a parameter; rename "
                                 f"params.text", param="params")
        if TEXT not in used:
            raise InvalidRequest(f"skill {self.name!r}: template never uses {{text}}, so the user's message would be "
                                 f"lost; put {{text}} where it goes", param="template")
        for name in used:
            if name != TEXT and name not in self.params:
                raise InvalidRequest(f"skill {self.name!r}: template uses {{{name}}}, which is not a parameter; "
                                     f"{self.describe_params()}; declare it under [params.{name}]", param="template")
        for name in self.params:
            if name not in used:
                raise InvalidRequest(f"skill {self.name!r}: parameter {name!r} is declared but the template never "
                                     f"uses {{{name}}}", param="params")
        self.sampling_params(SamplingParams())
        for ex in self.examples:
            self.apply(ex.text, ex.params)

    def apply(self, text: str, params: dict[str, str] | None = None) -> str:
        """The user's new message wrapped by the template, parameters filled in (defaults for those not given)."""
        params = params or {}
        for name in params:
            if name not in self.params:
                raise InvalidRequest(f"skill {self.name!r} has no parameter {name!r}; {self.describe_params()}",
                                     param="skill_params")
        values = {TEXT: text}
        for name, p in self.params.items():
            value = params.get(name, p.default)
            if value is None:
                raise InvalidRequest(f"skill {self.name!r} needs the parameter {name!r} ({name}=...); "
                                     f"{self.describe_params()}", param="skill_params")
            if not isinstance(value, str) or not value.strip():
                raise InvalidRequest(f"skill {self.name!r}: parameter {name!r} must be a non-empty string, got "
                                     f"{value!r}; {self.describe_params()}", param="skill_params")
            values[name] = value
        return fill(self.template, values)

    def wrap(self, text: str, params: dict[str, str] | None = None) -> str:
        """The user's new message as the model reads it: the skill's own instructions (if any), then apply()."""
        shown = self.apply(text, params)
        return f"{self.system}\n\n{shown}" if self.system else shown

    def as_dict(self) -> dict[str, Any]:
        """The skill as plain data: its parameters with their defaults (None: required), examples, sampling."""
        return {
            "name": self.name, "description": self.description, "template": self.template, "system": self.system,
            "params": {n: {"default": p.default, "required": p.required, "description": p.description}
                       for n, p in self.params.items()},
            "sampling": dict(self.sampling),
            "examples": [{"text": ex.text, "params": dict(ex.params)} for ex in self.examples],
        }

    def params_text(self) -> str:
        """The parameters in one line: "to (required), sentences=2", or "-"."""
        return ", ".join(f"{n} (required)" if p.required else f"{n}={p.default}"
                         for n, p in self.params.items()) or "-"

    def describe_params(self) -> str:
        if not self.params:
            return "it takes no parameters"
        return f"its parameters: {self.params_text()}"

    def sampling_params(self, base: SamplingParams) -> SamplingParams:
        """`base` with the skill's sampling settings applied (errors name the setting)."""
        for key in self.sampling:
            if key not in _SAMPLING_FIELDS:
                raise InvalidRequest(f"skill {self.name!r}: sampling.{key} is not a sampling setting; known: "
                                     f"{', '.join(_SAMPLING_FIELDS)}", param="sampling")
        try:
            return base.replace(**self.sampling)
        except InvalidRequest as e:
            raise InvalidRequest(f"skill {self.name!r}: sampling.{e.message}", param="sampling") from None


def placeholders(template: str, where: str) -> list[str]:
    """The names of the placeholders in `template`, in order; a stray brace is an error naming its position."""
    names = []
    for m in _TOKEN.finditer(template):
        if m.group(1):
            names.append(m.group(1))
        elif m.group(0) in "{}":
            snippet = template[m.start():m.start() + 12]
            raise InvalidRequest(f"{where} has a stray {m.group(0)!r} at character {m.start()} ({snippet!r}); "
                                 f"placeholders are {{name}} (letters, digits, _) and a literal brace is written "
                                 f"{m.group(0) * 2}", param="template")
    return names


def fill(template: str, values: dict[str, str]) -> str:
    """`template` with each {name} replaced by values[name] and {{ / }} by one brace, in one pass."""
    def one(m: re.Match) -> str:
        return values[m.group(1)] if m.group(1) else m.group(0)[0]
    return _TOKEN.sub(one, template)


def parse_params(items: list[str]) -> dict[str, str]:
    """CLI `--param to=German` items -> {"to": "German"} (split at the first '=')."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise InvalidRequest(f"--param {item!r} must be name=value (e.g. --param to=German)", param="param")
        if name in out:
            raise InvalidRequest(f"--param {name} is given twice ({name}={out[name]} and {item})", param="param")
        out[name] = value
    return out


# ---- files --------------------------------------------------------------------------------------------------

def load_skill(text: str, name: str, filename: str = "") -> Skill:
    """A skill from the TOML format in the module docstring; `name` is the file's name without .toml."""
    label = filename or f"skill {name!r}"
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InvalidRequest(f"{label} is not valid TOML ({e})", param="skill") from None
    try:
        return Skill(name=name, **_skill_fields(doc))
    except InvalidRequest as e:
        raise InvalidRequest(f"{label}: {e.message}", param=e.param) from None


def _skill_fields(doc: dict) -> dict[str, Any]:
    for key in doc:
        if key not in _FILE_KEYS:
            raise InvalidRequest(f"unknown key {key!r}; known: {', '.join(_FILE_KEYS)}", param=key)
    for key in ("description", "template"):
        if not isinstance(doc.get(key), str) or not doc[key].strip():
            raise InvalidRequest(f"{key} is missing or not a string; a skill needs a {key}", param=key)
    system = doc.get("system")
    if system is not None and not isinstance(system, str):
        raise InvalidRequest(f"system must be a string, got {type(system).__name__}", param="system")
    sampling = _table(doc.get("sampling", {}), "sampling")
    return {"description": doc["description"].strip(), "template": doc["template"], "system": system,
            "params": {n: _param(v, n) for n, v in _table(doc.get("params", {}), "params").items()},
            "sampling": sampling, "examples": tuple(_example(x, i) for i, x in enumerate(_list(doc)))}


def _table(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where} must be a table, got {type(value).__name__}", param=where)
    return value


def _list(doc: dict) -> list:
    value = doc.get("examples", [])
    if not isinstance(value, list):
        raise InvalidRequest(f"examples must be a list, got {type(value).__name__}", param="examples")
    return value


def _param(value: Any, name: str) -> Param:
    table = _table(value, f"params.{name}")
    for key in table:
        if key not in ("default", "description"):
            raise InvalidRequest(f"params.{name} has an unknown key {key!r}; known: default, description",
                                 param="params")
    default = table.get("default")
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        default = str(default)
    if default is not None and not isinstance(default, str):
        raise InvalidRequest(f"params.{name}.default must be a string, got {type(default).__name__}",
                             param="params")
    description = table.get("description", "")
    if not isinstance(description, str):
        raise InvalidRequest(f"params.{name}.description must be a string", param="params")
    return Param(default, description)


def _example(value: Any, i: int) -> Example:
    if isinstance(value, str):
        return Example(value)
    table = _table(value, f"examples[{i}]")
    text, params = table.get("text"), table.get("params", {})
    if not isinstance(text, str) or set(table) - {"text", "params"}:
        raise InvalidRequest(f"examples[{i}] must be a string or a table with text and params", param="examples")
    if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
        raise InvalidRequest(f"examples[{i}].params must be a table of strings", param="examples")
    return Example(text, params)


def default_dir() -> Path:
    """Where the user's skills live: $PARLEY_HOME/skills."""
    return data_dir() / "skills"


def read_file(path: Path) -> Skill:
    """A skill file (its size checked first); the skill is named after the file."""
    path = Path(path)
    return _decode(path, read_capped(path, MAX_SKILL_BYTES, "skill"))


def _decode(path: Path, data: bytes) -> Skill:
    return load_skill(decode_utf8(data, path, "skill"), path.stem, str(path))


class Skills(FileRegistry[Skill]):
    """The bundled skills plus the user's TOML files; a user file replaces the bundled skill of its name."""

    def __init__(self, user_dir: Path | None, bundled_dir: Path = BUNDLED_DIR, *, shared=None):
        super().__init__("skill", user_dir, bundled_dir, suffixes=(".toml",), load=_decode,
                         max_bytes=MAX_SKILL_BYTES, shared=shared)

    def load_all(self) -> tuple[list[Skill], list[str]]:
        """Every skill that loads, and one warning line for each file that does not."""
        return self.each(self.get)

    def view(self, name: str) -> dict[str, Any]:
        """get(name).as_dict() and where the skill comes from."""
        return {**self.get(name).as_dict(), "origin": self.origin(name)}

    def listing(self) -> tuple[list[dict[str, Any]], list[str]]:
        """view() of every skill that loads, and one warning line for each file that does not."""
        return self.each(self.view)

    def describe(self, *, warnings: bool = True) -> str:
        """A table for listings (`parley chat /skill`, `parley skills list`): name, parameters, description;
        then any warnings (unless `warnings` is False: the CLI prints them on stderr)."""
        skills, problems = self.load_all()
        rows = [("name", "params", "description")]
        for s in skills:
            rows.append((s.name, s.params_text(), s.description + _ORIGIN_NOTES[self.origin(s.name)]))
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        lines = [f"{a:<{w0}}  {b:<{w1}}  {c}".rstrip() for a, b, c in rows]
        return "\n".join(lines + (problems if warnings else []))
