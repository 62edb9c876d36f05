"""Embedder: one vector per text from a loaded model's hidden states, in a llama.cpp context of its own.

    embedder = Embedder(engine, context_size=8192)      # nothing is made until the first request
    ids = embedder.tokens(["a text", [1, 2, 3]])         # texts tokenized, token ids checked (caller's thread)
    vectors = embedder.embed(ids)                        # float32 [n_texts, dimensions], each of unit length
    embedder.close()                                     # before the engine frees the model

The context: `llama_init_from_model` on the engine's llama_model (llama.cpp lets several contexts share one
model's weights) with `embeddings=True` and a pooling type; `max_tokens` KV cells, and n_batch = n_ubatch =
max_tokens, because llama.cpp pools per ubatch: a text cut across two ubatches comes back pooled over its last
piece only (measured: a 1,000-token text decoded with n_ubatch 256 gave a different vector than with 2048).
It is made on the first request and owned by one worker thread (a llama.cpp context is not thread-safe), fed by
a queue, as the scheduler owns the generation context.

Pooling: the model's own when its GGUF header names one (`{arch}.pooling_type`: an embedding model is trained
for it: CLS for BERT-style encoders, LAST for Qwen3-Embedding, MEAN for nomic and gte); else MEAN, the average
of the last layer's normalized hidden states over every token of the text. A chat model is not trained to put
a text's meaning into one token: its last token's state is shaped to predict the next token (how the text goes
on), while the mean takes every position's state into account (SGPT, Muennighoff 2022, found mean-style
pooling better than last-token for decoder LMs not trained for it; scripts/retrieval-eval measures both here).
Vectors are L2-normalized, so a dot product is the cosine similarity (OpenAI's vectors are unit length too).

Batches: texts go in order into decodes of about PACK_TOKENS tokens (a longer text alone, up to `max_tokens`)
and at most `MAX_SEQUENCES` texts, one sequence each; the KV is cleared before each decode (nothing is reused between texts). Requests take turns decode by
decode, so a small request is not stuck behind a large one; a request can be cancelled between decodes.

Memory: llama.cpp's embedding path still computes and stores the logits of every token of the batch (in the
graph and in the output buffer: 2 x n_vocab float32 per token, measured: a 1,000-token decode of SmolLM2 took
373 MB, flag or no flag on the tokens). `max_tokens` is therefore held to what LOGITS_BUDGET allows: 1,344
tokens for SmolLM2's 49,152-token vocabulary, 256 for Gemma 3's 262,144 (and never more than the model's
context). A longer text is a LimitExceeded naming that limit: OpenAI's API has no truncation field, so
nothing is cut silently; Ollama's `truncate: true` asks for the cut (fit(truncate=True): the text's first
`max_tokens` tokens, and how many were dropped, which the response reports).
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import llama_cpp.llama_cpp as llc
import numpy as np

from parley.engine.llamacpp import LlamaCppEngine, _Batch
from parley.errors import InvalidRequest, LimitExceeded, ModelError, ParleyError, ShuttingDown

log = logging.getLogger("parley.engine")

LOGITS_BUDGET = 512 << 20     # bytes of logits one embedding decode may write (see "Memory" above)
MAX_SEQUENCES = 64            # texts per decode (llama.cpp allows up to 256 sequences)
PACK_TOKENS = 512             # short texts are packed into decodes of about this many tokens, not max_tokens:
                              # the logits memory follows the largest decode seen, and texts/s barely moves
MAX_INPUTS = 2048             # texts per request: OpenAI's own limit
MIN_TOKENS = 64               # an embedding context is never smaller, whatever the vocabulary
POOLING = {llc.LLAMA_POOLING_TYPE_MEAN: "mean", llc.LLAMA_POOLING_TYPE_CLS: "cls",
           llc.LLAMA_POOLING_TYPE_LAST: "last"}
ENCODER_ARCHS = ("bert", "nomic-bert", "nomic-bert-moe", "neo-bert", "jina-bert-v2", "jina-bert-v3",
                 "modern-bert", "t5encoder", "eurobert")


class Cancelled(ParleyError):
    """The caller cancelled the request (a client that left); nobody reads this error."""

    status = 499
    code = "cancelled"


def header_pooling(metadata: dict) -> int | None:
    """The pooling type the GGUF header names (`{arch}.pooling_type`, llama.cpp's enum), None when it names none."""
    value = metadata.get(f"{metadata.get('general.architecture', '')}.pooling_type")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def is_embedding_model(metadata: dict) -> bool:
    """An embedding model by its GGUF header: it names a pooling type (what llama.cpp's converter writes for
    embedding models), its attention is not causal (an encoder), or its architecture is an encoder's."""
    arch = str(metadata.get("general.architecture", ""))
    pooling = header_pooling(metadata)
    return (pooling is not None and pooling in POOLING) or metadata.get(f"{arch}.attention.causal") is False \
        or arch in ENCODER_ARCHS


def tokens_for(n_vocab: int, context_size: int, budget: int = LOGITS_BUDGET) -> int:
    """The most tokens one embedding decode (and so one text) may hold: what `budget` bytes of logits allow
    (2 x n_vocab float32 per token), a multiple of 64, at least MIN_TOKENS, at most the model's context."""
    fit = budget // (8 * max(1, n_vocab)) // 64 * 64
    return max(MIN_TOKENS, min(context_size, fit)) if context_size >= MIN_TOKENS else max(1, context_size)


@dataclass
class _Job:
    """One request on the worker: its texts' token ids, the vectors filled in as decodes finish."""

    tokens: list[list[int]]
    out: np.ndarray
    cancel: threading.Event | None
    next: int = 0                          # the first text not embedded yet
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


_STOP = object()


class Embedder:
    """Embeddings of one loaded model (its engine), made on a worker thread of its own."""

    def __init__(self, engine: LlamaCppEngine, *, context_size: int, threads: int | None = None,
                 budget: int = LOGITS_BUDGET):
        self.engine = engine
        self.model_name = engine.name
        pooling = header_pooling(engine.metadata)
        if pooling == llc.LLAMA_POOLING_TYPE_RANK:
            self.refusal = (f"{engine.name} is a reranker (its GGUF pools with RANK: one score per text pair), "
                            "not an embedding model")
        else:
            self.refusal = ""
        self.pooling_type = pooling if pooling in POOLING else llc.LLAMA_POOLING_TYPE_MEAN
        self.pooling = POOLING[self.pooling_type]
        # a model's own n_embd_out when its pooled output is projected (some embedding models), else n_embd
        self.dimensions = int(llc.llama_model_n_embd_out(engine._model) or llc.llama_model_n_embd(engine._model))
        self.max_tokens = tokens_for(engine.n_vocab, context_size, budget)
        self.max_sequences = min(MAX_SEQUENCES, llc.llama_max_parallel_sequences(), self.max_tokens)
        self.threads = threads or engine.n_threads
        self._ctx = None
        self._inbox: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()          # starting and stopping the worker
        self._closed = False

    @property
    def footprint(self) -> int:
        """Bytes the embedding context takes once made (0 before): its KV cells and its logits at most."""
        if self._ctx is None:
            return 0
        return self.max_tokens * (self.engine.kv_bytes_per_cell + 8 * self.engine.n_vocab)

    # ---- the caller's thread ---------------------------------------------------------------------------------
    def tokens(self, inputs: Sequence[str | Sequence[int]], *, param: str = "input", limit: int = 0,
               limit_setting: str = "") -> list[list[int]]:
        """Each input's token ids: a text tokenized as the model reads plain text (BOS when the model wants
        one, control tokens written in it not parsed), or token ids taken as given (checked against the
        vocabulary). Refused by name: no inputs, too many, an empty one, one over the per-text limit (the
        embedding context, or `limit` when lower, a server's cap named by `limit_setting`)."""
        ids, _ = self.fit(inputs, param=param, limit=limit, limit_setting=limit_setting)
        return ids

    def fit(self, inputs: Sequence[str | Sequence[int]], *, param: str = "input", limit: int = 0,
            limit_setting: str = "", truncate: bool = False, hint: str = "") -> tuple[list[list[int]], list[int]]:
        """tokens(), and how many tokens each input lost: with `truncate`, an input over the per-text limit
        keeps its first tokens up to it (Ollama's truncation: the caller asked, and says so) instead of being
        refused; `hint` ends the refusal's message (what else the request could do)."""
        if self.refusal:
            raise InvalidRequest(self.refusal, param="model")
        items = [inputs] if isinstance(inputs, str) else list(inputs)
        if not items:
            raise InvalidRequest(f"{param} is empty: send a text, a list of texts, or token ids", param=param)
        if len(items) > MAX_INPUTS:
            raise LimitExceeded(f"{param} holds {len(items)} items; at most {MAX_INPUTS} per request",
                                param=param, code="too_many_inputs")
        most = min(self.max_tokens, limit) if limit > 0 else self.max_tokens
        out, cut = [], []
        for i, item in enumerate(items):
            where = f"{param}[{i}]" if len(items) > 1 else param
            ids = self._read(item, where, param)
            if len(ids) > most and not truncate:
                raise self._too_long(where, len(ids), most, limit, limit_setting, param, hint)
            out.append(ids[:most])
            cut.append(max(0, len(ids) - most))
        return out, cut

    def _read(self, item: str | Sequence[int], where: str, param: str) -> list[int]:
        """One input's token ids (a text tokenized, token ids checked); an empty one is refused."""
        e = self.engine
        if isinstance(item, str):
            if not item:
                raise InvalidRequest(f"{where} is an empty string", param=param)
            return e.tokenize(item, add_bos=e.add_bos, special=False)
        ids = list(item)
        if not ids:
            raise InvalidRequest(f"{where} is an empty list of token ids", param=param)
        e.check_tokens(ids, param)
        return ids

    def _too_long(self, where: str, n: int, most: int, limit: int, limit_setting: str, param: str,
                  hint: str) -> LimitExceeded:
        if limit_setting and most == limit:
            why = f"this server takes at most {most} prompt tokens ({limit_setting})"
        else:
            why = (f"{self.model_name} embeds at most {most} tokens per text (its embedding context; "
                   "nothing is cut silently: split the text)")
        return LimitExceeded(f"{where} is {n} tokens and {why}{hint}", param=param, code="context_length_exceeded")

    def embed(self, tokens: Sequence[Sequence[int]], *, cancel: threading.Event | None = None) -> np.ndarray:
        """Unit-length float32 vectors [len(tokens), dimensions] for token lists from tokens(). Blocks until
        they are made; `cancel` set stops the request between decodes (Cancelled)."""
        job = _Job([list(t) for t in tokens], np.zeros((len(tokens), self.dimensions), dtype=np.float32), cancel)
        if not job.tokens:
            return job.out
        with self._lock:
            if self._closed:
                raise ShuttingDown(f"{self.model_name} is unloading; it makes no more embeddings")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"parley-embed-{self.model_name}",
                                                daemon=True)
                self._thread.start()
            self._inbox.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.out

    def close(self) -> None:
        """Stop the worker (waiting requests fail as ShuttingDown, a running decode ends first) and free the
        context. Idempotent; the engine's model may be freed after it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            self._inbox.put(_STOP)
        if thread is not None:
            thread.join()

    # ---- the worker thread -----------------------------------------------------------------------------------
    def _run(self) -> None:
        active: collections.deque[_Job] = collections.deque()
        batch = None
        try:
            while True:
                # block only when nothing is under way; then take every request that has arrived
                task = self._inbox.get() if not active else self._next_task()
                while task is not None:
                    if task is _STOP:
                        for job in active:
                            self._finish(job, ShuttingDown(f"{self.model_name} is unloading"))
                        return
                    active.append(task)
                    task = self._next_task()
                job = active.popleft()
                if job.cancel is not None and job.cancel.is_set():
                    self._finish(job, Cancelled("the embedding request was cancelled"))
                    continue
                try:
                    if self._ctx is None:
                        self._open()
                    if batch is None:
                        batch = _Batch(self.max_tokens)
                    self._step(job, batch)
                except Exception as e:
                    self._finish(job, e)
                    continue
                if job.next >= len(job.tokens):
                    self._finish(job, None)
                else:
                    active.append(job)     # its next decode after the other requests' (they take turns)
        finally:
            if self._ctx is not None:
                llc.llama_free(self._ctx)
                self._ctx = None

    def _next_task(self):
        try:
            return self._inbox.get_nowait()
        except queue.Empty:
            return None

    @staticmethod
    def _finish(job: _Job, error: BaseException | None) -> None:
        job.error = error
        job.done.set()

    def _open(self) -> None:
        p = llc.llama_context_default_params()
        p.n_ctx = self.max_tokens
        p.n_batch = self.max_tokens
        p.n_ubatch = self.max_tokens       # a text is pooled within one ubatch (see the module's docstring)
        p.n_seq_max = self.max_sequences
        p.n_threads = self.threads
        p.n_threads_batch = self.threads
        p.embeddings = True
        p.pooling_type = self.pooling_type
        p.kv_unified = True                # every sequence may use any of the cells: texts differ in length
        p.no_perf = True
        ctx = llc.llama_init_from_model(self.engine._model, p)   # the engine's weights, a context of our own
        if not ctx:
            raise ModelError(f"llama.cpp could not create an embedding context of {self.max_tokens} tokens for "
                             f"{self.model_name} (out of memory?)")
        self._ctx = ctx
        self._mem = llc.llama_get_memory(ctx)   # NULL for an encoder (no KV): nothing to clear
        log.info("embedding context for %s: %d tokens, %d texts per decode, %s pooling, %d dimensions",
                 self.model_name, self.max_tokens, self.max_sequences, self.pooling, self.dimensions)

    def _step(self, job: _Job, b: _Batch) -> None:
        """One decode: the job's next texts that fit, one sequence each, pooled and normalized."""
        start, used = job.next, 0
        end = start
        room = max(min(PACK_TOKENS, self.max_tokens), len(job.tokens[start]))   # a long text still goes alone
        while end < len(job.tokens) and end - start < self.max_sequences and used + len(job.tokens[end]) <= room:
            used += len(job.tokens[end])
            end += 1
        at = 0
        for seq, ids in enumerate(job.tokens[start:end]):
            n = len(ids)
            b.token[at:at + n] = ids
            b.pos[at:at + n] = np.arange(n, dtype=np.int32)
            b.seq[at:at + n] = seq
            b.logits[at:at + n] = 1        # llama.cpp outputs every token of an embedding batch anyway
            at += n
        b.struct.n_tokens = used
        if self._mem:
            llc.llama_memory_clear(self._mem, True)
        rc = llc.llama_decode(self._ctx, b.struct)
        if rc != 0:
            raise ModelError(f"llama_decode failed with code {rc} on an embedding batch of {used} tokens")
        for seq in range(end - start):
            ptr = llc.llama_get_embeddings_seq(self._ctx, seq)
            if not ptr:
                raise ModelError(f"llama.cpp returned no pooled embedding for sequence {seq}")
            v = np.ctypeslib.as_array(ptr, shape=(self.dimensions,)).astype(np.float32)
            norm = float(np.linalg.norm(v))
            job.out[start + seq] = v / norm if norm > 0 else v
        job.next = end
