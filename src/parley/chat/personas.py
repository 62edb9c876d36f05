"""Personas: who the model speaks as, the narrative pinned at the top of the prompt, and their files.

Contract:
- `Persona` is a frozen value (validated on construction and by `with_changes`). Its text is what the card or
  file says, with `{{char}}` / `{{user}}` (any case) and the legacy `<BOT>` / `<USER>` still in it;
  `substitute()` fills them in, and `narrative()`, `examples()` and `greetings()` return substituted text.
- `narrative()` is the pinned text, in this order, empty parts left out, joined by blank lines:
  the description; "{name}'s personality: {personality}"; "Characters:" with one "- Name: description" line for
  every extra character of a group scene; "Scenario: {scenario}". It never holds `creator_notes` (notes for the
  human reader), nor the system prompt or post-history instructions (the prompt builder places those).
- `format`: "template" (the persona becomes the system message of the model's chat template) or "transcript"
  (a narrative then "Name: text" lines, for base models). `speakers()` lists the model's characters: `name` first,
  then `characters`; the user speaks as `user_name`.
- Files: character cards (`load_card`, `card_json`, `card_png`; formats in `parley.chat.cards`) and the TOML
  persona file below (`load_toml`, `persona_toml`). `Personas` lists bundled personas (src/parley/data/personas)
  and the user's files ($PARLEY_HOME/personas: *.toml, *.json, *.png), saves and deletes the user's, imports a
  card file (`import_card`: a PNG card is kept as it is, image and all; a JSON card becomes a TOML file, or a V3
  JSON card when TOML cannot hold it exactly), exports one (`export_card`: JSON, or PNG keeping an imported
  image) and describes them for listings (`listing`, `view`: plain dicts, JSON-ready).
- Every error is an `InvalidRequest` / `LimitExceeded` with one line naming the file and the field.

The TOML persona file: every key is a `Persona` field of the same name and all are optional but `name`.
Unknown keys are refused by name (typos do not pass silently).

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
holding one (in `extensions`, say) cannot be written as TOML; `Personas.save` writes a V3 JSON card instead.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parley.chat import cards
from parley.errors import InvalidRequest
from parley.paths import data_dir

FORMATS = ("template", "transcript")
DEFAULT_USER = "User"
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "data" / "personas"
USER_SUFFIXES = (".toml", ".json", ".png")      # when two user files share a name, the first of these wins
MAX_NAME_CHARS = 64                              # of a file name made from a persona's name
MAX_FILE_BYTES = cards.MAX_CARD_BYTES

_MACRO = re.compile(r"\{\{(?:char|user)\}\}|<(?:bot|user)>", re.IGNORECASE)
_SPEAKER_LINE = re.compile(r"([^:\n]{1,100}):[ \t]?(.*)")


@dataclass(frozen=True, slots=True)
class Character:
    """Another character of a group scene: a name the model may speak as, and a short description."""

    name: str
    description: str = ""


# field -> the kind of value it holds (cards.check), for the fields a plain type check covers
_KINDS = {
    "name": "str", "description": "str", "personality": "str", "scenario": "str", "first_message": "str",
    "alternate_greetings": "strs", "example_dialogue": "str", "system_prompt": "str",
    "post_history_instructions": "str", "user_name": "str", "format": "str", "creator_notes": "str",
    "creator": "str", "character_version": "str", "tags": "strs", "extensions": "dict",
    "nickname": "str?", "creator_notes_multilingual": "strdict?", "source": "strs?",
    "group_only_greetings": "strs", "assets": "dicts?", "creation_date": "number?",
    "modification_date": "number?", "character_book": "dict?", "extra": "dict", "extra_top": "dict",
}


@dataclass(frozen=True)
class Persona:
    name: str                                    # who the model speaks as: {{char}}
    description: str = ""                        # the narrative
    personality: str = ""
    scenario: str = ""
    first_message: str = ""                      # the greeting
    alternate_greetings: tuple[str, ...] = ()
    example_dialogue: str = ""                   # SillyTavern mes_example: <START> blocks of "{{user}}: ..." lines
    system_prompt: str = ""
    post_history_instructions: str = ""
    user_name: str = DEFAULT_USER                # {{user}}
    characters: tuple[Character, ...] = ()       # the other characters of a group scene
    format: str = "template"                     # "template" | "transcript"
    creator_notes: str = ""                      # for the human reader: never in a prompt
    creator: str = ""
    character_version: str = ""
    tags: tuple[str, ...] = ()
    extensions: dict[str, Any] = field(default_factory=dict, hash=False)
    # V3 card fields (None: absent from the card)
    nickname: str | None = None
    creator_notes_multilingual: dict[str, str] | None = field(default=None, hash=False)
    source: tuple[str, ...] | None = None
    group_only_greetings: tuple[str, ...] = ()
    assets: tuple[dict[str, Any], ...] | None = field(default=None, hash=False)
    creation_date: int | float | None = None
    modification_date: int | float | None = None
    # kept verbatim from a card: its lorebook, and unknown keys in `data` and next to it
    character_book: dict[str, Any] | None = field(default=None, hash=False)
    extra: dict[str, Any] = field(default_factory=dict, hash=False)
    extra_top: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for name, kind in _KINDS.items():
            object.__setattr__(self, name, cards.check(kind, getattr(self, name), name))
        object.__setattr__(self, "characters", _characters(self.characters))
        for label, value in [("name", self.name), ("user_name", self.user_name)] + [
                (f"characters[{i}].name", c.name) for i, c in enumerate(self.characters)]:
            if not value.strip() or "\n" in value:
                raise InvalidRequest(f"persona {label} must be a non-empty single line, got {value!r}", param=label)
        if self.format not in FORMATS:
            raise InvalidRequest(f"persona format must be one of {', '.join(FORMATS)}, got {self.format!r}",
                                 param="format")
        speakers = self.speakers()
        if len(set(speakers)) != len(speakers):
            raise InvalidRequest(f"persona characters must have distinct names, got {', '.join(speakers)}",
                                 param="characters")
        if cards.PARLEY_EXTENSION in self.extensions:
            raise InvalidRequest("extensions.parley is parley's own card key; set format, user_name and "
                                 "characters instead", param="extensions")

    # ---- what the prompt builder calls ----------------------------------------------------------------------

    def substitute(self, text: str, user_name: str | None = None) -> str:
        """`text` with {{char}} -> name and {{user}} -> the user's name (any case; also <BOT> / <USER>)."""
        user = user_name or self.user_name
        return _MACRO.sub(lambda m: self.name if m.group(0).lower() in ("{{char}}", "<bot>") else user, text)

    def narrative(self, user_name: str | None = None) -> str:
        """The pinned text: description, personality, characters, scenario (module docstring); no creator notes."""
        parts = [self.description.strip()]
        if self.personality.strip():
            parts.append(f"{self.name}'s personality: {self.personality.strip()}")
        if self.characters:
            lines = [f"- {c.name}: {c.description.strip()}" if c.description.strip() else f"- {c.name}"
                     for c in self.characters]
            parts.append("\n".join(["Characters:", *lines]))
        if self.scenario.strip():
            parts.append(f"Scenario: {self.scenario.strip()}")
        return self.substitute("\n\n".join(p for p in parts if p), user_name)

    def examples(self, user_name: str | None = None) -> list[list[tuple[str, str]]]:
        """The example dialogue as blocks (one per <START>) of (speaker, line). A line that does not start with a
        known speaker's "Name:" continues the previous one; text before a block's first speaker is left out."""
        user = user_name or self.user_name
        known = {*self.speakers(), user}
        blocks: list[list[tuple[str, str]]] = [[]]
        for raw in self.example_dialogue.splitlines():
            if raw.strip().lower() == "<start>":
                blocks.append([])
                continue
            line = self.substitute(raw, user).rstrip()
            m = _SPEAKER_LINE.match(line)
            if m and m.group(1).strip() in known:
                blocks[-1].append((m.group(1).strip(), m.group(2).strip()))
            elif blocks[-1] and line.strip():
                speaker, said = blocks[-1][-1]
                blocks[-1][-1] = (speaker, f"{said}\n{line}" if said else line.strip())
        return [b for b in blocks if b]

    def greetings(self, user_name: str | None = None, *, group: bool = False) -> list[str]:
        """The first message, then the alternate greetings (then, with `group`, the group-only ones)."""
        texts = [self.first_message, *self.alternate_greetings]
        if group:
            texts += self.group_only_greetings
        return [self.substitute(t, user_name) for t in texts if t.strip()]

    def speakers(self) -> list[str]:
        """The characters the model speaks as: `name`, then the group scene's other characters."""
        return [self.name, *(c.name for c in self.characters)]

    def with_changes(self, **changes: Any) -> Persona:
        """A copy with `changes` applied and validated."""
        known = [f.name for f in dataclasses.fields(self)]
        for key in changes:
            if key not in known:
                raise InvalidRequest(f"persona has no field {key!r}; fields: {', '.join(known)}", param=key)
        return dataclasses.replace(self, **changes)


