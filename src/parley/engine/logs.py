"""Route llama.cpp's log lines into Python logging ("parley.llama"): errors as errors, the rest as debug.

llama-cpp-python's own callback maps ggml's log levels with an outdated table and prints warnings to stderr;
PARLEY_LLAMA_LOG=1 prints every line instead (for debugging the engine).
"""

from __future__ import annotations

import ctypes
import os
import sys

import llama_cpp.llama_cpp as llc

_GGML_ERROR = 4
_GGML_WARN = 3
_installed = None
log_name = "parley.llama"


def install() -> None:
    global _installed
    if _installed is not None:
        return
    import logging

    log = logging.getLogger(log_name)
    verbose = bool(os.environ.get("PARLEY_LLAMA_LOG"))

    @llc.llama_log_callback
    def _callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        if verbose:
            sys.stderr.write(text.decode("utf-8", errors="replace"))
        elif level == _GGML_ERROR:
            log.error("%s", text.decode("utf-8", errors="replace").rstrip())
        elif level == _GGML_WARN:
            log.debug("%s", text.decode("utf-8", errors="replace").rstrip())

    _installed = _callback  # keep a reference: llama.cpp holds the pointer
    llc.llama_log_set(_callback, ctypes.c_void_p(0))
