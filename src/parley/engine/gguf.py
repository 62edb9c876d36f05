"""Read the metadata header of a GGUF model file (pure Python, no llama.cpp), so parley can check a model
file and read its chat template before loading it.

Why by hand and not a library: `scripts/gguf-readers` times the fields parley needs (architecture, name,
context length, layers / heads / embedding, chat template) with each reader in a fresh process. The lowest of
four runs on this project's shared 2-core machines (December 2026; other work on them doubled or tripled any
of these figures at times); x20 includes the import, as a list of 20 models would:

                                  SmolLM2 135M (98 MB)          Gemma 3 270M (253 MB)
    reader                        one header  RSS     x20       one header  RSS     x20
    this module                   30 ms       +<1 MB  0.6 s     80 ms       +<1 MB  1.6 s
    gguf 0.19, GGUFReader         1.6 s       +160 MB 32 s      8.3 s       +530 MB 2.8 min
    llama.cpp, vocab_only load    60 ms       +19 MB  1.4 s     0.43 s      +34 MB  8.8 s

GGUFReader turns every element of every array (the 49k- and 262k-token vocabularies, the merges) into numpy
views; a vocab_only load builds llama.cpp's tokenizer. What they refuse (`scripts/gguf-readers --refusals`,
the cases of tests/test_gguf.py): llama.cpp all of it, but it returns NULL and writes the reason only to its
log; GGUFReader all but a string whose length runs past the end of the file, with numpy's own errors for a
truncated header ("When changing to a larger dtype...", IndexError). Both refuse one file this module lets
through, cut inside its tensor data with the header whole; llama.cpp refuses it when the engine loads it.
"""

from __future__ import annotations

import functools
import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

from parley.errors import ModelError

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)

# value type id -> struct format of a fixed-size scalar (little-endian)
_SCALARS: dict[int, str] = {
    0: "<B",  # uint8
    1: "<b",  # int8
    2: "<H",  # uint16
    3: "<h",  # int16
    4: "<I",  # uint32
    5: "<i",  # int32
    6: "<f",  # float32
    7: "<?",  # bool
    10: "<Q",  # uint64
    11: "<q",  # int64
    12: "<d",  # float64
}
_STRING = 8
_ARRAY = 9
TYPE_NAMES = {
    0: "uint8", 1: "int8", 2: "uint16", 3: "int16", 4: "uint32", 5: "int32", 6: "float32",
    7: "bool", 8: "string", 9: "array", 10: "uint64", 11: "int64", 12: "float64",
}  # fmt: skip
# Sanity caps so a corrupt length cannot make the reader allocate gigabytes.
_MAX_STRING = 64 * 1024 * 1024
_MAX_KV = 1_000_000


@dataclass(frozen=True, slots=True)
class ArrayInfo:
    """An array value that was skipped: its element type name and its length."""

    type: str
    count: int


class _Truncated(Exception):
    pass


class _Bad(Exception):
    pass


class _Reader:
    def __init__(self, f: BinaryIO, size: int, skip_arrays: bool):
        self.f = f
        self.size = size
        self.skip_arrays = skip_arrays

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise _Truncated
        return data

    def unpack(self, fmt: str) -> object:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def u32(self) -> int:
        return int.from_bytes(self.read(4), "little")

    def u64(self) -> int:
        return int.from_bytes(self.read(8), "little")

    def string_length(self) -> int:
        n = self.u64()
        if n > _MAX_STRING:
            raise _Bad(f"a string of {n} bytes")
        return n

    def string(self) -> str:
        return self.read(self.string_length()).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        self.skip(self.string_length())

    def skip(self, n: int) -> None:
        # seek past the bytes, then make sure the file really had them
        pos = self.f.seek(n, os.SEEK_CUR)
        if pos > self.size:
            raise _Truncated

    def value(self, vtype: int) -> object:
        fmt = _SCALARS.get(vtype)
        if fmt is not None:
            return self.unpack(fmt)
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.u32(), self.u64()
            if etype not in TYPE_NAMES:
                raise _Bad(f"unknown array element type {etype}")
            if self.skip_arrays:
                self.skip_array(etype, count)
                return ArrayInfo(TYPE_NAMES[etype], count)
            return [self.value(etype) for _ in range(count)]
        raise _Bad(f"unknown value type {vtype}")

    def skip_array(self, etype: int, count: int) -> None:
        fmt = _SCALARS.get(etype)
        if fmt is not None:
            self.skip(struct.calcsize(fmt) * count)
        elif etype == _STRING:
            for _ in range(count):
                self.skip_string()
        else:
            for _ in range(count):
                self.value(etype)


def read_metadata(path: str | os.PathLike[str], *, skip_arrays: bool = True) -> dict[str, object]:
    """The key/value metadata of a GGUF file, plus `gguf.version` and `gguf.tensor_count`.

    With skip_arrays, array values (the tokenizer's vocabulary, ...) are skipped and stored as ArrayInfo.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ModelError(f"{path} is a directory, not a model file: pass the path of a .gguf file")
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise ModelError(f"model file not found: {path}") from None
    except OSError as e:
        raise ModelError(f"cannot read model file {path}: {e.strerror or e}") from None
    with f:
        try:
            reader = _Reader(f, os.fstat(f.fileno()).st_size, skip_arrays)
            magic = f.read(4)
            if not magic:
                raise ModelError(f"{path} is empty, not a GGUF model file: download it again")
            if magic != MAGIC:
                raise ModelError(
                    f"{path} is not a GGUF file (starts with {magic!r}): pass a .gguf model file"
                )
            version = reader.u32()
            if version not in SUPPORTED_VERSIONS:
                raise ModelError(
                    f"{path} is GGUF version {version}; parley reads versions 2 and 3: convert the model again "
                    "with a recent llama.cpp"
                )
            tensor_count, kv_count = reader.u64(), reader.u64()
            if kv_count > _MAX_KV:
                raise _Bad(f"{kv_count} metadata keys")
            meta: dict[str, object] = {"gguf.version": version, "gguf.tensor_count": tensor_count}
            for _ in range(kv_count):
                key = reader.string()
                meta[key] = reader.value(reader.u32())
        except _Truncated:
            raise ModelError(f"{path} is truncated: its GGUF header ends early (download it again)") from None
        except _Bad as e:
            raise ModelError(f"{path} has a corrupt GGUF header ({e}): download it again") from None
        except OSError as e:
            raise ModelError(f"cannot read model file {path}: {e.strerror or e}") from None
    return meta


def cached_metadata(path: str | os.PathLike[str]) -> dict[str, object]:
    """read_metadata(path), kept while the file keeps its size and modification time: listings (`/v1/models`,
    the page's picker polled during a load) read the same headers again and again (~30 ms each)."""
    st = os.stat(path)
    return _cached(os.fspath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=128)
def _cached(path: str, size: int, mtime_ns: int) -> dict[str, object]:
    return read_metadata(path)


def chat_template(meta: dict[str, object]) -> str | None:
    """The model's own chat template (`tokenizer.chat_template`), or None when it carries none."""
    value = meta.get("tokenizer.chat_template")
    return value if isinstance(value, str) and value.strip() else None
