"""Where parley keeps its data: $PARLEY_HOME, else $XDG_DATA_HOME/parley, else ~/.local/share/parley."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    home = os.environ.get("PARLEY_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "parley"
