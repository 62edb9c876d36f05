"""Where parley keeps its data: $PARLEY_HOME, else $XDG_DATA_HOME/parley, else ~/.local/share/parley.

check_data_dir() looks at that directory before anything is written there: a directory parley can write is
"writable"; one it can only read (a read-only mount, no write permission) is used read-only (the caller writes
nothing and says so once); anything else (a file, a directory it cannot create or list) is a ParleyError of one
line naming the path and the fix.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from parley.errors import ParleyError

FIX = "set PARLEY_HOME to a directory you can write, or pass --disk-cache-mb 0 to keep no disk cache"


class DataDirError(ParleyError):
    """The data directory cannot be used at all."""

    status = 500
    code = "data_dir_unusable"


def data_dir() -> Path:
    home = os.environ.get("PARLEY_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "parley"


def check_data_dir(path: Path) -> bool:
    """True when `path` is a directory parley can write (created if missing), False when it can only be read.
    Raises DataDirError when it is not a directory or cannot be created or listed."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise DataDirError(f"the data directory {path} is not a directory (a file is in the way): {FIX}",
                           param="PARLEY_HOME") from None
    except OSError as e:
        if not path.is_dir():
            raise DataDirError(f"cannot create the data directory {path}: {e.strerror or e}; {FIX}",
                               param="PARLEY_HOME") from None
    if not path.is_dir():
        raise DataDirError(f"the data directory {path} is not a directory: {FIX}", param="PARLEY_HOME")
    try:
        os.listdir(path)
    except OSError as e:
        raise DataDirError(f"cannot read the data directory {path}: {e.strerror or e}; {FIX}",
                           param="PARLEY_HOME") from None
    return can_write(path)


def can_write(path: Path) -> bool:
    """Whether a file can be created in directory `path` (tried, not guessed from mode bits: root, read-only
    mounts and ACLs all make those lie)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".parley-probe-", dir=path)
    except OSError:  # EROFS, EACCES, ENOSPC, ...: whatever the reason, nothing can be written there now
        return False
    os.close(fd)
    os.unlink(name)
    return True
