"""The `list` and `show` verbs every registry's command has (`parley personas`, `parley skills`, and next the
model presets): the facade registry's JSON-ready views printed as JSON (`--json`) or as text, and one warning
line on standard error for each file that does not load. Each command says only what its columns and its
text page hold."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

View = dict[str, Any]
Column = tuple[str, Callable[[View], str]]      # a header, and the cell of one entry's view


def add_list_show(verbs, *, list_help: str, show_help: str) -> None:
    """`list [--json]` and `show NAME [--json]` under a command's verbs."""
    ls = verbs.add_parser("list", help=list_help)
    ls.add_argument("--json", action="store_true")
    show = verbs.add_parser("show", help=show_help)
    show.add_argument("name")
    show.add_argument("--json", action="store_true")


def list_entries(listing: tuple[list[View], list[str]], as_json: bool, columns: Sequence[Column]) -> int:
    """A registry's `listing()`: the warnings, then the views as JSON or as a table of `columns`."""
    views, warnings = listing
    for w in warnings:
        print(w, file=sys.stderr)
    if as_json:
        print(json.dumps(views, indent=1, ensure_ascii=False))
        return 0
    rows = [[header for header, _ in columns], *([cell(v) for _, cell in columns] for v in views)]
    for line in table(rows):
        print(line)
    return 0


def show_entry(view: View, as_json: bool, text: Callable[[View], Iterable[str]]) -> int:
    """One entry's view as JSON, or as the lines `text` makes of it."""
    if as_json:
        print(json.dumps(view, indent=1, ensure_ascii=False))
        return 0
    for line in text(view):
        print(line)
    return 0


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns two spaces apart, each as wide as its widest cell but the last, which is not padded."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return [("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]).rstrip()
            for r in rows]

