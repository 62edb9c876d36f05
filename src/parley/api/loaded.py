"""LoadedModel: one model loaded in this process, the parts the pool holds for it (models/pool.py): its engine
(llama.cpp), its chat template and prompt builder, its scheduler thread with its KV tiers, and the chat stage's
view of it (chat.model.Model with its documents' memory: a Served), and its embedder (engine/embeddings.py: a
llama.cpp context of its own on the same weights, made on the first embedding request). The shared parts (the
store, the registries, the chat stage's rules) are the facade's; each loaded model has only what is its own.

A model's settings are the process's (parley.settings.Settings) with its registry entry's own over them
(models/registry.py Preset: ctx_size, kv_size, chat_format, gpu_layers).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from parley.chat.documents import Documents
from parley.chat.model import Model, Served
from parley.chat.prompt import PromptBuilder
from parley.engine.embeddings import Embedder
from parley.engine.gguf import cached_metadata
from parley.engine.llamacpp import EngineConfig, LlamaCppEngine
from parley.errors import InvalidRequest, ParleyError
from parley.scheduler.scheduler import Scheduler
from parley.settings import Settings
from parley.text.template import resolve_template
from parley.upstream.engine import UpstreamScheduler

UPSTREAM_KV_CELLS = 256    # the local engine's cells when replies come from elsewhere (it tokenizes only)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str                      # the registry name requests use
    path: str
    context_size: int              # most tokens one conversation may hold
    kv_size: int                   # KV cells shared by its conversations
    kv_bytes_per_cell: int
    device: str                    # "cpu" or "gpu (N of M layers)" ("cpu (not loaded)" before it loads)
    threads: int
    chat_format: str               # "model" (the file's own template) or a named format
    max_running: int
    deterministic: bool
    loaded: bool = True


def model_settings(entry, s: Settings) -> Settings:
    """The process's settings with the entry's own over them."""
    p = entry.preset
    changes = {k: v for k, v in (("ctx_size", p.ctx_size), ("kv_size", p.kv_size), ("chat_format", p.chat_format),
                                 ("gpu_layers", p.gpu_layers)) if v is not None}
    return s.replace(**changes) if changes else s


def header_facts(path) -> tuple[int, int]:
    """(training context, KV bytes per cell at f16) from a GGUF header, without loading the model."""
    try:
        meta = cached_metadata(path)
    except (ParleyError, OSError):
        return 0, 0
    arch = meta.get("general.architecture", "")
    num = lambda key: meta.get(f"{arch}.{key}") if isinstance(meta.get(f"{arch}.{key}"), int) else 0  # noqa: E731
    layers, embd, heads = num("block_count"), num("embedding_length"), num("attention.head_count")
    kv_heads = num("attention.head_count_kv") or heads
    key = num("attention.key_length") or (embd // heads if heads else 0)
    value = num("attention.value_length") or key
    return num("context_length"), layers * kv_heads * (key + value) * 2


def context_of(n_ctx_train: int, s: Settings) -> int:
    """What the scheduler makes the context: --ctx-size, else the training context, at most --kv-size."""
    kv = s.engine.kv_size
    return min(s.scheduler.ctx_size or n_ctx_train or kv, kv)


class LoadedModel:
    def __init__(self, entry, settings: Settings, store, observers: list, progress: Callable[[float], None],
                 drain: Callable[[], None] = lambda: None):
        s = model_settings(entry, settings)
        self.entry = entry
        self._drain = drain                # waits for the chat stage's recording of this model's last replies
        self.settings = s
        urls, cluster = s.upstreams.upstream, s.ray.cluster
        if urls and cluster:
            raise InvalidRequest("--cluster and --upstream are two ways to generate elsewhere: give one",
                                 param="cluster")
        # on upstreams (--upstream) or replicas (--cluster) the local engine only tokenizes (and embeds): a few KV
        # cells are enough
        remote = bool(urls or cluster)
        engine_s = dataclasses.replace(s.engine, kv_size=max(UPSTREAM_KV_CELLS, s.engine.n_seq_max)) if remote else s.engine
        cfg = EngineConfig.from_settings(engine_s, batch_tokens=s.scheduler.batch_tokens, model_path=entry.path,
                                         on_progress=progress)
        self.engine = engine = LlamaCppEngine(cfg)
        self.scheduler = None
        self.embedder = None
        try:
            self.template = resolve_template(engine.chat_template, s.template.chat_format,
                                             bos_token=engine.bos_text, eos_token=engine.eos_text)
            self.builder = PromptBuilder(self.template, engine.tokenize, bos_text=engine.bos_text,
                                         add_bos=engine.add_bos)
            if urls:
                # a reply's text is read back as plain text: a control token's name the model wrote stays text
                self.scheduler = UpstreamScheduler(urls, lambda text: engine.tokenize(text, special=False),
                                                   policy=s.upstreams.upstream_policy,
                                                   context_size=s.scheduler.ctx_size, n_vocab=engine.n_vocab,
                                                   max_waiting=s.scheduler.max_waiting)
                kv_cells = self.scheduler.context_size
            elif cluster:
                from parley.cluster.deploy import handle
                from parley.cluster.scheduler import ClusterScheduler
                self.scheduler = ClusterScheduler(handle(entry.name, entry.path, s), context_size=s.scheduler.ctx_size,
                                                  max_waiting=s.scheduler.max_waiting)
                if self.scheduler.n_vocab != engine.n_vocab:
                    raise ParleyError(f"the cluster's replicas run a model with {self.scheduler.n_vocab} tokens in "
                                      f"its vocabulary, -m's has {engine.n_vocab}: the application "
                                      f"parley-{entry.name} runs another model (parley cluster down)")
                kv_cells = self.scheduler.context_size
            else:
                self.scheduler = Scheduler(engine, s.scheduler,
                                           cache_dir=s.data_dir if s.scheduler.disk_cache_mb > 0 else None)
                kv_cells = self.scheduler.cache.kv_budget
            key = hashlib.sha256((engine.vocab_fingerprint() + self.template.source).encode()).hexdigest()[:16]
            self.model = Model(self.builder, self.scheduler, self.scheduler.context_size, key, self.template.stops,
                               label=entry.name, kv_cells=kv_cells,
                               token_bytes=lambda: max(len(engine.piece(t)) for t in range(engine.n_vocab)))
            self.documents = Documents(self.model, store, s.documents.limits)
            self.served = Served(self.model, self.documents)
            self.embedder = Embedder(engine, context_size=self.scheduler.context_size)
            self.scheduler.observers.extend(observers)     # the door's finish hooks (metrics) see every model
        except BaseException:
            self.close(save=False)
            raise

    @property
    def context_size(self) -> int:
        return self.scheduler.context_size

    @property
    def footprint(self) -> int:
        """Bytes it takes: the weights (mapped), its KV cells and, once made, its embedding context."""
        try:
            size = self.entry.path.stat().st_size
        except OSError:
            size = 0
        embedding = self.embedder.footprint if self.embedder is not None else 0
        return size + self.engine.n_ctx * self.engine.kv_bytes_per_cell + embedding

    def busy(self) -> bool:
        """A user's request queued, waiting or running in its scheduler (parley's own read-ahead does not count)."""
        return self.scheduler.busy()

    def info(self) -> ModelInfo:
        e, s = self.engine, self.settings
        urls = s.upstreams.upstream
        device = (f"upstream ({', '.join(urls)})" if urls else
                  f"ray cluster ({s.ray.cluster})" if s.ray.cluster
                  else e.device)
        return ModelInfo(name=self.entry.name, path=str(e.model_path), context_size=self.context_size,
                         kv_size=e.n_ctx, kv_bytes_per_cell=e.kv_bytes_per_cell, device=device,
                         threads=e.n_threads, chat_format=self.template.name, max_running=s.scheduler.max_running,
                         deterministic=s.engine.deterministic)

    def close(self, *, save: bool) -> None:
        """Stop its scheduler (running replies end as cancelled; with `save`, idle sequences go to the disk
        tier), let the chat stage record what it was handed (it tokenizes with this engine), stop the embedder
        (its context lives on this model's weights), free the model."""
        if self.scheduler is not None:
            self.scheduler.close(save=save)
            self._drain()
        if self.embedder is not None:
            self.embedder.close()
        self.engine.close()


def unloaded_info(entry, settings: Settings) -> ModelInfo:
    """What a model not loaded yet will be, from its header and its settings (nothing is loaded)."""
    s = model_settings(entry, settings)
    n_ctx_train, per_cell = header_facts(entry.path)
    return ModelInfo(name=entry.name, path=str(entry.path), context_size=context_of(n_ctx_train, s),
                     kv_size=s.engine.kv_size, kv_bytes_per_cell=per_cell, device="cpu (not loaded)",
                     threads=s.engine.threads, chat_format=s.template.chat_format or "model",
                     max_running=s.scheduler.max_running, deterministic=s.engine.deterministic, loaded=False)


def estimate(entry, settings: Settings) -> int:
    """The bytes loading `entry` will take (weights + KV), for the pool's memory budget."""
    info = unloaded_info(entry, settings)
    try:
        size = entry.path.stat().st_size
    except OSError:
        size = 0
    return size + info.kv_size * info.kv_bytes_per_cell

