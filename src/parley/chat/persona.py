"""A persona: who the model speaks as, and the narrative pinned at the top of the prompt.

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
- Every error is an `InvalidRequest` with one line naming the field; `build(fields, label)` puts the file's name
  first. Files holding personas: `parley.chat.personas` (cards, the TOML file, the registry).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from parley.chat import cards
from parley.errors import InvalidRequest

FORMATS = ("template", "transcript")
DEFAULT_USER = "User"

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


def build(fields: dict[str, Any], label: str) -> Persona:
    """Persona(**fields), its errors prefixed with `label` (the file or card they come from)."""
    try:
        return Persona(**fields)
    except InvalidRequest as e:
        raise InvalidRequest(f"{label}: {e.message}", param=e.param) from None


__all__ = ["DEFAULT_USER", "FORMATS", "Character", "Persona", "build"]
