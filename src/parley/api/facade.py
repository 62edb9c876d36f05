"""Parley: the door. What the edges (terminal, HTTP server, web page) and Python users call, and nothing below it.

    p = parley.load()                                  # or Parley("model.gguf"), Parley(model=("a", "b"))
    p.info, p.limits                                   # the model this door speaks to; what a request may ask
    p.using("qwen")                                    # the same door, speaking to another model (404: unknown)
    p.generate(prompt, params, loop=None) -> Stream    # a raw completion; p.chat_prompt(messages) -> Prompt
    p.embed(["a text", ...], model=None) -> Embeddings # unit-length vectors from the model's hidden states
    p.conversations, p.documents, p.personas, p.skills # the services (api/conversations.py, ...)
    p.models                                           # which models exist, which are loaded (api/models.py)
    p.stats(), p.on_finish(callback)                   # what the schedulers are doing; a hook per request
    p.with_limits(Caps(...))                           # the same models behind a door with tighter limits
    p.close()

One process holds the shared parts once (`_Shared`: the store, the registries of personas, skills and models, the
chat stage's rules and turns) and a pool of loaded models (models/pool.py), each with its own engine, scheduler
and KV tiers (api/loaded.py): a model loads on its first request and unloads when idle or to make room. Every
door is bound to one model (its `name`; the default one unless `using()` said another) and holds the limits it
applies; a conversation keeps the model it is served with (conversations.send takes `model=` to move it).
`engine`, `scheduler` and `store` stay reachable for tests and benchmarks (the default door's model); the edges
may not touch them (tests/test_layers.py reads their source and fails on a reach-through).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from parley.api.conversations import ConversationsService
from parley.api.documents import DocumentsService
from parley.api.guard import LoopGuard, blocking
from parley.api.loaded import LoadedModel, ModelInfo, estimate, unloaded_info
from parley.api.registries import PersonasService, SkillsService, file_registries
from parley.chat.conversations import Conversations
from parley.chat.limits import Caps, Limits
from parley.chat.meta import Prompt
from parley.chat.tools import FORCED_PREFIX, ToolPlan
from parley.chat.tools import render as render_tools
from parley.chat.turns import Turns
from parley.chat.window import PromptTooLong, WindowPolicy, fit, message_sizes, reply_room
from parley.engine.interrupt import deferred_sigint
from parley.errors import InvalidRequest, LimitExceeded, NotFound, shorten
from parley.models.pool import Pool
from parley.models.registry import ModelEntry, ModelRegistry
from parley.paths import check_data_dir
from parley.sampling import SEED_MAX, SamplingParams
from parley.scheduler.request import Result
from parley.scheduler.stats import SchedulerStats, combine
from parley.scheduler.stream import Stream
from parley.settings import Settings
from parley.store import Store
from parley.text.template import validate_messages

__all__ = ["Embeddings", "MAX_SAMPLES", "ModelInfo", "Parley", "load"]
MAX_SAMPLES = 16        # completions of one prompt per request (OpenAI's n, TGI's best_of)
SEED_SPAN = SEED_MAX + 1


def memory_budget(mb: int) -> int:
    """--models-memory-mb in bytes: -1, a share of this machine's memory; 0, none."""
    if mb >= 0:
        return mb << 20
    from parley.models.settings import MEMORY_SHARE
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0
    return int(total * MEMORY_SHARE)


