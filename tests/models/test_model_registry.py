"""The model registry on its own (no model loaded): the embedded model always listed, files registered where
they lie and checked first (a GGUF header, then llama.cpp's own load of the vocabulary), names, the TOML file a
user edits, and what `-m` resolves to."""

from __future__ import annotations

from pathlib import Path

import pytest

from parley.engine.model_path import embedded_model_path
from parley.engine.probe import probe
from parley.errors import InvalidRequest, ModelError, NotFound
from parley.models.registry import EMBEDDED_ENTRY, ModelRegistry


@pytest.fixture()
def reg(tmp_path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models")


def test_the_embedded_model_is_always_listed_and_cannot_be_removed(reg):
    assert reg.names() == [EMBEDDED_ENTRY]
    e = reg.get(EMBEDDED_ENTRY)
    assert e.source == "embedded" and e.origin == "bundled" and e.path == embedded_model_path()
    assert reg.get("SmolLM2-135M-Instruct").name == EMBEDDED_ENTRY       # its header name, in any case
    with pytest.raises(InvalidRequest, match="embedded"):
        reg.remove(EMBEDDED_ENTRY)


def test_a_file_is_registered_where_it_lies_and_its_toml_is_editable(reg):
    src = embedded_model_path()
    e = reg.add(src, name="tiny", probe=probe)
    assert e.path == src and e.source == "file" and reg.names() == ["smollm2-135m-instruct", "tiny"]
    toml = reg.dir / "tiny.toml"
    text = toml.read_text()
    assert str(src) in text and "[settings]" in text and "# " in text                 # commented for the user
    toml.write_text(text.replace("[settings]\n", '[settings]\nctx_size = 1024\nsystem = "Be brief."\n')
                    .replace("[sampling]\n", "[sampling]\ntemperature = 0.3\n"))
    got = reg.get("TINY")
    assert (got.preset.ctx_size, got.preset.system, got.preset.sampling) == (1024, "Be brief.", {"temperature": 0.3})
    removed = reg.remove("tiny")
    assert removed.name == "tiny" and src.exists() and reg.names() == [EMBEDDED_ENTRY]   # the file stays


def test_bad_files_are_refused_naming_why(reg, tmp_path):
    text = tmp_path / "notes.gguf"
    text.write_text("not a model\n")
    with pytest.raises(ModelError, match="not a GGUF"):
        reg.add(text, probe=probe)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(embedded_model_path().read_bytes()[:4096])
    with pytest.raises(ModelError, match="truncated"):
        reg.add(cut, probe=probe)
    data = embedded_model_path().read_bytes()
    arch = data.find(b"llama", data.find(b"general.architecture"))
    alien = tmp_path / "alien.gguf"
    alien.write_bytes(data[:arch] + b"zzzzz" + data[arch + 5:])
    with pytest.raises(ModelError, match="unknown model architecture: 'zzzzz'"):
        reg.add(alien, probe=probe)
    assert reg.names() == [EMBEDDED_ENTRY]                      # nothing registered


def test_names_and_duplicates(reg):
    src = embedded_model_path()
    with pytest.raises(InvalidRequest, match="lower-case letters") as e:
        reg.add(src, name="Has Spaces")
    assert e.value.param == "name"
    reg.add(src, name="one")
    with pytest.raises(InvalidRequest, match="registered already"):
        reg.add(src, name="one")
    assert reg.add(src).name == "smollm2-135m-instruct.q4_1"    # the file's stem, lower-cased


def test_an_unknown_name_is_a_404_listing_the_known_ones(reg):
    with pytest.raises(NotFound, match="unknown model 'nope'; known: smollm2-135m-instruct") as e:
        reg.get("nope")
    assert e.value.param == "model"


def test_resolve_takes_a_name_or_a_path(reg, tmp_path):
    assert reg.resolve(None).name == EMBEDDED_ENTRY
    adhoc = reg.resolve(str(embedded_model_path()))
    assert adhoc.origin == "" and adhoc.path == embedded_model_path()
    with pytest.raises(ModelError):
        reg.resolve(str(tmp_path / "missing.gguf"))
    with pytest.raises(NotFound):
        reg.resolve("neither-a-name-nor-a-file")


def test_a_broken_toml_is_a_warning_not_a_crash(reg):
    reg.dir.mkdir(parents=True)
    (reg.dir / "broken.toml").write_text("path = \n")
    (reg.dir / "typo.toml").write_text(f'path = "{embedded_model_path()}"\n[settings]\nctx_sise = 1\n')
    entries, warnings = reg.entries()
    assert [e.name for e in entries] == [EMBEDDED_ENTRY]
    assert any("broken" in w and "TOML" in w for w in warnings)
    assert any("ctx_sise" in w for w in warnings)
    assert isinstance(Path(entries[0].path), Path)


def test_remove_takes_the_exact_name_only(reg):
    """A lookup for a request may go by a file's stem or header name; a removal never does (removing a model
    again by the stem of a file another model shares used to remove that other model)."""
    reg.add(embedded_model_path(), name="second")
    assert reg.get("smollm2-135m-instruct.q4_1").name in ("second", EMBEDDED_ENTRY)
    with pytest.raises(NotFound):
        reg.remove("smollm2-135m-instruct.q4_1")
    assert "second" in reg.names()
