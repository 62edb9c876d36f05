"""Ctrl-C while a model loads: stop cleanly instead of "Exception ignored on calling ctypes callback function".

llama.cpp calls back into Python while it loads (log lines, progress); a KeyboardInterrupt raised inside such a
callback is swallowed by ctypes and the load carries on. So while a model loads, SIGINT only sets a flag; the
progress callback tells llama.cpp to abort when it is set, and the load raises KeyboardInterrupt once it is back
in Python, where the CLI turns it into one line.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Deferred:
    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self, *_args) -> None:
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise KeyboardInterrupt now if Ctrl-C was pressed since the deferral began."""
        if self._event.is_set():
            raise KeyboardInterrupt


@contextlib.contextmanager
def deferred_sigint() -> Iterator[Deferred]:
    """SIGINT sets a flag instead of raising (main thread only; elsewhere signals do not arrive anyway)."""
    flag = Deferred()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    try:
        previous = signal.signal(signal.SIGINT, flag.set)
    except ValueError:  # not the main interpreter
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
    flag.check()
