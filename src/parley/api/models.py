"""The models service (`parley.models`, or `models(home)` without loading any): which models exist, which are
loaded, and the verbs of `parley models` and `/v1/models`.

    parley.models.list()                      every model this process offers, with its state (ModelView)
    parley.models.show("qwen")                one, with its GGUF header's facts
    parley.models.add(path, name=...)         register a file where it lies (checked first)
    parley.models.remove("qwen")              forget it (a file parley made goes with it)
    parley.models.pull("owner/repo:Q4_K_M")   download from a hub, verified, registered
    parley.models.quantize("qwen", "q8_0")    a compressed copy by llama.cpp's own quantizer, registered
    parley.models.load("qwen") / unload(...)  now, rather than on the first request / after --model-idle
    parley.models.keep_alive("qwen", 300)     how long it stays loaded once idle, until it next loads
    parley.models.header("qwen")              its GGUF header's keys and the chat template it is served with

Everything here blocks (headers read, files written, models loaded): an edge that serves an event loop calls
it in a worker thread (api/guard.py checks).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from parley.api.guard import LoopGuard, blocking
from parley.api.loaded import model_settings, unloaded_info
from parley.engine.embeddings import is_embedding_model
from parley.engine.gguf import ArrayInfo, cached_metadata, chat_template, read_metadata
from parley.engine.probe import probe
from parley.errors import InvalidRequest, ParleyError
from parley.models.quantize import file_type, quant_type
from parley.models.quantize import quantize as run_quantize
from parley.models.registry import ModelEntry, ModelRegistry, Preset, check_name, header_name
from parley.settings import Settings
from parley.text.template import resolve_template


@dataclass(frozen=True, slots=True)
class ModelView:
    name: str
    path: str
    source: str                    # file | pulled | quantized | embedded
    origin: str                    # bundled | user | "" (a file given with -m, not registered)
    description: str
    state: str                     # loaded | loading | unloaded | missing (its file is not there)
    progress: float                # of a load in progress, 0..1
    device: str                    # where it runs ("cpu (not loaded)" before it loads)
    context_size: int              # tokens per conversation, as it is (or will be) served
    size_bytes: int
    architecture: str
    file_type: str                 # Q4_1, Q8_0, ...
    display_name: str              # what its GGUF header calls it
    default: bool                  # the model a request that names none gets
    settings: dict = field(default_factory=dict)     # its registry settings (ctx_size, chat_format, ...)
    sampling: dict = field(default_factory=dict)
    pulled: dict = field(default_factory=dict)
    quantized: dict = field(default_factory=dict)
    error: str | None = None       # why its last load failed, or what is wrong with its file
    toml: str = ""                 # the TOML file its entry is read from ("" for a file -m gave, not registered)
    memory_bytes: int = 0          # loaded: what it takes (weights and KV cells)
    unloads_in: float | None = None   # loaded: seconds until it unloads for being idle (None: it never does)
    embedding: bool = False        # an embedding model by its GGUF header (a pooling type, or an encoder)


@dataclass(frozen=True, slots=True)
class ModelHeader:
    """A model file's GGUF header, JSON-ready: its keys (arrays as [] unless read whole), and the chat template
    the model is served with (the file's own or the named chat_format's source; "" when it has none)."""

    metadata: dict
    chat_template: str
    chat_format: str


class ModelsService:
    """`shared`: the facade's shared parts (its registry, pool, settings); None for the registry alone."""

    def __init__(self, shared, guard: LoopGuard, *, registry: ModelRegistry | None = None,
                 settings: Settings | None = None):
        self._shared = shared
        self._guard = guard
        self._registry = registry if shared is None else shared.registry
        self._settings = settings if shared is None else shared.settings

    # ---- reading ---------------------------------------------------------------------------------------------
    @blocking
    def list(self) -> list[ModelView]:
        """Every model this process offers (the registry's, or those -m named), the default first."""
        entries = self._offered()
        return [self._view(e) for e in entries]

    @blocking
    def warnings(self) -> list[str]:
        """A line for each registry file that does not read."""
        return self._registry.entries()[1]

    @blocking
    def show(self, name: str) -> ModelView:
        return self._view(self._entry(name))

    # ---- the registry ------------------------------------------------------------------------------------------
    @blocking
    def add(self, path: str | os.PathLike, *, name: str | None = None, settings: dict | None = None,
            sampling: dict | None = None) -> ModelView:
        """Register a GGUF file where it lies (no copy): its header must read and llama.cpp must be able to
        load it (an architecture this build does not know is refused, named)."""
        preset = Preset(**(settings or {}), sampling=dict(sampling or {}))
        entry = self._registry.add(path, name=name, preset=preset, probe=probe)
        return self._view(entry)

    @blocking
    def remove(self, name: str) -> ModelView:
        """Forget a model (unloaded first; its exact registry name); a file parley made (pulled, quantized)
        goes with it."""
        entry = self._registry.get(name, exact=True)
        if self._shared is not None:
            self._shared.pool.unload(entry.name)
        view = self._view(entry)
        self._registry.remove(entry.name)
        return view

    @blocking
    def pull(self, spec: str, *, name: str | None = None, progress: bool | Callable = True,
             endpoint: str | None = None) -> ModelView:
        """Download a GGUF from a hub (`hf://OWNER/REPO/FILE.gguf`, or `OWNER/REPO:QUANT`), resumable and
        checked against the hub's SHA-256, into $PARLEY_HOME/models/files, and register it."""
        from parley.models.pull import parse_spec, pull

        parsed = parse_spec(spec)
        target = check_name(name) if name is not None else None
        if target is not None and target in self._registry.names():
            raise InvalidRequest(f"a model named {target!r} is registered already", param="name")
        got = pull(parsed, self._registry.files_dir(), endpoint=endpoint or os.environ.get("HF_ENDPOINT"),
                   progress=progress)
        entry = self._registry.add(got.path, name=name, source="pulled", probe=probe,
                                   pulled={"repo": got.repo, "file": got.filename, "revision": got.revision,
                                           "sha256": got.sha256})
        return self._view(entry)

    @blocking
    def quantize(self, name: str, qtype: str, *, out: str | None = None,
                 progress: Callable[[int, int], None] | None = None) -> ModelView:
        """A copy of a model with its weights compressed to `qtype` (q8_0, q4_k_m, ...), by llama.cpp's own
        quantizer, written to $PARLEY_HOME/models/files and registered as `out` (default NAME-QTYPE)."""
        qtype = quant_type(qtype)
        src = self._entry(name)
        target = check_name(out if out is not None else f"{src.name}-{qtype.replace('_', '-')}")
        if target in self._registry.names():
            raise InvalidRequest(f"a model named {target!r} is registered already; name the copy with --name",
                                 param="name")
        dst = self._registry.files_dir() / f"{target}.gguf"
        threads = self._settings.engine.threads if self._settings is not None else 0
        done = run_quantize(src.path, dst, qtype, threads=threads, progress=progress)
        try:
            entry = self._registry.add(done.path, name=target, source="quantized", preset=src.preset,
                                       quantized={"from": src.name, "type": qtype})
        except BaseException:
            done.path.unlink(missing_ok=True)     # not registered: parley's file would be an orphan
            raise
        return self._view(entry)

    # ---- loading -------------------------------------------------------------------------------------------
    @blocking
    def load(self, name: str) -> ModelView:
        """Load a model now (a request would load it on demand)."""
        pool = self._pool()
        pool.get(self._entry(name))
        return self.show(name)

    @blocking
    def unload(self, name: str) -> ModelView:
        """Unload a model now, its conversations' KV saved to disk (a 409 while it generates)."""
        entry = self._entry(name)
        self._pool().unload(entry.name)
        return self._view(entry)

    @blocking
    def keep_alive(self, name: str, seconds: float | None) -> None:
        """How long a loaded model stays loaded once nobody uses it, until it next loads (Ollama's keep_alive):
        None, --model-idle's; math.inf, no idle unloading; 0, as soon as it is idle. --models-max and the memory
        budget may still unload it to make room."""
        self._pool().keep_alive(self._entry(name).name, seconds)

    @blocking
    def header(self, name: str, *, arrays: bool = False) -> ModelHeader:
        """A model's GGUF header (`arrays`: the vocabulary and the other arrays read whole, not as []) and the
        chat template it is served with."""
        entry = self._entry(name)
        meta = read_metadata(entry.path, skip_arrays=False) if arrays else cached_metadata(entry.path)
        keys = {k: [] if isinstance(v, ArrayInfo) else v for k, v in meta.items()}
        loaded = self._shared.pool.loaded(entry.name) if self._shared is not None else None
        if loaded is not None:
            return ModelHeader(keys, loaded.template.source, loaded.template.name)
        fmt = model_settings(entry, self._settings).template.chat_format if self._settings is not None else None
        try:
            template = resolve_template(chat_template(meta), fmt, bos_token="", eos_token="")
        except ParleyError:      # no template of its own and no chat_format: it serves raw completions only
            return ModelHeader(keys, "", fmt or "model")
        return ModelHeader(keys, template.source, template.name)

    # ---- internals -----------------------------------------------------------------------------------------
    def _pool(self):
        if self._shared is None:
            raise InvalidRequest("no models are served here: this needs parley.load() or parley serve",
                                 param="model")
        return self._shared.pool

    def _entry(self, name: str) -> ModelEntry:
        return self._registry.get(name) if self._shared is None else self._shared.entry(name, strict=True)

    def _offered(self) -> list[ModelEntry]:
        if self._shared is not None:
            return self._shared.offered()
        entries, _ = self._registry.entries()
        return entries

    def _view(self, e: ModelEntry) -> ModelView:
        state, progress, error = "unloaded", 0.0, None
        device, context = "cpu (not loaded)", 0
        memory, unloads_in = 0, None
        if self._shared is not None:
            slot = self._shared.pool.states().get(e.name)
            if slot is not None:
                state, progress, error = slot.state, slot.progress, slot.error
                if slot.state == "loaded":
                    memory = slot.footprint
                    if slot.idle_s < math.inf:
                        unloads_in = max(0.0, slot.idle_s - (time.monotonic() - slot.last_used))
            loaded = self._shared.pool.loaded(e.name)
            if loaded is not None:
                info = loaded.info()
                device, context = info.device, info.context_size
        arch, ftype, size, embedding = "", "", 0, False
        try:
            meta = cached_metadata(e.path)
            arch, ftype = str(meta.get("general.architecture", "")), file_type(meta)
            embedding = is_embedding_model(meta)
            size = e.path.stat().st_size
        except (ParleyError, OSError) as err:
            state, error = "missing", getattr(err, "message", str(err))
        if not context and self._settings is not None and state != "missing":
            context = unloaded_info(e, self._settings).context_size
        default = e.name == self._default_name()
        p = e.preset
        settings = {k: v for k, v in (("ctx_size", p.ctx_size), ("kv_size", p.kv_size),
                                      ("chat_format", p.chat_format), ("gpu_layers", p.gpu_layers),
                                      ("system", p.system)) if v is not None}
        return ModelView(name=e.name, path=str(e.path), source=e.source, origin=e.origin, description=e.description,
                         state=state, progress=progress, device=device, context_size=context, size_bytes=size,
                         architecture=arch, file_type=ftype, display_name=header_name(e),
                         default=default, settings=settings, sampling=dict(p.sampling), pulled=dict(e.pulled),
                         quantized=dict(e.quantized), error=error,
                         toml=str(self._registry.file(e.name)) if e.origin else "", memory_bytes=memory,
                         unloads_in=unloads_in, embedding=embedding)

    def _default_name(self) -> str:
        """The model a request (or `parley chat`) that names none gets: the first -m / $PARLEY_MODEL, else the
        embedded one; "" when $PARLEY_MODEL names nothing that reads (the command that loads says why)."""
        if self._shared is not None:
            return self._shared.default.name
        named = self._settings.models.model if self._settings is not None else ()
        try:
            return self._registry.resolve(named[0] if named else None).name
        except ParleyError:
            return ""


def models(home: str | os.PathLike | None = None) -> ModelsService:
    """The model registry without loading a model (what `parley models` uses)."""
    s = Settings.at_home(home)
    return ModelsService(None, LoopGuard(), registry=ModelRegistry(s.data_dir / "models"), settings=s)


__all__ = ["ModelHeader", "ModelView", "ModelsService", "models"]
