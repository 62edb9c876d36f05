"""LlamaCppEngine: llama.cpp through llama-cpp-python's low-level ctypes API. Token ids in, token ids out.

One llama_context holds every sequence. With kv_unified, all sequences share one KV buffer of `n_ctx` cells,
so forking a prefix into another sequence only tags cells (no copy). The engine is confined to one thread
(the scheduler's); only the read-only vocabulary calls (tokenize, piece, detokenize) may come from others.

Shapes: a decode call takes n <= n_batch tokens, each (token id, position, sequence id, wants logits);
logits come back inside llama.cpp (n_vocab float32 per flagged entry) and are read by the sampler, by batch
index. Two readers touch them before it, only for requests that ask: `log_probs` (the raw distribution, read
first) and a grammar's mask (engine/constraint.py), which sets the disallowed tokens to -inf in place.

Device: `gpu_layers` model layers go to the GPU when llama.cpp was built with a GPU backend (default: all of
them there, none on a CPU-only build); `device` says which ("cpu" or "gpu (N of M layers)").
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import llama_cpp.llama_cpp as llc
import numpy as np

from parley.engine import logs
from parley.engine.constraint import Constraint, GrammarCompiler
from parley.engine.gguf import read_metadata
from parley.engine.interrupt import deferred_sigint
from parley.engine.model_path import model_display_name, resolve_model_path
from parley.engine.settings import DECODE_BATCH, EngineSettings
from parley.engine.threads import ThreadGovernor
from parley.errors import InvalidRequest, ModelError, ParleyError
from parley.sampling import Grammar, SamplingParams

_backend_ready = False
log = logging.getLogger("parley.engine")
DET_MAX_UBATCH = 63  # deterministic mode: llama.cpp's CPU flash attention tiles ubatches of 64+ queries


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


_DEFAULTS = EngineSettings()


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """How to build the llama.cpp context, in llama.cpp's own terms (n_ctx is the KV budget in tokens, shared by
    all sequences). Parley builds it from its EngineSettings (`from_settings`); the defaults here are those of
    EngineSettings (n_batch: the scheduler's batch_tokens, DECODE_BATCH), so a number has one home."""

    model_path: Path | str | None = None
    n_ctx: int = _DEFAULTS.kv_size
    n_batch: int = DECODE_BATCH
    n_ubatch: int = 0  # 0 = n_batch (deterministic mode: at most 63)
    n_seq_max: int = _DEFAULTS.n_seq_max
    n_threads: int = _DEFAULTS.threads  # 0 = auto: every core, fewer while others compete (ThreadGovernor)
    flash_attn: bool | None = None  # None = llama.cpp decides (deterministic mode: on)
    # Batch-invariant results: a sequence gets bit-identical logits whatever else shares its batch, however
    # its prompt was chunked, and wherever its cells sit. Costs ~25% of prefill speed (`parley bench decode
    # --deterministic`). See docs/ARCHITECTURE.md, "Determinism".
    deterministic: bool = _DEFAULTS.deterministic
    gpu_layers: int | None = _DEFAULTS.gpu_layers  # None = all when llama.cpp has a GPU backend, else 0
    on_progress: Callable[[float], None] | None = None   # the load's progress, 0..1 (a page shows it)

    @classmethod
    def from_settings(cls, s: EngineSettings, *, batch_tokens: int, model_path: Path | str | None = None,
                      **changes) -> EngineConfig:
        """`batch_tokens`: the most tokens the scheduler puts in one decode call (its --batch-tokens);
        `changes`: a model's own settings over these (the registry's gpu_layers, kv_size as n_ctx, ...)."""
        # llama.cpp needs n_batch >= n_seq_max; the scheduler keeps each call to batch_tokens
        base = cls(model_path=model_path, n_ctx=s.kv_size, n_batch=max(batch_tokens, s.n_seq_max),
                   n_seq_max=s.n_seq_max, n_threads=s.threads, deterministic=s.deterministic,
                   gpu_layers=s.gpu_layers)
        return dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None})


