"""Settings: every knob of a loaded parley, assembled above the layers from the section each layer declares.

    parley.load(kv_size=8192, deterministic=True)     # the Python API takes the flat field names
    parley chat --kv-size 8192 --deterministic        # the CLI flags are generated from the same fields
    Settings.from_env().replace(threads=1)            # environment fallbacks: PARLEY_MODEL, PARLEY_HOME, PARLEY_DB_URL

Each layer owns its section, next to its code: engine/settings.py (EngineSettings), scheduler/settings.py
(SchedulerSettings), documents/settings.py (DocumentSettings), text/settings.py (TemplateSettings). Each reads
only its own (`settings.engine`, `settings.scheduler`, ...); nothing below this module imports it. Here: the data
directory (`home`), the store switch, and the sections. Names are unique across sections (config.leaves()
refuses a duplicate at import), so the flat names stay the one public spelling: `replace(kv_size=...)` routes each
to its section, an unknown one is an error listing the known ones. The machinery (flags, checks) is config.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parley import config
from parley.cluster.settings import RaySettings
from parley.config import check, section, setting
from parley.documents.settings import DocumentSettings
from parley.engine.settings import EngineSettings
from parley.models.settings import ModelSettings
from parley.paths import data_dir
from parley.scheduler.settings import SchedulerSettings
from parley.text.settings import TemplateSettings
from parley.upstream.settings import UpstreamSettings


@dataclass(frozen=True, slots=True)
class Settings:
    models: ModelSettings = section(ModelSettings)
    engine: EngineSettings = section(EngineSettings)
    template: TemplateSettings = section(TemplateSettings)
    scheduler: SchedulerSettings = section(SchedulerSettings)
    documents: DocumentSettings = section(DocumentSettings)
    upstreams: UpstreamSettings = section(UpstreamSettings)
    ray: RaySettings = section(RaySettings)
    home: str | None = setting(None, "--home", metavar="DIR", env="PARLEY_HOME",
                               help="data directory: conversations (parley.db), KV cache, personas, skills "
                                    "(default: $PARLEY_HOME, else ~/.local/share/parley)")
    db_url: str | None = setting(None, "--db-url", metavar="URL", env="PARLEY_DB_URL",
                                 help="keep conversations and documents in this PostgreSQL database "
                                      "(postgresql://user:password@host:5432/name, psycopg needed: pip install "
                                      "'parley[postgres]'), which several parley front ends can share (default: "
                                      "SQLite, $PARLEY_HOME/parley.db)")
    store: bool = setting(True, hidden=True,
                          help="keep conversations in $PARLEY_HOME/parley.db (False: in memory, gone at exit)")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            want = f.metadata.get("section")
            if want is not None and not isinstance(getattr(self, f.name), want):
                raise TypeError(f"Settings.{f.name} must be of type {want.__name__}, got {getattr(self, f.name)!r}")
        check(self)

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes` by their flat names (kv_size=..., threads=...), each checked by its section."""
        return config.replace(self, **changes)

    @classmethod
    def from_env(cls, **changes: Any) -> Settings:
        """Defaults, then environment fallbacks (PARLEY_MODEL, PARLEY_HOME), then `changes` (flat names)."""
        return config.from_args(argparse.Namespace(), cls, **changes)

    @classmethod
    def at_home(cls, home: str | os.PathLike | None) -> Settings:
        """from_env(), with `home` as the data directory when given (else $PARLEY_HOME, else the default)."""
        return cls.from_env(**({"home": str(home)} if home else {}))

    @property
    def data_dir(self) -> Path:
        return Path(self.home).expanduser() if self.home else data_dir()

    @property
    def store_target(self) -> str:
        """Where conversations are kept: the PostgreSQL URL (--db-url), else $PARLEY_HOME/parley.db."""
        return self.db_url or str(self.data_dir / "parley.db")


NAMES = config.names(Settings)  # every flat name, once (raises at import when two sections declare one)
