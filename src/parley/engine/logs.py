"""Route llama.cpp's log lines into Python logging ("parley.llama"): errors as errors, the rest as debug; and let
a caller tap the lines its own thread's llama.cpp call writes (quantize's progress reads them).

llama-cpp-python's own callback maps ggml's log levels with an outdated table and prints warnings to stderr;
PARLEY_LLAMA_LOG=1 prints every line instead (for debugging the engine).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from collections.abc import Callable, Iterator

import llama_cpp.llama_cpp as llc

GGML_INFO = 2
GGML_WARN = 3
GGML_ERROR = 4
_installed = None
log_name = "parley.llama"


class _Tap:
    __slots__ = ("fn", "error")

    def __init__(self, fn: Callable[[int, str], None]):
        self.fn = fn
        self.error: BaseException | None = None


# thread id -> its taps. Replaced whole under the lock, never changed in place, so the callback reads it
# without taking the lock (it runs inside llama.cpp, on whatever thread logs).
_taps: dict[int, tuple[_Tap, ...]] = {}
_taps_lock = threading.Lock()


def install() -> None:
    global _installed
    if _installed is not None:
        return
    import logging

    log = logging.getLogger(log_name)
    verbose = bool(os.environ.get("PARLEY_LLAMA_LOG"))

    @llc.llama_log_callback
    def _callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        piece = text.decode("utf-8", errors="replace")
        for tap in _taps.get(threading.get_ident(), ()):
            if tap.error is None:
                try:
                    tap.fn(level, piece)
                except BaseException as e:  # ctypes would print and drop it: tap() raises it after the call
                    tap.error = e
        if verbose:
            sys.stderr.write(piece)
        elif level == GGML_ERROR:
            log.error("%s", piece.rstrip())
        elif level == GGML_WARN:
            log.debug("%s", piece.rstrip())

    _installed = _callback  # keep a reference: llama.cpp holds the pointer
    llc.llama_log_set(_callback, ctypes.c_void_p(0))


@contextlib.contextmanager
def tap(fn: Callable[[int, str], None]) -> Iterator[None]:
    """Also hand `fn(level, piece)` what llama.cpp logs on this thread until the block ends; the routing above
    goes on as before. A piece is one call of llama.cpp's logger: a whole line, or a part of one (some lines are
    written in several calls). Only this thread's pieces, so two threads each tapping their own llama.cpp call
    (two quantizes, a model load beside one) never see each other's. `fn` runs inside llama.cpp's call, where
    an exception would be lost: the first one it raises ends its tap and is raised here when the block ends."""
    install()
    me = threading.get_ident()
    mine = _Tap(fn)
    global _taps
    with _taps_lock:
        _taps = {**_taps, me: (*_taps.get(me, ()), mine)}
    try:
        yield
    finally:
        with _taps_lock:
            rest = tuple(t for t in _taps.get(me, ()) if t is not mine)
            _taps = {k: v for k, v in _taps.items() if k != me} | ({me: rest} if rest else {})
    if mine.error is not None:
        raise mine.error
