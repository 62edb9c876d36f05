"""Persona files and their registry: character cards (`load_card`, `card_json`, `card_png`; the formats in
`parley.chat.cards`), the TOML persona file (`parley.chat.persona_toml`), and `Personas`, the bundled personas
(src/parley/data/personas) plus the user's ($PARLEY_HOME/personas).

Contract:
- `Personas` is a `parley.registry.FileRegistry` of *.toml, *.json and *.png files (in that order when two
  user files share a name): names, get, origin, delete and the listing's warnings are the registry's. Here:
  `save` (a TOML file, or a V3 JSON card when TOML cannot hold the persona exactly), `import_card` (a PNG card is
  kept as it is, image and all; a JSON card is saved as `save` does), `export_card` (JSON, or PNG keeping an
  imported image), and `view` / `listing` (plain dicts, JSON-ready).
- A saved persona's file is named after its character (`file_name`: lower case, letters, digits, '-', '_');
  its registry name is that file's name without the suffix.
- Every error is an `InvalidRequest` / `LimitExceeded` with one line naming the file and the field.

The model (`Persona`, `Character`) lives in `parley.chat.persona`; this module exports it too, with
`load_toml` / `persona_toml`, so callers import every persona name from here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from parley.chat import cards
from parley.chat.persona import FORMATS, Character, Persona, build
from parley.chat.persona_toml import load_toml, persona_toml
from parley.errors import InvalidRequest
from parley.paths import data_dir
from parley.registry import FileRegistry, decode_utf8, read_capped

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "data" / "personas"
USER_SUFFIXES = (".toml", ".json", ".png")      # when two user files share a name, the first of these wins
MAX_NAME_CHARS = 64                              # of a file name made from a persona's name
MAX_FILE_BYTES = cards.MAX_CARD_BYTES


# ---- character cards ----------------------------------------------------------------------------------------

def load_card(data: bytes, filename: str = "") -> Persona:
    """A SillyTavern / TavernAI card (V1, V2 or V3; JSON, or PNG when it starts with the PNG signature)."""
    return build(cards.read_card(data, filename), filename or "the character card")


def card_json(p: Persona, spec: str = "v2") -> dict[str, Any]:
    """The persona as a card object: spec "v2" (chara_card_v2) or "v3" (chara_card_v3, every field kept)."""
    return cards.card_dict(p, spec)


def card_png(p: Persona, spec: str = "v2", image: bytes | None = None) -> bytes:
    """A PNG card: `image`'s pixels (or a small plain image) with a `chara` chunk, plus `ccv3` for spec "v3"."""
    return cards.card_png_bytes(p, spec, image)


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


class Personas(FileRegistry[Persona]):
    """Bundled personas plus the user's files (`user_dir`, usually default_dir()); a user file of the same name
    replaces the bundled one. Names are file names without their suffix."""

    def __init__(self, user_dir: Path | None, bundled_dir: Path = BUNDLED_DIR, *, shared=None):
        super().__init__("persona", user_dir, bundled_dir, suffixes=USER_SUFFIXES, load=_decode,
                         max_bytes=MAX_FILE_BYTES, shared=shared)

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
        return self.write(file_name(persona.name), suffix, data, overwrite=overwrite)

    def import_card(self, data: bytes, filename: str = "", *, overwrite: bool = False) -> tuple[str, Persona]:
        """A character card file (JSON or PNG; `filename` names it in errors) saved as a user persona. Returns
        its name here (the file's stem: what `get` and a conversation's persona take) and the persona. A PNG
        card is kept byte for byte (its image, and every chunk of it); a JSON card is saved as `save` does."""
        persona = load_card(data, filename)
        if cards.is_png(data, filename):
            path = self.write(file_name(persona.name), ".png", data, overwrite=overwrite)
        else:
            path = self.save(persona, overwrite=overwrite)
        return path.stem, persona

    def import_file(self, path: Path, *, overwrite: bool = False) -> tuple[str, Persona]:
        """import_card() of a file (its size checked before it is read)."""
        path = Path(path)
        return self.import_card(read_capped(path, MAX_FILE_BYTES, "persona"), str(path), overwrite=overwrite)

    def export_card(self, name: str, spec: str = "v2", *, png: bool = False) -> bytes:
        """Persona `name` as a card file: JSON (UTF-8, indented) or, with `png`, a PNG card; a persona imported
        from a PNG keeps its image."""
        persona = self.get(name)
        if not png:
            return (json.dumps(card_json(persona, spec), ensure_ascii=False, indent=2) + "\n").encode("utf-8")
        source = self.path(name)
        image = read_capped(source, MAX_FILE_BYTES, "persona") if source.suffix.lower() == ".png" else None
        return card_png(persona, spec, image)

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
        return self.each(lambda name: self.view(name, full=False))


def read_file(path: Path) -> Persona:
    """A persona file: *.toml (the persona format) or a card (*.json, *.png); its size checked first."""
    path = Path(path)
    return _decode(path, read_capped(path, MAX_FILE_BYTES, "persona"))


def _decode(path: Path, data: bytes) -> Persona:
    if path.suffix.lower() != ".toml":
        return load_card(data, str(path))
    return load_toml(decode_utf8(data, path, "persona"), str(path))


__all__ = ["Character", "FORMATS", "Persona", "Personas", "card_json", "card_png", "default_dir", "file_name",
           "load_card", "load_toml", "persona_toml", "read_file"]