def _characters(value: Any) -> tuple[Character, ...]:
    if not isinstance(value, (list, tuple)):
        raise InvalidRequest(f"characters must be a list, got {type(value).__name__}", param="characters")
    out = []
    for i, c in enumerate(value):
        if isinstance(c, str):
            c = Character(c)
        elif isinstance(c, dict):
            unknown = sorted(set(c) - {"name", "description"})
            if unknown:
                raise InvalidRequest(f"characters[{i}] has an unknown key {unknown[0]!r}; known: name, description",
                                     param="characters")
            c = Character(cards.check("str", c.get("name", ""), f"characters[{i}].name"),
                          cards.check("str", c.get("description", ""), f"characters[{i}].description"))
        elif not isinstance(c, Character):
            raise InvalidRequest(f"characters[{i}] must be a name or a table with name and description, got "
                                 f"{type(c).__name__}", param="characters")
        out.append(c)
    return tuple(out)


def _build(fields: dict[str, Any], label: str) -> Persona:
    try:
        return Persona(**fields)
    except InvalidRequest as e:
        raise InvalidRequest(f"{label}: {e.message}", param=e.param) from None


# ---- character cards ----------------------------------------------------------------------------------------

def load_card(data: bytes, filename: str = "") -> Persona:
    """A SillyTavern / TavernAI card (V1, V2 or V3; JSON, or PNG when it starts with the PNG signature)."""
    return _build(cards.read_card(data, filename), filename or "the character card")


