"""The personas and skills services (`parley.personas`, `parley.skills`): the bundled files plus the user's own
($PARLEY_HOME/personas, $PARLEY_HOME/skills), as plain values: Persona and Skill objects (frozen), and the
JSON-ready dicts `view()` and `listing()` give. Reading and writing files blocks: an edge that serves an event
loop calls these in a worker thread (api/guard.py checks).

`registries(home)` gives both without loading a model (what `parley personas` / `parley skills` use).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parley.api.guard import LoopGuard, blocking
from parley.chat.personas import Persona, Personas
from parley.chat.skills import Skill, Skills
from parley.registry import SharedFiles
from parley.settings import Settings
from parley.store.db import Store


class _Registry:
    """What both registries offer: the names, one entry, its JSON-ready view, and a listing of every entry with a
    warning line for each user file that does not load."""

    def __init__(self, registry, guard: LoopGuard):
        self._reg = registry
        self._guard = guard

    @blocking
    def names(self) -> list[str]:
        return self._reg.names()

    @blocking
    def view(self, name: str, **options) -> dict[str, Any]:
        return self._reg.view(name, **options)

    @blocking
    def listing(self) -> tuple[list[dict[str, Any]], list[str]]:
        return self._reg.listing()


class PersonasService(_Registry):
    @blocking
    def get(self, name: str) -> Persona:
        """The persona a name gives (an unknown name is an error listing the known ones)."""
        return self._reg.get(name)

    @blocking
    def save(self, persona: Persona, *, overwrite: bool = False) -> str:
        """Keep `persona` with the user's personas; returns its name."""
        return self._reg.save(persona, overwrite=overwrite).stem

    @blocking
    def import_card(self, data: bytes, filename: str = "", *, overwrite: bool = False) -> tuple[str, Persona]:
        """A character card file (SillyTavern JSON or PNG) saved with the user's personas: (its name, it)."""
        return self._reg.import_card(data, filename, overwrite=overwrite)

    @blocking
    def import_file(self, path: str | Path, *, overwrite: bool = False) -> tuple[str, Persona]:
        return self._reg.import_file(Path(path), overwrite=overwrite)

    @blocking
    def export_card(self, name: str, spec: str = "v2", *, png: bool = False) -> bytes:
        return self._reg.export_card(name, spec, png=png)

    @blocking
    def delete(self, name: str) -> bool:
        """Delete a user persona; True when a bundled persona of the same name is back."""
        self._reg.delete(name)
        return name in self._reg.names()


class SkillsService(_Registry):
    @blocking
    def get(self, name: str) -> Skill:
        """The skill a name gives (an unknown name is an error listing the known ones)."""
        return self._reg.get(name)

    @blocking
    def describe(self, *, warnings: bool = True) -> str:
        return self._reg.describe(warnings=warnings)


@dataclass(frozen=True, slots=True)
class Registries:
    personas: PersonasService
    skills: SkillsService


def file_registries(s: Settings, store) -> tuple[Personas, Skills]:
    """The personas and skills of these settings. The user's personas are in $PARLEY_HOME/personas, or, with a
    shared database (--db-url), in the store (mirrored under $PARLEY_HOME/shared/personas; the local files are
    copied in once), so every front end on it lists and serves the same ones. Skills are files of each process
    ($PARLEY_HOME/skills)."""
    d = s.data_dir
    if s.db_url and store is not None:
        personas = Personas(d / "personas", shared=SharedFiles(store, "persona", d / "shared" / "personas"))
    else:
        personas = Personas(d / "personas")
    return personas, Skills(d / "skills")


def open_registries(s: Settings, guard: LoopGuard, store=None) -> Registries:
    personas, skills = file_registries(s, store)
    return Registries(PersonasService(personas, guard), SkillsService(skills, guard))


def registries(home: str | os.PathLike | None = None) -> Registries:
    """The personas and skills without loading a model; a loaded Parley has the same as `.personas` and
    `.skills`."""
    s = Settings.at_home(home)
    store = Store(s.store_target) if s.db_url else None
    return open_registries(s, LoopGuard(), store)
