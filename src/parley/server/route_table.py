"""The app's routes as one flat table (path template, compiled path, methods), for the middlewares that must
know a request's route before FastAPI routes it: the /metrics route label (for a 401, 413 or 421 that never
reaches a route too) and HEAD on GET routes. FastAPI (0.165) nests each included router in `app.router.routes`,
so the table reads the routers themselves. Mounts (the docs' static files) are entries without methods; the web
page, served by a mount that takes only its own paths, gets a label of its own (`label`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RouteEntry:
    path: str                  # the template: /v1/conversations/{conversation_id}
    regex: re.Pattern
    methods: frozenset[str]


class RouteTable:
    def __init__(self, routes):
        self.entries = [RouteEntry(r.path, r.path_regex, frozenset(getattr(r, "methods", None) or ()))
                        for r in routes if hasattr(r, "path") and hasattr(r, "path_regex")]
        self.labels: list[tuple[str, Callable[[str], bool]]] = []

    @classmethod
    def of(cls, app, routers) -> RouteTable:
        return cls([*app.router.routes, *(r for router in routers for r in router.routes)])

    @property
    def paths(self) -> set[str]:
        return {e.path for e in self.entries}

    def label(self, name: str, matches: Callable[[str], bool]) -> None:
        """Name the paths no route template names (`template` falls back to it)."""
        self.labels.append((name, matches))

    def route_of(self, path: str) -> str | None:
        """The template of the first route whose path matches (whatever its methods), else a label's name."""
        found = next((e.path for e in self.entries if e.regex.match(path)), None)
        return found or next((name for name, matches in self.labels if matches(path)), None)

    def has(self, path: str, method: str) -> bool:
        return any(method in e.methods and e.regex.match(path) for e in self.entries)