def card_json(p: Persona, spec: str = "v2") -> dict[str, Any]:
    """The persona as a card object: spec "v2" (chara_card_v2) or "v3" (chara_card_v3, every field kept)."""
    return cards.card_dict(p, spec)


def card_png(p: Persona, spec: str = "v2", image: bytes | None = None) -> bytes:
    """A PNG card: `image`'s pixels (or a small plain image) with a `chara` chunk, plus `ccv3` for spec "v3"."""
    return cards.card_png_bytes(p, spec, image)


# ---- the TOML persona file ----------------------------------------------------------------------------------

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
    return _build(doc, label)


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
    lines = ["# A parley persona: the format is described in parley.chat.personas"]
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


# ---- the registry -------------------------------------------------------------------------------------------

def default_dir() -> Path:
    """Where the user's personas live: $PARLEY_HOME/personas."""
    return data_dir() / "personas"


def file_name(persona_name: str) -> str:
    """A safe file stem for a persona's name: lower case letters, digits, '-' and '_' only."""
    stem = re.sub(r"[^\w-]+", "-", persona_name.strip().lower()).strip("-_.")[:MAX_NAME_CHARS].strip("-_")
    if not stem:
        raise InvalidRequest(f"persona name {persona_name!r} has no letters or digits to name its file with",
                             param="name")
    return stem


