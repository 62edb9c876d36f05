"""Can this build of llama.cpp run a model file? Asked before a file is registered (`parley models add`): the
GGUF header reads (engine/gguf.py), and llama.cpp loads the file's vocabulary alone (vocab_only: no weights, a
few tens of milliseconds), which is where it refuses an architecture it does not know."""

from __future__ import annotations

from pathlib import Path

import llama_cpp.llama_cpp as llc

from parley.engine import logs
from parley.engine.gguf import read_metadata
from parley.errors import ModelError

_ready = False


def probe(path: Path) -> None:
    """Raise ModelError naming the file and the reason when llama.cpp cannot load it."""
    global _ready
    meta = read_metadata(path)
    if not _ready:
        logs.install()
        llc.llama_backend_init()
        _ready = True
    params = llc.llama_model_default_params()
    params.vocab_only = True
    said: list[str] = []
    with logs.tap(lambda level, piece: said.append(piece) if level == logs.GGML_ERROR else None):
        model = llc.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        arch = meta.get("general.architecture", "?")
        text = "".join(said)
        why = text.split("error loading model:", 1)[1].splitlines()[0].strip() if "error loading model:" in text \
            else " ".join(text.split())[:200]
        raise ModelError(f"llama.cpp cannot load {path} (architecture {arch!r}): "
                         f"{why or 'an architecture this build of llama.cpp does not support, or a damaged file'}")
    llc.llama_model_free(model)