@dataclass(frozen=True, slots=True)
class Embeddings:
    """What `Parley.embed` gives: one unit-length float32 vector per input, in order (a read-only numpy array
    [len(inputs), dimensions]: a dot product is the cosine similarity), the model that made them, and each
    input's token count (OpenAI's usage.prompt_tokens is their sum; after truncation, the tokens embedded), and
    how many tokens each input lost to `truncate` (all 0 without it)."""

    vectors: np.ndarray
    model: str
    tokens: tuple[int, ...]
    pooling: str = "mean"          # how the hidden states became one vector (engine/embeddings.py)
    truncated: tuple[int, ...] = ()

    @property
    def dimensions(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def prompt_tokens(self) -> int:
        return sum(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)


class _Shared:
    """What every door and every loaded model share, made once."""

    def __init__(self, s: Settings):
        self.settings = s
        self.guard = LoopGuard()
        self.observers: list[Callable] = []                    # finish hooks: every model's scheduler calls them
        if s.store or s.scheduler.disk_cache_mb > 0:
            check_data_dir(s.data_dir)        # one line naming the directory and the fix, not a store error
        self.store = Store(s.store_target) if s.store else Store()
        self.turns: Turns | None = None
        self.pool: Pool | None = None
        try:
            self.personas, self.skills = file_registries(s, self.store)
            self.registry = ModelRegistry(s.data_dir / "models")
            self.conversations = Conversations(self.store, personas=self.personas)
            self.turns = Turns(self.conversations, skills=self.skills)
            # the models this process offers: the ones -m named (registered names or files), else every
            # registered model; the first is the default
            self.named = [self.registry.resolve(m) for m in s.models.model]
            self.default = self.named[0] if self.named else self.registry.resolve(None)
            m = s.models
            self.pool = Pool(lambda entry, progress: LoadedModel(entry, s, self.store, self.observers, progress,
                                                                 drain=self.turns.drain),
                             models_max=m.models_max, idle_s=m.model_idle,
                             memory_bytes=memory_budget(m.models_memory_mb), estimate=lambda e: estimate(e, s))
        except BaseException:
            self.close(save=False)
            raise

    def entry(self, name: str | None, *, strict: bool = False) -> ModelEntry:
        """The model a name means here: None (or "default", "parley"), the default one; else one this process
        offers (a 404 listing them). While it offers a single model, any name means that one for a request
        (not `strict`), as a one-model server always answered (OpenAI clients must send some `model`)."""
        if name is None or str(name).strip().lower() in ("", "default", "parley"):
            return self.default
        key = str(name).strip().lower()
        for e in self.named:
            if key in (e.name, str(e.path).lower()):
                return e
        try:
            if self.named:
                known = ", ".join(e.name for e in self.named)
                raise NotFound(f"unknown model '{shorten(name)}'; this server offers: {known}", param="model")
            return self.registry.get(name)
        except NotFound:
            if not strict and len(self.offered()) == 1:
                return self.default
            raise

    def offered(self) -> list[ModelEntry]:
        """The models this process serves, the default first."""
        if self.named:
            return list(self.named)
        entries, _ = self.registry.entries()
        return [self.default, *(e for e in entries if e.name != self.default.name)]

    def close(self, *, save: bool) -> None:
        if self.pool is not None:
            for _, loaded in self.pool.all_loaded():
                loaded.scheduler.close(save=save)     # every model's replies end and are handed to the turns
        if self.turns is not None:
            # before any engine is freed: the turns' worker records replies and reads the next turn's header
            # ahead with the model's tokenizer (freeing the model under it crashed `parley chat -p`)
            self.turns.close()
        if self.pool is not None:
            self.pool.close(save=save)        # the schedulers are stopped already; the models are freed
        self.store.close()


class Parley:
    """A door bound to one model, over the models this process serves. Thread-safe: many conversations at once."""

    def __init__(self, model: str | os.PathLike | None = None, *, settings: Settings | None = None, **options):
        base = settings or Settings.from_env()
        if model is not None:
            options["model"] = str(model)
        s = base.replace(**options) if options else base
        with deferred_sigint() as interrupt:  # Ctrl-C while loading: one KeyboardInterrupt after, nothing left
            shared = _Shared(s)
            try:
                shared.pool.get(shared.default)   # the default model loads now: a bad file is an error here
            except BaseException:
                shared.close(save=False)
                raise
            if interrupt.requested:
                shared.close(save=False)
        self._open(shared, shared.default, Caps())

    def _open(self, shared: _Shared, entry: ModelEntry, caps: Caps) -> None:
        self._shared = shared
        self._guard = shared.guard
        self._model = entry                  # read once, when the door is made (never a file read on a loop)
        self._name = entry.name
        self._caps = caps
        self.settings = shared.settings
        self.conversations = ConversationsService(shared.conversations, shared.turns, shared.guard, self)
        self.documents = DocumentsService(self, shared.guard)
        self.personas = PersonasService(shared.personas, shared.guard)
        self.skills = SkillsService(shared.skills, shared.guard)

    def _door(self, entry: ModelEntry, caps: Caps) -> Parley:
        door = object.__new__(Parley)
        door._open(self._shared, entry, caps)
        return door

    # ---- which model -----------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The registry name of the model this door speaks to (what requests and /v1/models call it)."""
        return self._name

    @blocking
    def using(self, model: str | None, *, load: bool = True) -> Parley:
        """This door, speaking to another model (None: the default one), with the same limits; an unknown name
        is a 404 listing the models there are. The model is loaded now if it is not yet, unless `load` is False
        (a page showing a model's limits and numbers: it loads on its first request)."""
        entry = self._shared.entry(model)
        door = self if entry.name == self._name else self._door(entry, self._caps)
        if load:
            door._loaded()
        return door

    def with_limits(self, caps: Caps) -> Parley:
        """The same models (engines, schedulers, store, caches) behind a door whose requests `caps` bounds: what
        a server with --max-prompt-tokens / --max-tokens-cap builds once at its start."""
        return self._door(self._model, caps)

    def guard_event_loop(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        """From now on a blocking call made on `loop` (while it runs) raises (api/guard.py): what an edge that
        serves an event loop switches on when it starts, for every door over these models. Returns the function
        that lifts it (when the loop stops)."""
        self._guard.guard(loop)
        return lambda: self._guard.release(loop)

    @property
    def models(self):
        """Which models exist and which are loaded (api/models.py)."""
        from parley.api.models import ModelsService

        return ModelsService(self._shared, self._guard)

    def _entry(self) -> ModelEntry:
        return self._model

    def sampling_over(self, base: SamplingParams) -> SamplingParams:
        """`base` (a server's sampling defaults) with this door's model's own (its registry settings) over it."""
        return self._model.preset.over(base)

    @contextlib.contextmanager
    def _serving(self, model: str | None):
        """The model `model` names (None: this door's), loaded, held while the block runs, with this door's
        limits at its context: what a turn or a question is submitted in."""
        entry = self._shared.entry(model) if model is not None else self._model
        with self._shared.pool.use(entry) as loaded:
            yield loaded, self._caps.at(loaded.context_size)

    def _offers(self, model: str) -> bool:
        try:
            self._shared.entry(model)
        except NotFound:
            return False
        return True

    def _loaded(self) -> LoadedModel:
        """This door's model, loaded (loading it first blocks: off the event loop, as every @blocking call)."""
        shared = self._shared
        loaded = shared.pool.loaded(self._name)
        return loaded if loaded is not None else shared.pool.get(self._entry())

    # ---- what runs ---------------------------------------------------------------------------------------
    @property
    def info(self) -> ModelInfo:
        """The model this door speaks to, as it runs (or, not loaded yet, as it will: nothing is loaded here)."""
        loaded = self._shared.pool.loaded(self._name)
        return loaded.info() if loaded is not None else unloaded_info(self._entry(), self.settings)

    @property
    def context_size(self) -> int:
        return self.info.context_size

    @property
    def limits(self) -> Limits:
        """How much a request to this door's model may ask for (its context, the door's caps)."""
        return self._caps.at(self.context_size)

    @property
    def chat_stops(self) -> tuple[str, ...]:
        """End-of-turn strings the chat format needs as stop strings (none for a model's own template)."""
        return self._loaded().template.stops

    @property
    def eos_id(self) -> int:
        return self._loaded().engine.eos_id

    # below the door, the default door's model: for tests and benchmarks, never for the edges (test_layers.py)
    engine = property(lambda self: self._loaded().engine)
    scheduler = property(lambda self: self._loaded().scheduler)
    template = property(lambda self: self._loaded().template)
    builder = property(lambda self: self._loaded().builder)
    store = property(lambda self: self._shared.store)

    # ---- text and tokens ---------------------------------------------------------------------------------
    @blocking
    def tokenize(self, text: str) -> list[int]:
        """A raw prompt's token ids: control tokens written in it are parsed, BOS added when the model wants it."""
        return self._loaded().builder.tokenize_prompt(text)

    @blocking
    def detokenize(self, tokens: Sequence[int]) -> str:
        return self._loaded().engine.detokenize(tokens)

    def token_text(self, token: int) -> str:
        """One token's text, special tokens spelled out (TGI's details)."""
        e = self._loaded().engine
        return e.piece(token).decode("utf-8", "replace") or e.special_text(token)

    def token_bytes(self, token: int) -> bytes:
        """The bytes one token adds to the reply (maybe part of a character: OpenAI's logprobs `bytes`); a
        special token's spelling, as token_text gives it, when it adds none."""
        e = self._loaded().engine
        return e.piece(token) or e.special_text(token).encode()

    def check_tokens(self, tokens: Sequence[int], param: str = "tokens") -> None:
        self._loaded().engine.check_tokens(tokens, param)

    # ---- generation --------------------------------------------------------------------------------------
    @blocking
    def generate(self, prompt: str | Sequence[int] | Prompt, params: SamplingParams | None = None, *,
                 loop: asyncio.AbstractEventLoop | None = None, param: str = "prompt") -> Stream:
        """A raw completion (no chat template) of text, token ids or a Prompt (chat_prompt's), within the door's
        limits. `params` default: SamplingParams(), every stage off at temperature 1, as the HTTP completions API
        does. The Stream's meta is the Prompt."""
        with self._shared.pool.use(self._entry()) as loaded:
            if isinstance(prompt, Prompt):
                meta = prompt
            elif isinstance(prompt, str):
                if not prompt:
                    raise InvalidRequest("the prompt is empty", param=param)
                meta = Prompt(loaded.builder.tokenize_prompt(prompt))
            else:
                meta = Prompt(list(prompt))
                loaded.engine.check_tokens(meta.tokens, param)
            limits = self._caps.at(loaded.context_size)
            limits.check_prompt(len(meta.tokens), param=param)
            params = params or SamplingParams()
            if params.max_tokens > limits.max_tokens:
                params = params.replace(max_tokens=limits.max_tokens)
            return loaded.scheduler.stream(meta.tokens, params, loop=loop, param=param, meta=meta)

    @blocking
    def samples(self, prompt: str | Sequence[int] | Prompt, params: SamplingParams | None = None, n: int = 1, *,
                loop: asyncio.AbstractEventLoop | None = None, param: str = "prompt") -> list[Stream]:
        """`n` completions of one prompt, side by side (OpenAI's `n`, TGI's best_of): submitted together, so the
        scheduler reads the prompt once and the others fork its KV (zero-copy) and decode in the same batches.
        A seed gives choice i the seed + i (the same seed each would make n copies of one text)."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SAMPLES:
            raise LimitExceeded(f"n must be 1 to {MAX_SAMPLES}, got {n!r}", param="n")
        params = params or SamplingParams()
        with self._shared.pool.use(self._model):
            return [self.generate(prompt, params if params.seed is None else params.replace(seed=(params.seed + i) % SEED_SPAN),
                                  loop=loop, param=param) for i in range(n)]

    @blocking
    def embed(self, texts: str | Sequence[str | Sequence[int]], *, model: str | None = None,
              dimensions: int | None = None, cancel: threading.Event | None = None,
              param: str = "input", truncate: bool = False, hint: str = "") -> Embeddings:
        """One vector per text (or list of token ids, taken as given) from this door's model, or `model`'s
        (loaded first; an embedding GGUF from the registry works the same way): its hidden states pooled and
        normalized, in a llama.cpp context of the model's own (engine/embeddings.py). A text over the model's
        embedding context, or over this door's prompt cap, is a LimitExceeded naming the limit, unless the caller
        asks to `truncate` (then it keeps its first tokens up to the limit, and Embeddings.truncated says how
        many went; `hint` ends the refusal's message); `dimensions` other than the model's is refused by name (its vectors cannot be shortened);
        `cancel` set stops it between decodes (a client that left)."""
        with self._serving(model) as (loaded, limits):
            embedder = loaded.embedder
            if dimensions is not None and dimensions != embedder.dimensions:
                raise InvalidRequest(f"dimensions is {dimensions!r}; {loaded.entry.name} makes "
                                     f"{embedder.dimensions}-dimensional vectors and cannot shorten them: send "
                                     f"{embedder.dimensions} or leave dimensions out", param="dimensions")
            ids, cut = embedder.fit(texts, param=param, limit=limits.prompt_tokens if limits.prompt_setting else 0,
                                    limit_setting=limits.prompt_setting, truncate=truncate, hint=hint)
            vectors = embedder.embed(ids, cancel=cancel)
        vectors.flags.writeable = False     # a frozen value: its vectors too
        return Embeddings(vectors, loaded.entry.name, tuple(len(t) for t in ids), embedder.pooling, tuple(cut))

    def complete(self, prompt: str, **sampling) -> Stream:
        """generate(prompt, SamplingParams(**sampling)): iterate the Stream for Chunks."""
        return self.generate(prompt, SamplingParams().replace(**sampling))

    @blocking
    def chat_prompt(self, messages: list[dict], *, max_tokens: int, truncate: bool = False,
                    param: str = "messages", hint: str = "", tools: ToolPlan | None = None) -> Prompt:
        """A stateless chat request's prompt. With `truncate`, old turns leave in blocks at the same boundaries
        a stored conversation uses (chat/window.py), so a client that resends its growing history keeps hitting
        the cache; without it, a prompt that does not fit is a LimitExceeded saying by how much (`hint`: what
        the request can do about it). A model's own system prompt (its registry settings) goes first when the
        messages bring none. `tools` (chat/tools.py): the offered functions go into the system message, tool
        calls and results in the history are written in the tool convention, and a forced call's reply starts
        inside its call markup (those tokens end the prompt; constrain it with tools.grammar())."""
        messages = validate_messages(render_tools(messages, tools))
        system = self._entry().preset.system
        if system and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system}, *messages]
        pinned_n = 0
        while pinned_n < len(messages) - 1 and messages[pinned_n]["role"] == "system":
            pinned_n += 1
        pinned, history, new = messages[:pinned_n], messages[pinned_n:-1], messages[-1]
        loaded = self._loaded()
        builder, count, ctx = loaded.builder, loaded.model.count, loaded.context_size
        limits = self._caps.at(ctx)
        overflow = "truncate" if truncate else "error"
        budget = min(limits.prompt_tokens, ctx - reply_room(ctx, max_tokens, overflow))
        try:
            fitted = fit(lambda start, _ex: builder.build(pinned + history[start:] + [new]),
                         sizes=message_sizes(count, history), roles=[m["role"] for m in history], budget=budget,
                         policy=WindowPolicy(overflow=overflow), pinned_tokens=sum(message_sizes(count, pinned)),
                         total_param=param)
        except PromptTooLong as e:
            if truncate:
                raise
            raise limits.too_long(e.tokens, param=param, hint=hint) from None
        note = f"{fitted.start} oldest messages were dropped to fit the context" if fitted.start else ""
        tokens = fitted.built.tokens
        if tools is not None and tools.forced:
            tokens = tokens + builder.tokenize_text(FORCED_PREFIX)
        return Prompt(tokens, fitted.start, note)

    # ---- conversations -----------------------------------------------------------------------------------
    def chat(self, system: str | None = None, *, resume: bool | str = False, title: str | None = None,
             overflow: str = "truncate", max_messages: int = 0, persona=None, user_name: str | None = None,
             document_ids: list[str] | None = None, **sampling):
        """A conversation to talk to (api/chat.py's Chat) on this door's model: a new one (its sampling
        defaults: the model's own over the chat preset, parley.sampling.CHAT_PRESET, with `sampling` over them;
        `persona`: a registry name or a Persona), or `resume`: True for the most recently used one, or an id."""
        from parley.api.chat import Chat
        from parley.sampling import CHAT_PRESET

        if resume:
            if resume is True:
                latest = self.conversations.list(limit=1).items
                if not latest:
                    raise InvalidRequest("there is no conversation to resume yet", param="resume")
                return Chat(self, latest[0].id)
            return Chat(self, self.conversations.get(str(resume), messages=False).id)
        base = self._entry().preset.over(CHAT_PRESET)
        params = base.replace(**sampling) if sampling else base
        view = self.conversations.create(system=system, title=title, defaults=params, overflow=overflow,
                                         max_messages=max_messages, persona=persona, user_name=user_name,
                                         document_ids=document_ids)
        return Chat(self, view.id)

    # ---- monitoring --------------------------------------------------------------------------------------
    @blocking
    def stats(self, timeout: float | None = 30.0, *, every_model: bool = False) -> SchedulerStats:
        """What this door's model's scheduler is doing (`every_model`: every loaded model's, added up); a model
        not loaded reports nothing (zeros), and asking never loads one."""
        pool = self._shared.pool
        if every_model:
            return combine([m.scheduler.stats(timeout) for _, m in pool.all_loaded()])
        loaded = pool.loaded(self._name)
        return loaded.scheduler.stats(timeout) if loaded is not None else combine([])

    def on_finish(self, callback: Callable[[object, Result], None]) -> Callable[[], None]:
        """Call `callback(request, result)` on a scheduler thread for every finished request of every model
        (parley's own read-ahead excluded), loaded now or later; returns the function that removes it."""
        shared = self._shared
        shared.observers.append(callback)
        for _, loaded in shared.pool.all_loaded():
            loaded.scheduler.observers.append(callback)

        def remove() -> None:
            if callback in shared.observers:
                shared.observers.remove(callback)
            for _, loaded in shared.pool.all_loaded():
                if callback in loaded.scheduler.observers:
                    loaded.scheduler.observers.remove(callback)
        return remove

    # ---- lifetime ----------------------------------------------------------------------------------------
    def close(self, *, save: bool = True) -> None:
        """Stop every model's scheduler (replies still running end as cancelled and are recorded), save idle
        conversations' KV to disk when `save`, close the store, free the models (every door over them closes)."""
        self._shared.close(save=save)

    def __enter__(self) -> Parley:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load(model: str | os.PathLike | None = None, **options) -> Parley:
    """Load a model (a registered name or a GGUF file; default: the embedded SmolLM2-135M-Instruct). Options:
    parley.settings.Settings."""
    return Parley(model, **options)
