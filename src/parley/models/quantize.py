"""Compress a GGUF model's weights to another type (q8_0, q4_k_m, ...) with llama.cpp's own quantizer, the one
in the bound library (`llama_model_quantize`), as `llama-quantize` does; and name a file's type for listings.

Before a byte is written: the source must read as a GGUF, the destination must not exist (never overwritten),
llama.cpp's dry run must accept the type for this model (it plans every tensor, fallbacks included, and says
what the output will weigh), and that size must fit in the destination's free disk space. llama.cpp writes to
a hidden `.<name>.<random>.partial` beside the destination; only a successful run is linked to its name, and a
failed or interrupted one is removed. Progress comes from llama.cpp's log, one line per tensor.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import llama_cpp.llama_cpp as llc

from parley.config import MiB
from parley.engine import logs
from parley.engine.gguf import read_metadata
from parley.engine.interrupt import deferred_sigint
from parley.errors import InvalidRequest, LimitExceeded, ModelError

_PREFIX = "LLAMA_FTYPE_MOSTLY_"
# general.file_type value -> its name as llama.cpp spells its constants ("Q4_K_M"); F32 is ALL_F32, not MOSTLY_
FILE_TYPES: dict[int, str] = {llc.LLAMA_FTYPE_ALL_F32: "F32"} | {
    getattr(llc, k): k.removeprefix(_PREFIX) for k in dir(llc) if k.startswith(_PREFIX)
}
# In the constants but not offered: this build's quantizer refuses NVFP4 as an output type, and the IQ1 / IQ2
# types and Q2_K_S need an importance matrix (llama-imatrix run over sample text), which parley does not make.
_NOT_OFFERED = {"NVFP4", "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "Q2_K_S"}
# the names users type (`--type q4_k_m`) -> llama.cpp's ftype
QUANT_TYPES: dict[str, int] = {
    name.lower(): value for value, name in sorted(FILE_TYPES.items(), key=lambda kv: kv[1])
    if name not in _NOT_OFFERED
}
_FLOAT = {"F32", "F16", "BF16"}  # file types whose weights are not quantized yet

# Room kept beyond llama.cpp's planned size: its figures are rounded to 0.01 MiB, and the file system needs
# blocks of its own. Small on purpose: the plan is per tensor, not a guess.
HEADROOM_FRACTION = 0.01
HEADROOM_MIN = 4 * MiB

_TENSOR_LINE = re.compile(r"\[\s*(\d+)\s*/\s*(\d+)\s*\]")  # "[  12/ 272] blk.0.attn_q.weight - ..."
_SIZE_LINE = re.compile(r"(model|quant) size\s*=\s*([0-9.]+) MiB")
_FAILED = "failed to quantize: "

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Quantized:
    """A finished quantize: the new file, its type (a QUANT_TYPES name), both sizes, and the wall time of the
    write. `requantized`: the source was already quantized (see quantize() for what that costs)."""

    path: Path
    qtype: str
    size_bytes: int
    src_size_bytes: int
    seconds: float
    requantized: bool


def file_type(meta: dict[str, object]) -> str:
    """The weight type of a GGUF file from its `general.file_type` (read_metadata's dict): "Q4_1", "Q8_0",
    "F16", ...; "unknown" when the file does not say (older converters), "unknown (N)" for a number this
    llama.cpp does not name."""
    value = meta.get("general.file_type")
    if not isinstance(value, int) or isinstance(value, bool):
        return "unknown"
    # llama.cpp ORs LLAMA_FTYPE_GUESSED in when it inferred the type from the tensors
    return FILE_TYPES.get(value & ~llc.LLAMA_FTYPE_GUESSED, f"unknown ({value})")


def quant_type(qtype: str) -> str:
    """`qtype` as a QUANT_TYPES name (case-insensitive), or an InvalidRequest listing them."""
    name = qtype.strip().lower() if isinstance(qtype, str) else None
    if name not in QUANT_TYPES:
        raise InvalidRequest(f"unknown quantization type {qtype!r}; known: {', '.join(QUANT_TYPES)}", param="type")
    return name


def needed_space(estimate: int) -> int:
    """The free bytes a quantize whose output is planned at `estimate` bytes must find: the estimate and
    HEADROOM (1%, at least 4 MiB)."""
    return estimate + max(HEADROOM_MIN, int(estimate * HEADROOM_FRACTION))


def check_free_space(estimate: int, free: int, directory: Path) -> None:
    """Refuse (LimitExceeded, both numbers named) an output planned at `estimate` bytes that `free` bytes in
    `directory` cannot hold with its headroom."""
    need = needed_space(estimate)
    if need > free:
        raise LimitExceeded(
            f"not enough free disk space in {directory}: the quantized copy needs about {_size(need)} "
            f"({need} bytes, its planned {_size(estimate)} and headroom), and {_size(free)} ({free} bytes) "
            "are free: free some space or write the copy to another disk",
            param="dst",
        )


def plan(src: str | os.PathLike[str], qtype: str) -> int:
    """The bytes llama.cpp's dry run says quantizing `src` to `qtype` will write (no file is written): its
    planned tensor data, with the fallbacks it takes for tensors whose rows do not fit the type's blocks, plus
    the source's metadata and padding, which the copy carries over. Raises what quantize() raises for a source
    llama.cpp cannot read or a type it cannot make for this model."""
    name = quant_type(qtype)
    src = Path(src)
    return _plan(src, name, requantize=file_type(read_metadata(src)) not in _FLOAT)


def _plan(src: Path, name: str, *, requantize: bool) -> int:
    params = _params(name, threads=1, requantize=requantize)
    params.dry_run = True
    pieces: list[str] = []
    # a dry run opens no output; /dev/null all the same, should a llama.cpp ever write one
    _run(src, Path(os.devnull), params, name, lambda _level, piece: pieces.append(piece))
    text = "".join(pieces)
    if "require an imatrix" in text:
        raise InvalidRequest(f"{name} needs an importance matrix for {src.name}, which parley does not make: "
                             "choose another type (q4_k_m, q5_k_m, q8_0, ...)", param="type")
    sizes = {kind: float(mib) * MiB for kind, mib in _SIZE_LINE.findall(text)}
    if set(sizes) != {"model", "quant"}:
        # llama.cpp's log no longer says it: the free-disk check cannot be made, so nothing is started
        raise ModelError(f"llama.cpp's dry run of {src.name} to {name} did not report the output size; "
                         "the free-disk check needs it (has llama.cpp's log format changed?)")
    rounding = 0.005 * MiB  # each figure is printed to 0.01 MiB
    header = max(0, src.stat().st_size - int(sizes["model"] - rounding))  # the source's metadata and padding
    return int(sizes["quant"] + rounding) + header


def quantize(src: str | os.PathLike[str], dst: str | os.PathLike[str], qtype: str, *, threads: int = 0,
             progress: Progress | None = None) -> Quantized:
    """Write `src`'s weights quantized to `qtype` (a QUANT_TYPES name) as the new file `dst`.

    Refused before anything is written: an unknown type (InvalidRequest listing them), a source that is not a
    GGUF (ModelError), an existing `dst` or a missing or read-only directory for it (InvalidRequest), a type
    llama.cpp's dry run cannot make for this model, and an output that does not fit the free disk space
    (LimitExceeded). `threads`: llama.cpp's quantizing threads, 0 for one per core this process may use.
    `progress(done, total)` is called once per tensor as llama.cpp finishes it (on the calling thread);
    whatever it raises stops the copy: the partial file is removed and the exception re-raised.

    Blocking: llama_model_quantize holds the calling thread for the whole run (about a second for the 135M
    embedded model, minutes for a 7B one) and cannot be stopped midway. Callers with a loop to keep alive (the
    server, the page) run it in a worker thread. Ctrl-C on the main thread is held until llama.cpp returns,
    then raises KeyboardInterrupt with the partial file removed.

    Requantizing, i.e. quantizing a file that is already quantized (the embedded model is Q4_1), needs
    llama.cpp's `allow_requantize`, which this sets for such a source. The copy keeps the source's rounding
    errors and adds its own: going up (Q4_1 -> Q8_0) wins no quality back, it only buys a larger file and
    other kernels; going down compounds both, and llama.cpp warns that it "can severely reduce quality
    compared to quantizing from 16bit or 32bit". Quantize from an F16 / BF16 / F32 file where there is one.
    """
    name = quant_type(qtype)
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
        raise InvalidRequest(f"threads must be a whole number >= 0 (0 = one per core), got {threads!r}",
                             param="threads")
    src, dst = Path(src), Path(dst)
    meta = read_metadata(src)
    if os.path.lexists(dst):
        raise InvalidRequest(f"{dst} already exists: parley never overwrites a file; choose another name or "
                             "remove it first", param="dst")
    directory = dst.parent
    if not directory.is_dir():
        raise InvalidRequest(f"the directory {directory} for {dst.name} does not exist: create it first",
                             param="dst")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise InvalidRequest(f"cannot write in {directory}: choose a directory you can write to", param="dst")
    requantize = file_type(meta) not in _FLOAT
    estimate = _plan(src, name, requantize=requantize)
    check_free_space(estimate, shutil.disk_usage(directory).free, directory)
    params = _params(name, threads=threads or _default_threads(), requantize=requantize)
    partial = directory / f".{dst.name}.{secrets.token_hex(4)}.partial"

    def on_piece(_level: int, piece: str) -> None:
        m = _TENSOR_LINE.match(piece)
        if m and progress is not None:
            progress(int(m[1]), int(m[2]))

    t0 = time.perf_counter()
    try:
        with deferred_sigint():  # a Ctrl-C raises KeyboardInterrupt here, once llama.cpp is back
            _run(src, partial, params, name, on_piece)
        _fsync(partial)
        _publish(partial, dst)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return Quantized(path=dst, qtype=name, size_bytes=dst.stat().st_size, src_size_bytes=src.stat().st_size,
                     seconds=time.perf_counter() - t0, requantized=requantize)


def _params(name: str, *, threads: int, requantize: bool) -> llc.llama_model_quantize_params:
    params = llc.llama_model_quantize_default_params()
    params.ftype = QUANT_TYPES[name]
    params.nthread = threads
    # llama.cpp refuses an already quantized source without it ("requantizing from type q4_1 is disabled"),
    # after writing part of the output
    params.allow_requantize = requantize
    return params


def _run(src: Path, out: Path, params: llc.llama_model_quantize_params, name: str,
         listen: Callable[[int, str], None]) -> None:
    """One llama_model_quantize call, its log tapped; a failure is a ModelError with llama.cpp's reason."""
    errors: list[str] = []

    def on_piece(level: int, piece: str) -> None:
        if level == logs.GGML_ERROR:
            errors.append(piece.strip())
        listen(level, piece)

    with logs.tap(on_piece):
        rc = llc.llama_model_quantize(os.fsencode(src), os.fsencode(out), ctypes.byref(params))
    if rc != 0:
        # llama.cpp logs the cause, then "llama_model_quantize: failed to quantize: <what>"
        reason = next((e.split(_FAILED, 1)[1] for e in reversed(errors) if _FAILED in e),
                      errors[-1] if errors else f"error {rc}")
        raise ModelError(f"llama.cpp could not quantize {src} to {name}: {reason}")


def _fsync(path: Path) -> None:
    # the data must be on disk before the name points at it, or a crash could leave a named, empty model
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(partial: Path, dst: Path) -> None:
    """Give the finished file its name without ever replacing one: a hard link fails if `dst` appeared
    meanwhile (another quantize to the same name), where a rename would silently overwrite it."""
    try:
        os.link(partial, dst)
    except FileExistsError:
        raise InvalidRequest(f"{dst} appeared while quantizing: parley never overwrites a file; "
                             "choose another name", param="dst") from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        # a file system without hard links (FAT, exFAT, some network shares): a rename, checked just before
        if os.path.lexists(dst):
            raise InvalidRequest(f"{dst} appeared while quantizing: parley never overwrites a file; "
                                 "choose another name", param="dst") from None
        os.rename(partial, dst)
        return
    partial.unlink()


def _default_threads() -> int:
    from parley.engine.llamacpp import default_threads  # the engine's rule: the cores this process may use

    return default_threads()


def _size(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 30 else f"{n / MiB:.1f} MiB"


__all__ = ["FILE_TYPES", "QUANT_TYPES", "Quantized", "check_free_space", "file_type", "needed_space", "plan",
           "quant_type", "quantize"]
