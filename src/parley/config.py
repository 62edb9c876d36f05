"""The settings machinery: a dataclass field that knows its flag, its help and its range (`setting()`), and what
is generated from such fields: the argparse flags (`add_flags()`), the dataclass back from parsed flags and the
environment (`from_args()`), the range checks (`check()`) and a field's flag for error messages (`flag()`).

A settings class is a frozen dataclass of `setting()` fields, or of `section()` fields each holding one such
class (parley.settings.Settings assembles the layers' sections that way). Field names are unique across the
sections (`leaves()` refuses a duplicate), so a flat name alone says where it lives: `build()` and `replace()`
route `kv_size=...` to the section that declares it, and the flags and error messages use the flat names too.

A leaf: it imports nothing of parley but parley.errors, so every layer can declare its own section with it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
from dataclasses import Field, field
from typing import Any

from parley.errors import InvalidRequest

MiB = 1 << 20


def setting(default: Any, *flags: str, help: str, least: float | None = None, metavar: str | None = None,
            choices: tuple | None = None, env: str | None = None, hidden: bool = False) -> Any:
    """A dataclass field with what the CLI and the checks need to know about it."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("settings defaults are immutable (use a tuple)")
    return field(default=default, metadata={"flags": flags, "help": help, "least": least, "metavar": metavar,
                                            "choices": choices, "env": env, "hidden": hidden})


def section(cls: type) -> Any:
    """A field holding a whole settings class (a layer's section), its defaults unless given."""
    return field(default_factory=cls, metadata={"section": cls})


@functools.cache
def leaves(cls: type) -> tuple[tuple[str | None, Field], ...]:
    """Every setting of `cls` as (section field name or None, field), sections expanded in declaration order.
    Raises TypeError when two of them (or a setting and a section) share a name: flat names must say where
    they live."""
    out: list[tuple[str | None, Field]] = []
    for f in dataclasses.fields(cls):
        sub = f.metadata.get("section")
        out += [(f.name, g) for g in dataclasses.fields(sub)] if sub is not None else [(None, f)]
    names = [f.name for _, f in out] + [f.name for f in dataclasses.fields(cls) if f.metadata.get("section")]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise TypeError(f"{cls.__name__}: setting names must be unique across its sections; twice: "
                        f"{', '.join(twice)}")
    return tuple(out)


def names(cls: type) -> tuple[str, ...]:
    """The flat names `cls` takes (build(), replace(), the keyword arguments of parley.load())."""
    return tuple(f.name for _, f in leaves(cls))


def _route(cls: type, changes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Split flat `changes` into top-level fields (a section given whole included) and per-section changes."""
    where = {f.name: sec for sec, f in leaves(cls)}
    top_level = {f.name for f in dataclasses.fields(cls)}
    top: dict[str, Any] = {}
    per: dict[str, dict[str, Any]] = {}
    for name, value in changes.items():
        if name in top_level:
            top[name] = value
        elif name in where:
            per.setdefault(where[name], {})[name] = value
        else:
            raise TypeError(f"unknown setting {name!r}; known: {', '.join(names(cls))}")
    return top, per


def build(cls: type, **changes: Any):
    """`cls` from flat names: each goes to the section that declares it; the rest keep their defaults."""
    top, per = _route(cls, changes)
    for name, values in per.items():
        base = top.get(name)
        sub = {f.name: f for f in dataclasses.fields(cls)}[name].metadata["section"]
        top[name] = dataclasses.replace(base, **values) if base is not None else sub(**values)
    return cls(**top)


def replace(obj, **changes: Any):
    """A copy of `obj` with flat `changes`, each applied to the section that declares it (checked again)."""
    top, per = _route(type(obj), changes)
    for name, values in per.items():
        top[name] = dataclasses.replace(top.get(name, getattr(obj, name)), **values)
    return dataclasses.replace(obj, **top)


def flag(name: str, cls: type) -> str:
    """The command-line spelling of a setting of `cls` (any of its sections), for error messages."""
    f = {f.name: f for _, f in leaves(cls)}.get(name)
    flags = f.metadata.get("flags") if f is not None else None
    return flags[-1] if flags else name


def check(s) -> None:
    """Every field's lower bound (`least`), for any settings dataclass (its own fields; a section checks its own
    when it is made). Refuses a bad value naming the field and its flag."""
    for f in dataclasses.fields(s):
        least = f.metadata.get("least")
        value = getattr(s, f.name)
        if least is None or (value is None and f.default is None):
            continue
        number = (int, float) if f.type.startswith("float") else int
        if not isinstance(value, number) or isinstance(value, bool) or not value >= least:
            kind = "a number" if number is not int else "an integer"
            raise InvalidRequest(f"{f.name} ({flag(f.name, type(s))}) must be {kind} >= {least}, got {value!r}",
                                 param=f.name)


# ---- the command line --------------------------------------------------------------------------------------
_KINDS = {"int": int, "int | None": int, "float": float, "float | None": float, "str": str, "str | None": str}


def add_flags(parser, cls: type, title: str | None = None, *, skip: tuple[str, ...] = (),
              only: tuple[str, ...] | None = None) -> None:
    """Add the flags of a settings dataclass (its sections' too) to `parser`, in a group named `title`; `only`
    names the few to add. A flag that is not given leaves its field out of the namespace, so from_args() keeps
    the dataclass default (and the environment fallback)."""
    g = parser.add_argument_group(title) if title else parser
    for _, f in leaves(cls):
        md = f.metadata
        if md.get("hidden") or not md.get("flags") or f.name in skip or (only is not None and f.name not in only):
            continue
        common = {"dest": f.name, "default": argparse.SUPPRESS, "help": md["help"]}
        if f.type == "bool":
            g.add_argument(*md["flags"], action="store_true", **common)
        elif f.type.startswith("tuple"):
            g.add_argument(*md["flags"], action="append", metavar=md.get("metavar"), **common)
        else:
            g.add_argument(*md["flags"], type=_KINDS[f.type], metavar=md.get("metavar"), choices=md.get("choices"),
                           **common)


def from_args(args: argparse.Namespace, cls: type, **changes: Any):
    """A settings dataclass from parsed flags: flags given, then environment fallbacks, then the defaults;
    `changes` (flat names) win over all of them."""
    given, env = {}, {}
    for _, f in leaves(cls):
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            given[f.name] = tuple(value) if f.type.startswith("tuple") else value
        var = f.metadata.get("env")
        if var and os.environ.get(var):
            env[f.name] = os.environ[var]
    return build(cls, **{**env, **given, **changes})
