"""Large buffers out of the C heap, so freed KV states give their memory back.

KV states moved between the context, the RAM tier and disk are buffers of 1-150 MB. glibc serves such sizes
with mmap at first, but each free of an mmapped chunk raises its mmap threshold to that chunk's size (up to
32 MB), after which buffers of that size come from the heap, whose freed space fragments and is not returned:
the server's RSS then grows beyond what the RAM tier holds (`parley bench soak --quick`: 79 MB of growth with
the tier holding 55 MB; with a fixed 1 MiB threshold, 51 MB with the tier holding 54 MB). Fixing the threshold
turns the adjustment off. glibc only; elsewhere (musl, macOS) nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger("parley.kv")

M_MMAP_THRESHOLD = -3          # glibc's mallopt parameter
THRESHOLD_BYTES = 1 << 20      # buffers of 1 MiB and more are mapped, and unmapped when freed
_done = False


def map_large_buffers() -> bool:
    """Once per process: buffers >= THRESHOLD_BYTES are mmapped (and returned on free). False when not glibc."""
    global _done
    if _done:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False
    if not ok:
        log.debug("mallopt(M_MMAP_THRESHOLD) was refused")
    _done = ok
    return ok