def gpu_offload(requested: int | None, gpu_available: bool) -> int:
    """The n_gpu_layers handed to llama_model_params: `requested` as given (a negative value means every layer),
    or, for None, every layer (-1) when llama.cpp reports a GPU backend and 0 without one."""
    if requested is None:
        return -1 if gpu_available else 0
    if isinstance(requested, bool) or not isinstance(requested, int):
        raise InvalidRequest(f"gpu_layers (--gpu-layers) must be an integer, got {requested!r}", param="gpu_layers")
    return requested


def device_label(n_gpu_layers: int, n_layers: int, gpu_available: bool) -> str:
    """Which device runs the model, for start-up lines: "cpu" or "gpu (N of M layers)". `n_layers` counts what
    llama.cpp can offload (the repeating layers plus the output layer)."""
    if not gpu_available or n_gpu_layers == 0:
        return "cpu"
    n = n_layers if n_gpu_layers < 0 else min(n_gpu_layers, n_layers)
    return f"gpu ({n} of {n_layers} layers)"


def kv_bytes_per_cell(metadata: dict) -> int:
    """Bytes of K and V one token takes in the KV cache (f16), from the GGUF metadata; 0 if unknown."""
    try:
        arch = metadata["general.architecture"]
        n_layer = int(metadata[f"{arch}.block_count"])
        n_head = int(metadata[f"{arch}.attention.head_count"])
        n_head_kv = int(metadata.get(f"{arch}.attention.head_count_kv", n_head))
        n_embd = int(metadata[f"{arch}.embedding_length"])
        k_len = int(metadata.get(f"{arch}.attention.key_length", n_embd // n_head))
        v_len = int(metadata.get(f"{arch}.attention.value_length", n_embd // n_head))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return 0
    return n_layer * n_head_kv * (k_len + v_len) * 2


class KVFull(ParleyError):
    """llama_decode found no free KV cells for the batch (llama_decode returned 1). The scheduler evicts idle
    sequences or requeues a request and retries; only a request that cannot fit fails."""

    status = 503
    code = "kv_full"


class StateRejected(ParleyError):
    """llama.cpp refused a saved sequence state (llama_state_seq_set_data read nothing): the bytes do not fit
    this context (another model or context layout, a damaged payload), or no cells were free for them."""

    status = 500
    code = "state_rejected"


class _Batch:
    """A llama_batch whose arrays are numpy buffers owned here, filled by slicing (no per-token ctypes calls)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.token = np.zeros(capacity, dtype=np.int32)
        self.pos = np.zeros(capacity, dtype=np.int32)
        self.n_seq_id = np.ones(capacity, dtype=np.int32)
        self.seq = np.zeros(capacity, dtype=np.int32)
        self.logits = np.zeros(capacity, dtype=np.int8)
        i32p = ctypes.POINTER(ctypes.c_int32)
        base = self.seq.ctypes.data
        self._seq_ptrs = (i32p * capacity)(*[ctypes.cast(base + 4 * i, i32p) for i in range(capacity)])
        b = llc.llama_batch()
        b.token = self.token.ctypes.data_as(i32p)
        b.embd = None
        b.pos = self.pos.ctypes.data_as(i32p)
        b.n_seq_id = self.n_seq_id.ctypes.data_as(i32p)
        b.seq_id = ctypes.cast(self._seq_ptrs, ctypes.POINTER(i32p))
        b.logits = self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))
        self.struct = b


class LogProbs:
    """Log-probabilities of one logits row: `top` holds the k most likely (token, logprob), most likely first
    (ties: the lower id first), `logprob(token)` any token's. Reads the row it was made from, so use it before
    the next decode (a grammar's mask changes only tokens that cannot be drawn, never the chosen one)."""

    __slots__ = ("_row", "_lse", "top")

    def __init__(self, row: np.ndarray, lse: float, top: tuple[tuple[int, float], ...]):
        self._row = row
        self._lse = lse
        self.top = top

    @classmethod
    def of(cls, row: np.ndarray, k: int) -> LogProbs:
        m = float(row.max())
        lse = m + float(np.log(np.exp(row - np.float32(m)).sum(dtype=np.float64)))   # shifted: no overflow
        top: tuple[tuple[int, float], ...] = ()
        if k > 0:
            ids = np.argpartition(row, -k)[-k:]
            ids = ids[np.lexsort((ids, -row[ids]))]        # by logit, descending; ties by id
            top = tuple((int(t), float(row[t]) - lse) for t in ids)
        return cls(row, lse, top)

    def logprob(self, token: int) -> float:
        return float(self._row[token]) - self._lse


class Sampler:
    """A llama.cpp sampler chain for one request. Free it with close() (the scheduler does, on finish).
    `argmax`: the chain is plain greedy (no penalties, no bias), so sample() takes the logits row's argmax
    itself: the same token (the first of equal maxima, as llama.cpp's greedy stage) in 6 us instead of the
    chain's 107 us, which copies all 49,152 logits into a candidate array first (per token, on one stream)."""

    __slots__ = ("ptr", "seed", "argmax")

    def __init__(self, ptr, seed: int, argmax: bool = False):
        self.ptr = ptr
        self.seed = seed
        self.argmax = argmax

    def close(self) -> None:
        if self.ptr is not None:
            llc.llama_sampler_free(self.ptr)
            self.ptr = None

    def __del__(self):  # a request dropped without close() must not leak its chain
        self.close()


class LlamaCppEngine:
    """Owns a llama_model and one llama_context with n_seq_max sequences over one unified KV buffer."""

    def __init__(self, config: EngineConfig | None = None, **overrides):
        global _backend_ready
        cfg = config or EngineConfig()
        if overrides:
            cfg = EngineConfig(**{**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__}, **overrides})
        path = resolve_model_path(cfg.model_path)
        n_max = llc.llama_max_parallel_sequences()
        if cfg.n_ctx < max(16, cfg.n_seq_max) or not 1 <= cfg.n_seq_max <= n_max or cfg.n_batch < cfg.n_seq_max:
            # llama.cpp aborts the process (GGML_ASSERT on its output buffer) when n_batch, which it caps at n_ctx,
            # is below n_seq_max
            raise InvalidRequest(
                f"engine settings out of range: KV size n_ctx={cfg.n_ctx} (--kv-size, at least "
                f"{max(16, cfg.n_seq_max)}), n_seq_max={cfg.n_seq_max} (1..{n_max}), n_batch={cfg.n_batch} "
                f"(at least n_seq_max)",
                param="engine",
            )
        if not _backend_ready:
            logs.install()
            llc.llama_backend_init()
            _backend_ready = True
        self.metadata = read_metadata(path)
        self.model_path = path
        self.name = model_display_name(path, self.metadata)
        self._model = None
        self._ctx = None

        gpu = bool(llc.llama_supports_gpu_offload())
        self.model_params = llc.llama_model_default_params()
        self.model_params.n_gpu_layers = gpu_offload(cfg.gpu_layers, gpu)
        if cfg.gpu_layers and not gpu:
            log.warning("gpu_layers (--gpu-layers %d) asks for GPU layers, but this llama.cpp build has no GPU "
                        "backend: the model runs on the CPU. For a GPU, rebuild llama-cpp-python with its backend "
                        "(make install LLAMA_CMAKE_ARGS=-DGGML_CUDA=ON)", cfg.gpu_layers)
        with deferred_sigint() as interrupt:
            def on_load(fraction: float, _data) -> bool:
                if cfg.on_progress is not None:
                    cfg.on_progress(fraction)
                return not interrupt.requested
            progress = llc.llama_progress_callback(on_load)
            self.model_params.progress_callback = progress  # Ctrl-C aborts the load (engine/interrupt.py)
            self._model = llc.llama_model_load_from_file(str(path).encode(), self.model_params)
            self.model_params.progress_callback = llc.llama_progress_callback(0)
            if interrupt.requested:
                self.close()
                raise KeyboardInterrupt
        if not self._model:
            raise ModelError(f"llama.cpp could not load the model {path} (an unsupported architecture or a damaged file)")
        self._vocab = llc.llama_model_get_vocab(self._model)
        self.device = device_label(self.model_params.n_gpu_layers, llc.llama_model_n_layer(self._model) + 1, gpu)

        threads = cfg.n_threads or default_threads()
        n_ubatch = cfg.n_ubatch or cfg.n_batch
        flash_attn = cfg.flash_attn
        if cfg.deterministic:
            # llama.cpp's CPU flash attention has three paths; only the per-cell one is independent of batch
            # composition and cell placement. It runs for ubatches of 2..63 queries: ubatches stay under 64
            # (the tiled path starts there) and a ubatch that would hold one query gets a scratch partner
            # (decode()), since a single query over 512+ cells takes the KV-split path, whose per-thread partial
            # sums depend on where the chunk boundary falls among the sequence's cells.
            n_ubatch = max(2, min(n_ubatch, DET_MAX_UBATCH))
            flash_attn = True
        cparams = llc.llama_context_default_params()
        cparams.n_ctx = cfg.n_ctx
        cparams.n_batch = cfg.n_batch + (1 if cfg.deterministic else 0)  # + the scratch partner
        cparams.n_ubatch = n_ubatch
        cparams.n_seq_max = cfg.n_seq_max
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        cparams.kv_unified = True
        cparams.no_perf = True
        if flash_attn is not None:
            cparams.flash_attn_type = (
                llc.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else llc.LLAMA_FLASH_ATTN_TYPE_DISABLED
            )
        self._ctx = llc.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            self.close()
            raise ModelError(f"llama.cpp could not create a context of {cfg.n_ctx} tokens for {path} (out of memory?)")
        self._mem = llc.llama_get_memory(self._ctx)
        self.config = cfg
        self.n_ctx = llc.llama_n_ctx(self._ctx)
        self.deterministic = cfg.deterministic
        # what callers may pass to decode(); llama.cpp caps its n_batch at n_ctx
        self.n_batch = min(cfg.n_batch, llc.llama_n_batch(self._ctx) - (1 if cfg.deterministic else 0))
        self.n_ubatch = llc.llama_n_ubatch(self._ctx)
        # sequence ids callers may use; deterministic mode keeps the last one as the scratch partner
        self.n_seq_max = cfg.n_seq_max - 1 if cfg.deterministic else cfg.n_seq_max
        self._scratch_seq = cfg.n_seq_max - 1
        self.n_threads = threads
        self.governor = ThreadGovernor(threads) if not cfg.n_threads and threads > 1 else None
        self._auto_governor = self.governor
        self._threads_now = threads
        self.n_vocab = llc.llama_vocab_n_tokens(self._vocab)
        self.n_ctx_train = llc.llama_model_n_ctx_train(self._model)
        self.kv_bytes_per_cell = kv_bytes_per_cell(self.metadata)
        self.bos_id = llc.llama_vocab_bos(self._vocab)
        self.eos_id = llc.llama_vocab_eos(self._vocab)
        self.add_bos = bool(llc.llama_vocab_get_add_bos(self._vocab))
        self._batch = _Batch(max(2, cfg.n_batch + 1))
        self._pieces: list[bytes | None] = [None] * self.n_vocab
        self._eog = np.zeros(self.n_vocab, dtype=bool)
        for t in range(self.n_vocab):
            if llc.llama_vocab_is_eog(self._vocab, t):
                self._eog[t] = True
        self.eog_ids = frozenset(int(t) for t in np.flatnonzero(self._eog))
        self._grammars = GrammarCompiler(self._vocab, self.n_vocab, self.eog_ids)
        # llama_get_logits_ith as a bare address: a numpy view of one row costs ~2 us (ctypes' pointer ~6)
        self._logits_ith = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32)(
            ("llama_get_logits_ith", llc._lib))
        self._row_type = ctypes.c_float * self.n_vocab

    # ---- model facts -------------------------------------------------------------------------------------
    @property
    def chat_template(self) -> str | None:
        raw = llc.llama_model_chat_template(self._model, None)
        return raw.decode("utf-8", errors="replace") if raw else None

    def special_text(self, token: int) -> str:
        """The text of a special token such as BOS/EOS ("" when the model has none)."""
        if token < 0:
            return ""
        return self._piece(token, special=True).decode("utf-8", errors="replace")

    @property
    def bos_text(self) -> str:
        return self.special_text(self.bos_id)

    @property
    def eos_text(self) -> str:
        return self.special_text(self.eos_id)

    def is_eog(self, token: int) -> bool:
        return bool(self._eog[token])

    # ---- vocabulary (thread-safe: read-only) -------------------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        """Text -> token ids. special=True parses control tokens such as <|im_start|> written in the text."""
        data = text.encode("utf-8")
        cap = len(data) + 8
        while True:
            buf = (llc.llama_token * cap)()
            n = llc.llama_tokenize(self._vocab, data, len(data), buf, cap, add_bos, special)
            if n >= 0:
                return buf[:n]
            cap = -n

    def _piece(self, token: int, *, special: bool) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = llc.llama_token_to_piece(self._vocab, token, buf, 64, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llc.llama_token_to_piece(self._vocab, token, buf, -n, 0, special)
        return buf.raw[:n]

    def piece(self, token: int) -> bytes:
        """The bytes one token adds to generated text (control tokens add nothing). May be part of a character."""
        p = self._pieces[token]
        if p is None:
            p = self._pieces[token] = self._piece(token, special=False)
        return p

    def vocab_fingerprint(self) -> str:
        """A hash of the vocabulary (every token's bytes, special ones included, and the BOS/EOS ids): two models
        with the same fingerprint turn the same text into the same token ids."""
        h = hashlib.sha256()
        for t in range(self.n_vocab):
            piece = self._piece(t, special=True)
            h.update(len(piece).to_bytes(2, "little") + piece)
        h.update(f"{self.bos_id},{self.eos_id},{self.add_bos}".encode())
        return h.hexdigest()

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def check_tokens(self, tokens: Sequence[int], param: str = "tokens") -> None:
        for t in tokens:
            if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < self.n_vocab:
                raise InvalidRequest(f"token ids must be integers in [0, {self.n_vocab}), got {t!r}", param=param)

    def set_threads(self, n: int) -> None:
        """Use `n` threads from now on (0: all cores with the ThreadGovernor). Scheduler thread only."""
        if n < 0:
            raise InvalidRequest(f"threads must be >= 0, got {n}", param="threads")
        want = n or self.n_threads
        if n == 0 and self.n_threads > 1:  # back to auto: the governor keeps what it learnt
            self._auto_governor = self._auto_governor or ThreadGovernor(self.n_threads)
            self.governor = self._auto_governor
            want = self.governor.current
        else:
            self.governor = None
        llc.llama_set_n_threads(self._ctx, want, want)
        self._threads_now = want

    # ---- decoding (scheduler thread only) ----------------------------------------------------------------
    def decode(
        self,
        tokens: Sequence[int],
        positions: Sequence[int],
        seq_ids: Sequence[int],
        logits: Sequence[bool],
    ) -> None:
        """Run one llama_decode over n <= n_batch tokens. Logits are kept for the entries flagged in `logits`,
        to be read by sample(sampler, batch_index)."""
        n = len(tokens)
        if not 0 < n <= self.n_batch:
            raise ValueError(f"decode takes 1..{self.n_batch} tokens, got {n}")
        b = self._batch
        b.token[:n] = tokens
        b.pos[:n] = positions
        b.seq[:n] = seq_ids
        b.logits[:n] = logits
        # llama.cpp cuts the batch into ubatches of n_ubatch tokens in order (a unified KV buffer): a batch of
        # 64 leaves a lone last query. See __init__: a partner query keeps it on the batch-invariant path.
        pad = self.deterministic and n % self.n_ubatch == 1
        if pad:
            b.token[n] = b.token[0]
            b.pos[n] = 0
            b.seq[n] = self._scratch_seq
            b.logits[n] = 0
        b.struct.n_tokens = n + pad
        gov = self.governor
        if gov is not None:
            want = gov.threads_for_next_call()
            if want != self._threads_now:
                llc.llama_set_n_threads(self._ctx, want, want)
                self._threads_now = want
            t0 = time.perf_counter()
            rc = llc.llama_decode(self._ctx, b.struct)
            gov.record(n, time.perf_counter() - t0)
        else:
            rc = llc.llama_decode(self._ctx, b.struct)
        if pad:
            llc.llama_memory_seq_rm(self._mem, self._scratch_seq, -1, -1)
        if rc == 1:
            raise KVFull(f"no free KV cells for a batch of {n} tokens (KV budget {self.n_ctx} tokens)")
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with code {rc}")

    def make_sampler(self, params: SamplingParams, history: Sequence[int] = ()) -> Sampler:
        """A sampler chain for `params`: penalties -> top-k -> top-p -> min-p -> temperature -> seeded draw,
        or penalties -> argmax when temperature is 0. `history` (the prompt's tail) primes the penalties."""
        seed = params.seed if params.seed is not None else secrets.randbits(32)
        chain = llc.llama_sampler_chain_init(llc.llama_sampler_chain_default_params())
        add = llc.llama_sampler_chain_add
        if params.ignore_eos and self.eog_ids:  # end-of-turn tokens can never be drawn
            bias = (llc.llama_logit_bias * len(self.eog_ids))(
                *[llc.llama_logit_bias(t, float("-inf")) for t in sorted(self.eog_ids)])
            add(chain, llc.llama_sampler_init_logit_bias(self.n_vocab, len(self.eog_ids), bias))
        penalised = params.repeat_penalty != 1.0 or params.presence_penalty or params.frequency_penalty
        if penalised and params.penalty_last_n:
            add(chain, llc.llama_sampler_init_penalties(
                self.n_vocab, params.penalty_last_n, params.repeat_penalty, params.frequency_penalty, params.presence_penalty))
        if params.greedy:
            add(chain, llc.llama_sampler_init_greedy())
        else:
            if params.top_k > 0:
                add(chain, llc.llama_sampler_init_top_k(params.top_k))
            if params.top_p < 1.0:
                add(chain, llc.llama_sampler_init_top_p(params.top_p, 1))
            if params.min_p > 0.0:
                add(chain, llc.llama_sampler_init_min_p(params.min_p, 1))
            add(chain, llc.llama_sampler_init_temp(params.temperature))
            add(chain, llc.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        plain = params.greedy and not (params.ignore_eos and self.eog_ids) and not (penalised and params.penalty_last_n)
        sampler = Sampler(chain, seed, argmax=plain)
        if penalised and params.penalty_last_n:
            for t in history[-params.penalty_last_n:]:
                llc.llama_sampler_accept(chain, t)
        return sampler

    def logits(self, batch_index: int) -> np.ndarray:
        """A copy of the logits of batch entry `batch_index` of the last decode (n_vocab floats)."""
        return self._logits_view(batch_index).copy()

    def _logits_view(self, batch_index: int) -> np.ndarray:
        """llama.cpp's own logits row for batch entry `batch_index` (valid until the next decode; writable)."""
        addr = self._logits_ith(self._ctx, batch_index)
        if not addr:
            raise ValueError(f"batch entry {batch_index} of the last decode has no logits")
        return np.frombuffer(self._row_type.from_address(addr), dtype=np.float32)

    def constrain(self, grammar: Grammar) -> Constraint:
        """Compile `grammar` for this vocabulary into a fresh matcher for one request. Any thread (the vocabulary
        is read-only); raises InvalidRequest (param "grammar") for a grammar it cannot enforce."""
        return self._grammars.compile(grammar)

    def log_probs(self, batch_index: int, k: int) -> LogProbs:
        """The distribution the model gave batch entry `batch_index` (log-softmax of the raw logits, before any
        sampler stage or grammar mask): read it before sample() masks the row. `k` most likely tokens in `top`."""
        return LogProbs.of(self._logits_view(batch_index), k)

    def sample(self, sampler: Sampler, batch_index: int, constraint: Constraint | None = None) -> int:
        """Draw the next token from the logits of batch entry `batch_index` of the last decode; with a
        `constraint`, only from the tokens its grammar allows next (the caller accepts the token into it)."""
        if sampler.argmax:
            row = self._logits_view(batch_index)
            if constraint is not None:
                constraint.apply(row)
            return int(row.argmax())
        if constraint is not None:
            constraint.apply(self._logits_view(batch_index))
        return llc.llama_sampler_sample(sampler.ptr, self._ctx, batch_index)

    # ---- per-sequence KV (scheduler thread only) ---------------------------------------------------------
    def kv_copy(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        """Make dst also hold src's cells for positions [p0, p1) (zero-copy: the cells are shared)."""
        llc.llama_memory_seq_cp(self._mem, src, dst, p0, p1)

    def kv_remove(self, seq: int, p0: int = -1, p1: int = -1) -> None:
        """Drop positions [p0, p1) of seq (p1 = -1: to the end). Cells no other sequence holds are freed."""
        if not llc.llama_memory_seq_rm(self._mem, seq, p0, p1):
            raise RuntimeError(f"llama.cpp refused to remove positions [{p0}, {p1}) of sequence {seq}")

    def kv_pos_max(self, seq: int) -> int:
        """The last position seq holds, -1 when empty."""
        return llc.llama_memory_seq_pos_max(self._mem, seq)

    def state_get(self, seq: int) -> bytearray:
        """Serialize one sequence's KV (the cells for its positions) to bytes."""
        size = llc.llama_state_seq_get_size(self._ctx, seq)
        buf = bytearray(size)
        n = llc.llama_state_seq_get_data(self._ctx, (ctypes.c_uint8 * size).from_buffer(buf), size, seq)
        if n != size:
            raise RuntimeError(f"llama_state_seq_get_data wrote {n} of {size} bytes for sequence {seq}")
        return buf

    def state_set(self, seq: int, data: bytes | bytearray | memoryview) -> None:
        """Load bytes from state_get into (empty) sequence `seq`; raises StateRejected when llama.cpp refuses
        them (it does not say why: the caller knows whether cells were free)."""
        size = len(data)
        arr = (ctypes.c_uint8 * size).from_buffer_copy(data) if isinstance(data, bytes) else \
            (ctypes.c_uint8 * size).from_buffer(data)
        if llc.llama_state_seq_set_data(self._ctx, arr, size, seq) == 0:
            self.kv_remove(seq)
            raise StateRejected(f"llama.cpp refused {size} bytes of saved KV state for sequence {seq}")

    # ---- lifetime ----------------------------------------------------------------------------------------
    def close(self) -> None:
        if self._ctx:
            llc.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            llc.llama_model_free(self._model)
            self._model = None

    def __enter__(self) -> LlamaCppEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