class Personas:
    """Bundled personas plus the user's files (`user_dir`, usually default_dir()); a user file of the same name
    replaces the bundled one. Names are file names without their suffix."""

    def __init__(self, user_dir: Path | None, bundled_dir: Path = BUNDLED_DIR):
        self.user_dir = Path(user_dir) if user_dir is not None else None
        self.bundled_dir = bundled_dir

    def _user_files(self) -> dict[str, Path]:
        out: dict[str, Path] = {}
        if self.user_dir is not None and self.user_dir.is_dir():
            for suffix in USER_SUFFIXES:
                for path in sorted(self.user_dir.glob(f"*{suffix}")):
                    if path.is_file():
                        out.setdefault(path.stem, path)
        return out

    def _files(self) -> dict[str, Path]:
        bundled = {p.stem: p for p in sorted(self.bundled_dir.glob("*.toml"))}
        return bundled | self._user_files()

    def names(self) -> list[str]:
        return sorted(self._files())

    def path(self, name: str) -> Path:
        """The file a persona comes from (a PNG card's image, say, for re-exporting it)."""
        files = self._files()
        if name not in files:
            known = ", ".join(sorted(files)) or "none"
            raise InvalidRequest(f"unknown persona {name!r}; known: {known}", param="persona")
        return files[name]

    def get(self, name: str) -> Persona:
        return read_file(self.path(name))

    def is_bundled(self, name: str) -> bool:
        return self.path(name).parent == self.bundled_dir

    def save(self, persona: Persona, *, overwrite: bool = False) -> Path:
        """Write `persona` into the user dir as <name>.toml, or as a V3 JSON card when TOML cannot hold it
        exactly (a null in its extensions, say). Returns the path. An existing user persona of that name is an
        error unless `overwrite`, which also removes its other files (x.png beside the new x.toml)."""
        try:
            text, suffix = persona_toml(persona), ".toml"
            exact = load_toml(text) == persona
        except InvalidRequest:
            exact = False
        if not exact:
            text, suffix = json.dumps(card_json(persona, "v3"), ensure_ascii=False, indent=2) + "\n", ".json"
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InvalidRequest(f"persona {persona.name!r} holds an unpaired UTF-16 surrogate "
                                 f"(U+{ord(e.object[e.start]):04X}) and cannot be saved; fix the card's text",
                                 param="persona") from None
        return self._write(persona, suffix, data, overwrite)

    def _write(self, persona: Persona, suffix: str, data: bytes, overwrite: bool) -> Path:
        """Write the user file <stem><suffix> for `persona` and remove its other files (save's rules)."""
        root = self._writable_dir()
        stem = file_name(persona.name)
        existing = [root / f"{stem}{s}" for s in USER_SUFFIXES if (root / f"{stem}{s}").exists()]
        if existing and not overwrite:
            raise InvalidRequest(f"a user persona {stem!r} exists ({existing[0]}); delete it first or save with "
                                 f"overwrite", param="name")
        target = root / f"{stem}{suffix}"
        if target.resolve().parent != root.resolve():
            raise InvalidRequest(f"persona name {persona.name!r} makes a path outside {root}", param="name")
        _write_atomic(target, data)
        for old in existing:
            if old != target:
                old.unlink()
        return target

    def import_card(self, data: bytes, filename: str = "", *, overwrite: bool = False) -> tuple[str, Persona]:
        """A character card file (JSON or PNG; `filename` names it in errors) saved as a user persona. Returns
        its name here (the file's stem: what `get` and a conversation's persona take) and the persona. A PNG
        card is kept byte for byte (its image, and every chunk of it); a JSON card is saved as `save` does."""
        persona = load_card(data, filename)
        if cards.is_png(data, filename):
            path = self._write(persona, ".png", data, overwrite)
        else:
            path = self.save(persona, overwrite=overwrite)
        return path.stem, persona

    def import_file(self, path: Path, *, overwrite: bool = False) -> tuple[str, Persona]:
        """import_card() of a file (its size checked before it is read)."""
        return self.import_card(_read_bytes(Path(path)), str(path), overwrite=overwrite)

    def export_card(self, name: str, spec: str = "v2", *, png: bool = False) -> bytes:
        """Persona `name` as a card file: JSON (UTF-8, indented) or, with `png`, a PNG card; a persona imported
        from a PNG keeps its image."""
        persona = self.get(name)
        if not png:
            return (json.dumps(card_json(persona, spec), ensure_ascii=False, indent=2) + "\n").encode("utf-8")
        source = self.path(name)
        image = _read_bytes(source) if source.suffix.lower() == ".png" else None
        return card_png(persona, spec, image)

    def origin(self, name: str) -> str:
        """"bundled", "user", or "user, replaces bundled" (a user file named like a bundled persona)."""
        if self.is_bundled(name):
            return "bundled"
        return "user, replaces bundled" if (self.bundled_dir / f"{name}.toml").is_file() else "user"

    def view(self, name: str, *, full: bool = True) -> dict[str, Any]:
        """Persona `name` for a listing (`full=False`) or a page: JSON-ready. `narrative` is the pinned text as
        the prompt holds it; `creator_notes` are shown for the reader and never in a prompt."""
        p = self.get(name)
        greetings = p.greetings(group=bool(p.characters))
        out: dict[str, Any] = {
            "name": name, "character": p.name, "characters": p.speakers(), "user_name": p.user_name,
            "format": p.format, "greeting": greetings[0] if greetings else None,
            "bundled": self.is_bundled(name), "origin": self.origin(name), "tags": list(p.tags),
        }
        if full:
            out.update({
                "greetings": greetings, "narrative": p.narrative(),
                "group": [{"name": c.name, "description": c.description} for c in p.characters],
                **{f: getattr(p, f) for f in ("description", "personality", "scenario", "first_message",
                                               "example_dialogue", "system_prompt", "post_history_instructions",
                                               "creator_notes", "creator", "character_version")},
                "alternate_greetings": list(p.alternate_greetings),
                "group_only_greetings": list(p.group_only_greetings), "extensions": p.extensions,
            })
        return out

    def listing(self) -> tuple[list[dict[str, Any]], list[str]]:
        """view(full=False) of every persona that loads, and one warning line for each file that does not."""
        views, problems = [], []
        for name in self.names():
            try:
                views.append(self.view(name, full=False))
            except InvalidRequest as e:
                problems.append(f"warning: persona {name!r} skipped: {e.message}")
        return views, problems

    def delete(self, name: str) -> Path:
        """Remove a user persona's file(s); a bundled persona it replaced comes back. Returns the path removed."""
        path = self.path(name)
        if path.parent != self.user_dir:
            raise InvalidRequest(f"persona {name!r} is bundled with parley and cannot be deleted", param="persona")
        for suffix in USER_SUFFIXES:
            (path.parent / f"{name}{suffix}").unlink(missing_ok=True)
        return path

    def _writable_dir(self) -> Path:
        if self.user_dir is None:
            raise InvalidRequest("no user persona directory to save into (set PARLEY_HOME)", param="persona")
        self.user_dir.mkdir(parents=True, exist_ok=True)
        return self.user_dir


def read_file(path: Path) -> Persona:
    """A persona file: *.toml (the persona format) or a card (*.json, *.png)."""
    data = _read_bytes(path)
    if path.suffix.lower() != ".toml":
        return load_card(data, str(path))
    try:
        return load_toml(data.decode("utf-8"), str(path))
    except UnicodeDecodeError as e:
        raise InvalidRequest(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})", param="persona") from None


def _read_bytes(path: Path) -> bytes:
    """A persona or card file's bytes, its size checked first (errors name the file)."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            cards.check_size(size, str(path))
        return path.read_bytes()
    except OSError as e:
        raise InvalidRequest(f"cannot read persona file {path}: {e.strerror}", param="persona") from None


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = ["Character", "FORMATS", "Persona", "Personas", "card_json", "card_png", "default_dir", "file_name",
           "load_card", "load_toml", "persona_toml", "read_file"]
