"""Scheduler: the one thread that owns the engine. Continuous batching over every active request.

Other threads reach this one only through its inbox, a closed set of typed tasks (tasks.py: Submit, Cancel,
Stats, Persist, Unpin, Retire, Drop, SetThreads, Tune, Stop), between two steps. Each step:
    1. drop cancelled requests, admit waiting ones (prefix cache lookup, fork or restore, KV reservation),
    2. build ONE batch: one token for every decoding request, then prompt chunks of prefilling requests
       (chunked prefill: while anyone is decoding, at most `prefill_chunk` prompt tokens per step),
    3. llama_decode, sample, stream text (UTF-8 safe, stop strings held back), finish what is done.
A request with a grammar (SamplingParams.grammar) is compiled at submit, in the caller's thread; each of its
tokens is drawn within the grammar's mask and it ends ("stop") once the grammar is complete. A request with
logprobs reads the raw distribution of each token's logits before it is sampled. Neither costs the others.
A finished request's sequence stays in the prefix cache; the next turn of its conversation forks from it.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from parley.engine.constraint import ConstraintError
from parley.engine.llamacpp import KVFull, StateRejected
from parley.errors import InvalidRequest, LimitExceeded, Overloaded, ShuttingDown
from parley.paths import check_data_dir
from parley.sampling import SamplingParams
from parley.scheduler.kv_store import KVStore, model_fingerprint
from parley.scheduler.ngram import NgramIndex
from parley.scheduler.prefix_cache import PrefixCache, Slot
from parley.scheduler.prefix_index import BLOCK, chain_hashes, shared_blocks
from parley.scheduler.request import Chunk, Request, Result, Status, TokenLogprob
from parley.scheduler.settings import DRAFT_MAX, IDLE_CELLS, SchedulerSettings
from parley.scheduler.speculation import Acceptance, BatchCost, draft_length
from parley.scheduler.stats import SchedulerStats, Totals
from parley.scheduler.stream import Stream, Streams
from parley.scheduler.tasks import (
    STOPPED,
    Answering,
    Cancel,
    Drop,
    Inbox,
    Persist,
    Retire,
    SetThreads,
    Stats,
    Stop,
    Submit,
    Task,
    Tune,
    Unpin,
)
from parley.text.detokenize import IncrementalDetokenizer
from parley.text.stops import StopMatcher

log = logging.getLogger("parley.scheduler")
NO_DRAFT: tuple[int, ...] = ()   # a request's draft when it drafts nothing this step (no list built per token)

MiB = 1 << 20
QUIET_S = 0.05  # an engine quiet this long moves idle conversations out (Scheduler._wait)
SHARE_MIN_TOKENS = 64  # a waiting request holds back for a running prefill that will compute this much of its prompt


def make_store(model_path: Path, settings: SchedulerSettings, cache_dir: Path | None) -> KVStore | None:
    """The RAM/disk tiers the settings ask for. The disk tier lives in the data directory, checked first: a file
    in the way or a directory that cannot be created is a DataDirError, one that cannot be written is used
    read-only."""
    ram, disk_bytes = settings.ram_cache_bytes, settings.disk_cache_bytes
    if cache_dir is None or disk_bytes <= 0:
        return KVStore(ram_bytes=ram, disk_bytes=0, disk_dir=None, model_hash=None) if ram > 0 else None
    writable = check_data_dir(cache_dir)
    model_hash = model_fingerprint(model_path, cache_dir, remember=writable)
    return KVStore(ram_bytes=ram, disk_bytes=disk_bytes, disk_dir=cache_dir / "kv" / model_hash[:16],
                   model_hash=model_hash, read_only=not writable)


class Batch(NamedTuple):
    """One decode call: parallel token / position / sequence / wants-logits lists, and who is in it."""

    tokens: list[int]
    positions: list[int]
    seqs: list[int]
    logits: list[bool]
    decoding: list[Request]                 # one token each
    chunks: list[tuple[Request, int]]       # prompt read up to this position


class Scheduler(Streams):
    """`settings` (the scheduler's section) gives the limits (max_running, max_waiting, batch_tokens,
    prefill_chunk, ctx_size, kv_idle_cells, the RAM/disk budgets); `cache_dir` is where the disk tier lives
    (None: no disk tier)."""

    def __init__(self, engine, settings: SchedulerSettings | None = None, *, cache_dir: Path | None = None):
        s = settings or SchedulerSettings()
        self.engine = engine
        det = getattr(engine, "deterministic", False)
        if s.kv_idle_cells is None:
            # moving conversations out leaves holes that later cells fill out of position order, and attention
            # sums cells in buffer order: deterministic mode keeps them, so its outputs stay batch-invariant
            s = dataclasses.replace(s, kv_idle_cells=-1 if det else IDLE_CELLS)
        if s.draft_max is None:  # rejected drafts leave holes too (and the same reason holds)
            s = dataclasses.replace(s, draft_max=0 if det else DRAFT_MAX)
        self.settings = s
        self.context_size = min(s.ctx_size or engine.n_ctx_train or engine.n_ctx, engine.n_ctx)
        self.max_batch = min(s.batch_tokens, engine.n_batch)
        store = make_store(engine.model_path, s, cache_dir)
        # deterministic mode borrows one cell per decode call for its scratch partner token (engine.decode)
        kv_budget = engine.n_ctx - (1 if getattr(engine, "deterministic", False) else 0)
        self.cache = PrefixCache(engine, kv_budget=kv_budget, store=store)
        self.running: list[Request] = []
        self.waiting: collections.deque[Request] = collections.deque()
        self.observers: list[Callable[[Request, Result], None]] = []
        self.totals = Totals()
        self.cost = BatchCost()            # what a decode step of n tokens takes here ...
        self.acceptance = Acceptance()     # ... and how often drafts come true: when drafting pays
        self._inbox = Inbox()
        self._queued = 0                   # users' Submit tasks in the inbox, not yet waiting (see busy())
        self._queued_lock = threading.Lock()
        self._stopping = False
        self._save_on_stop = True
        self._thread = threading.Thread(target=self._run, name="parley-scheduler", daemon=True)
        self._thread.start()

    # ---- any thread --------------------------------------------------------------------------------------
    def submit(self, prompt: Sequence[int], params: SamplingParams, sink: Callable, *, pin: bool = False,
               prefill_only: bool = False, param: str = "prompt", internal: bool = False,
               session: str | None = None) -> Request:
        """Queue a generation. Raises (in the caller's thread) for a prompt that cannot fit, a full queue or a
        grammar the engine cannot enforce (InvalidRequest, param "grammar", compiled here: ~1 ms, cached);
        `param` names the request field the prompt came from, for the prompt's errors. `session` (the
        conversation it continues) is for an upstream engine's routing (upstream/engine.py); here the prompt's
        own tokens find its cached prefix."""
        prompt = list(prompt)
        if not prompt:
            raise InvalidRequest("the prompt is empty", param=param)
        if self._stopping:
            raise ShuttingDown("the scheduler is shutting down; no new requests")
        n = len(prompt)
        room = self.context_size - n
        if room < (0 if prefill_only else 1):
            raise LimitExceeded(
                f"the prompt is {n} tokens; the context holds {self.context_size} tokens "
                f"(with at least 1 left to generate): {n - self.context_size + 1} tokens too many",
                param=param, code="context_length_exceeded")
        if len(self.waiting) >= self.settings.max_waiting:
            raise Overloaded(f"{len(self.waiting)} requests are already waiting (max_waiting, --max-waiting); "
                             "retry later")
        req = Request(prompt=prompt, params=params, sink=sink)
        if params.grammar is not None and not prefill_only:
            req.constraint = self.engine.constrain(params.grammar)
        req.max_new = 0 if prefill_only else min(params.max_tokens, room)
        req.pin = pin
        req.internal = internal
        if not internal:
            with self._queued_lock:
                self._queued += 1
        self._inbox.put(Submit(req))
        return req

    def busy(self) -> bool:
        """Whether any request of a user (not parley's own read-ahead) is queued, waiting or running: read from
        another thread (a model pool deciding whether this model may unload) without stopping the loop."""
        if self._queued:
            return True
        return any(not r.internal for r in list(self.running)) or any(not r.internal for r in list(self.waiting))

    def cancel(self, req: Request) -> None:
        """Stop a request within one step; its KV so far stays cached."""
        if req.status is not Status.FINISHED and not req.cancelled:
            req.cancelled = True
            self._inbox.put(Cancel(req))

    def _ask(self, task: Answering, timeout: float | None = None):
        """Hand `task` to the scheduler thread and wait for its answer (on that thread itself, an observer's
        call say, it is handled at once). Raises RuntimeError when the scheduler has stopped, TimeoutError after
        `timeout` seconds, and whatever the task raised."""
        if threading.current_thread() is self._thread:
            self._handle(task)
        elif not self._thread.is_alive():
            raise RuntimeError(STOPPED)
        else:
            self._inbox.put(task)
        return task.future.result(timeout)

    def prefetch(self, tokens: Sequence[int]) -> None:
        """Read `tokens` into the cache now, generating nothing (the next turn's fixed header while the user
        types). Best effort: a prompt that cannot fit, or a busy queue, simply skips it."""
        if not tokens:
            return
        try:
            self.submit(tokens, SamplingParams(max_tokens=1), lambda ev: None, prefill_only=True, internal=True)
        except (LimitExceeded, Overloaded, InvalidRequest, ShuttingDown):
            pass

    def pin(self, tokens: Sequence[int], *, persist: bool = False,
            watch: Callable[[Stream], None] | None = None) -> tuple[Slot, Result]:
        """Read `tokens` once (or restore them from RAM/disk) and keep their KV pinned (never evicted) until
        unpin(); with `persist`, the disk tier holds them too from now on (a document: ready after a restart).
        `watch` gets the read's Stream as soon as it is submitted (its progress() says how far the read is).
        Returns the handle and how the read went (cached / prefilled tokens)."""
        stream = Stream(lambda: None)
        req = self.submit(tokens, SamplingParams(max_tokens=1), stream.put, pin=True, prefill_only=True)
        stream.request = req
        if watch is not None:
            watch(stream)
        res = stream.wait()
        if res.finish_reason == "error":
            raise InvalidRequest(f"could not pin the prefix: {res.error}", param="prefix")
        if persist:
            self._ask(Persist(req.slot))
        return req.slot, res

    def retire(self, tokens: Sequence[int]) -> None:
        """The sequences holding `tokens` (a conversation's earlier window) will not be continued: move them out
        of the context between two steps (PrefixCache.retire). Does not wait."""
        if self._thread.is_alive():
            self._inbox.put(Retire(tuple(tokens)))

    def drop_cached(self, *, save: bool = True) -> int:
        """Forget every idle, unpinned cached sequence (first saved to the RAM/disk tiers when `save` and they
        exist). Returns how many were dropped. For benchmarks and tests that need a cold cache."""
        return self._ask(Drop(save))

    def unpin(self, slot: Slot) -> None:
        self._ask(Unpin(slot))

    def stats(self, timeout: float | None = 30.0) -> SchedulerStats:
        """A snapshot for /metrics and the benchmarks (computed on the scheduler thread, between steps)."""
        return self._ask(Stats(), timeout)

    def set_threads(self, n: int) -> None:
        """Decode with `n` threads from the next step on (0: every core, with the thread governor, which keeps
        what it learnt). For benchmarks that compare thread counts on one engine."""
        self._ask(SetThreads(n))

    TUNABLE = ("kv_idle_cells", "draft_max")

    def tune(self, **changes: int) -> None:
        """Use these settings from the next step on (`kv_idle_cells`: -1 keeps every idle conversation in the
        context; `draft_max`: 0 stops drafting), checked like their flags. For benchmarks that compare a
        setting on and off on one engine."""
        unknown = sorted(set(changes) - set(self.TUNABLE))
        if unknown:
            raise ValueError(f"only {', '.join(self.TUNABLE)} can change while running, not {', '.join(unknown)}")
        self._ask(Tune(tuple(changes.items())))

    def close(self, *, save: bool = True, timeout: float = 120.0) -> None:
        """Stop the loop. With save, idle sequences and RAM states are written to the disk tier first."""
        if not self._thread.is_alive():
            return
        self._inbox.put(Stop(save))
        self._thread.join(timeout)

    # ---- the scheduler thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping:
            if not self.running and not self.waiting:
                self._handle(self._wait())
            while not self._stopping and (task := self._inbox.get_nowait()) is not None:
                self._handle(task)
            if self._stopping:
                break
            try:
                self._step()
            except Exception as e:  # an engine failure must not leave clients hanging
                log.exception("scheduler step failed")
                for r in list(self.running):
                    self._finish(r, "error", error=f"internal error: {e}", code="internal")
        self._shutdown()

    def _wait(self) -> Task:
        """Nothing to run: the next task. Idle conversations over --kv-idle-cells leave the context once the
        engine has been quiet for QUIET_S (the user is reading the reply): the next request that places cells
        would otherwise move them out first, and a returning conversation's first token waited for that copy
        (13 ms of a 160 ms TTFT here). An immediate follow-up still finds its conversation's cells live, and so
        does a conversation too short to be worth saving."""
        cap = self.settings.kv_idle_cells
        if cap < 0 or self.cache.store is None or self.cache.idle_cells() <= cap:
            return self._inbox.get()
        task = self._inbox.get(timeout=QUIET_S)
        # one sequence at a time, so a request that comes meanwhile waits for one copy at most
        while task is None and self.cache.trim_idle(cap, save_only=True):
            task = self._inbox.get_nowait()
        return task if task is not None else self._inbox.get()

    def _handle(self, task: Task) -> None:
        match task:
            case Submit(request=r):
                self.waiting.append(r)
                if not r.internal:
                    with self._queued_lock:
                        self._queued -= 1
            case Cancel():
                pass  # the flag is set: the step that follows ends the request
            case Stats():
                _answer(task, self._stats)
            case Persist(slot=slot):
                _answer(task, lambda: self.cache.persist(slot))
            case Unpin(slot=slot):
                _answer(task, lambda: self.cache.unpin(slot))
            case Retire(tokens=tokens):
                try:
                    self.cache.retire(tokens)
                except Exception:  # nobody waits for this one, and the loop must go on
                    log.exception("retiring a window's sequences failed")
            case Drop(save=save):
                _answer(task, lambda: self._drop_idle(save))
            case SetThreads(n=n):
                _answer(task, lambda: self.engine.set_threads(n))
            case Tune(changes=changes):
                _answer(task, lambda: self._tune(dict(changes)))
            case Stop(save=save):
                self._save_on_stop = save
                self._stopping = True
            case _:  # Inbox.put refuses these; reaching here is a bug in this file
                raise TypeError(f"not a scheduler task: {task!r}")

    def _drop_idle(self, save: bool) -> int:
        idle = self.cache.idle_slots()
        for slot in idle:
            if save:
                self.cache.evict(slot)
            else:
                self.cache.drop(slot)
        return len(idle)

    def _tune(self, changes: dict[str, int]) -> None:
        self.settings = dataclasses.replace(self.settings, **changes)  # checked as the flags are

    def _shutdown(self) -> None:
        for r in list(self.running):
            self._finish(r, "cancelled")
        while self.waiting:
            self._finish_unadmitted(self.waiting.popleft(), "cancelled")
        while (task := self._inbox.get_nowait()) is not None:  # answer what raced with the stop
            match task:
                case Submit(request=r):
                    self._finish_unadmitted(r, "cancelled")
                case Stats() | Persist() | Unpin() | Drop() | SetThreads() | Tune():
                    if task.future.set_running_or_notify_cancel():
                        task.future.set_exception(RuntimeError(STOPPED))
                case Cancel() | Retire() | Stop():
                    pass  # nobody waits for them; a cancelled request was finished above
        store = self.cache.store
        if store is not None:
            if self._save_on_stop:
                try:
                    n = self.cache.save_all()
                    log.info("saved %d KV states for the next start", n)
                except Exception:
                    log.exception("saving KV states at shutdown failed")
            store.close()

    def _step(self) -> None:
        for r in [r for r in self.running if r.cancelled]:
            self._finish(r, "cancelled")
        if any(r.cancelled for r in self.waiting):
            for r in [r for r in self.waiting if r.cancelled]:
                self.waiting.remove(r)
                self._finish_unadmitted(r, "cancelled")
        self._admit()
        if not self.running:
            return
        if self.settings.kv_idle_cells >= 0:
            # a request about to place its first cells: every idle sequence out first, so they land low
            placing = [r for r in self.running if r.n_past == r.cached_tokens and r.status is Status.PREFILL]
            if self.cache.trim_idle(self.settings.kv_idle_cells, all_now=bool(placing)):
                for r in placing:   # their forked prefixes sat where the sources' cells were: move them down
                    self._compact(r)
        step = self._decode()
        if step is not None:
            self._advance(*step)

    def _compact(self, r: Request) -> None:
        try:
            self.cache.compact(r.slot)
        except StateRejected:
            log.warning("llama.cpp refused to re-place %d cached tokens; they are recomputed", r.cached_tokens)
            r.n_past = r.cached_tokens = 0

    def _batch(self) -> Batch:
        """One token for every decoding request, then prompt chunks of prefilling requests (at most
        prefill_chunk while anyone decodes), up to max_batch tokens."""
        tokens: list[int] = []
        positions: list[int] = []
        seqs: list[int] = []
        logits: list[bool] = []
        decoding = [r for r in self.running if r.status is Status.DECODE]
        self._plan_drafts(decoding)
        for r in decoding:
            r.batch_index = len(tokens)
            tokens.append(r.next_token)
            positions.append(r.n_past)
            seqs.append(r.slot.seq)
            logits.append(True)
            if r.draft:  # (the plain path builds nothing more per token)
                n = len(r.draft)
                tokens.extend(r.draft)
                positions.extend(range(r.n_past + 1, r.n_past + 1 + n))
                seqs.extend([r.slot.seq] * n)
                logits.extend([True] * n)
        budget = self.max_batch - len(tokens)
        if decoding:
            budget = min(budget, self.settings.prefill_chunk)
        chunks: list[tuple[Request, int]] = []
        for r in self.running:
            if r.status is not Status.PREFILL or budget <= 0:
                continue
            start = r.n_past
            end = min(len(r.prompt), start + budget)
            n = end - start
            tokens.extend(r.prompt[start:end])
            positions.extend(range(start, end))
            seqs.extend([r.slot.seq] * n)
            logits.extend([False] * n)
            if end == len(r.prompt) and r.max_new > 0:
                logits[-1] = True
                r.batch_index = len(tokens) - 1
            chunks.append((r, end))
            budget -= n
        return Batch(tokens, positions, seqs, logits, decoding, chunks)

    def _plan_drafts(self, decoding: list[Request]) -> None:
        """Draft tokens for the decoding requests whose context predicts them (n-gram lookup), as many as pay
        by the measured cost of a larger decode (speculation.draft_length). Never while a prompt is being read
        (its chunk dominates the step) and never for a request whose grammar decides each token."""
        for r in decoding:
            r.draft = NO_DRAFT
            r.proposal = -1
        if not self.settings.draft_max or len(self.running) != len(decoding):
            return
        n = expect = len(decoding)
        for r in decoding:
            if r.drafts is None:
                r.drafts = NgramIndex(r.prompt + r.output) if r.constraint is None else False
            room = min(self.settings.draft_max, r.max_new - len(r.output) - 1, self.max_batch - n)
            if r.drafts is False or room <= 0:
                continue
            proposal, r.match = r.drafts.propose(room)
            if not proposal:
                continue
            d = draft_length(self.cost, n, expect, self.acceptance, r.match, len(proposal))
            if d:
                r.draft = proposal[:d]
                n += d
                expect += self.acceptance.expected(r.match, d) - 1
            else:
                r.proposal = proposal[0]

    def _decode(self) -> tuple[list[Request], list[tuple[Request, int]]] | None:
        """Build the batch and run it. When llama.cpp finds no free cells (KVFull: the ledger and llama.cpp
        disagree, e.g. cells taken outside the scheduler), make room and retry (_kv_full) instead of failing
        everyone; None when no request is left to run."""
        while self.running:
            b = self._batch()
            if not b.tokens:  # only prompts already wholly cached (a read-ahead of a cached header): nothing to run
                return b.decoding, b.chunks
            t0 = time.perf_counter()
            try:
                self.engine.decode(b.tokens, b.positions, b.seqs, b.logits)
            except KVFull as e:
                self._kv_full(e)
                continue
            if not b.chunks:  # a decode step (every row with logits): what drafting weighs against
                self.cost.record(len(b.tokens), time.perf_counter() - t0)
            self.totals.decode_calls += 1
            self.totals.batch_tokens += len(b.tokens)
            return b.decoding, b.chunks
        return None

    def _kv_full(self, e: KVFull) -> None:
        """One way out of a full KV cache, mildest first: evict an idle sequence; requeue the newest request
        still reading its prompt while others run (it has sent nothing: it resumes from what it read); fail
        the newest request, alone (a reply already streaming cannot be replayed)."""
        self.totals.kv_full += 1
        idle = self.cache.idle_slots()
        if idle:
            self.cache.evict(idle[0])
            return
        reading = [r for r in self.running if r.status is Status.PREFILL]
        if reading and len(self.running) > 1:
            self._requeue(reading[-1])
            return
        newest = self.running[-1]
        log.warning("KV cache full (%s): request %d fails, %d others go on", e, newest.id, len(self.running) - 1)
        self._finish(newest, "error", code="kv_full", error=(
            f"llama.cpp found no free KV cells for this request ({e}) although parley counted "
            f"{self.cache.kv_budget - self.cache.cells_used} free: cells are held outside the scheduler; retry, "
            f"or raise --kv-size"))

    def _requeue(self, r: Request) -> None:
        """Put a request that is still reading its prompt back at the head of the queue. What it read stays
        cached in its sequence (now idle), so it resumes from there."""
        self.running.remove(r)
        self.cache.release(r)
        if r.sampler is not None:
            r.sampler.close()
        r.sampler = r.detok = r.stops = None
        self.totals.cached_tokens -= r.cached_tokens
        self.totals.prompt_tokens -= len(r.prompt)
        self.totals.requeued += 1
        r.status, r.slot, r.n_past, r.batch_index = Status.WAITING, None, 0, -1
        self.waiting.appendleft(r)

    def _advance(self, decoding: list[Request], chunks: list[tuple[Request, int]]) -> None:
        """After a decode: what was read is in the sequences' KV (the cache records it, tokens, cells and index
        together); sample and emit."""
        for r, end in chunks:
            n = end - r.n_past
            self.cache.advance(r.slot, r.prompt[r.n_past:end], index=True)  # shareable at once, even mid-prompt
            r.n_past = end
            r.prefilled += n
            self.totals.prefilled_tokens += n
            if end == len(r.prompt):
                if r.max_new == 0:
                    self._finish(r, "stop")
                else:
                    r.status = Status.DECODE
                    self._sample(r)
        for r in decoding:
            self.cache.advance(r.slot, (r.next_token,))
            r.n_past += 1
            if r.draft:
                self._verify(r)
                continue
            tok = self._sample(r)
            if r.proposal >= 0 and tok is not None:  # what the draft would have said: learned for free
                self.acceptance.record(r.match, int(tok == r.proposal), 1)

    def _verify(self, r: Request) -> None:
        """r's row and the rows of its drafted tokens are in the last decode: draw from each in turn with r's
        own sampler while the drawn token is the drafted one. Every drawn token is drawn from the distribution
        the model gives after the tokens before it, exactly as one decode per token would (a draft only
        decides which rows were computed ahead), so greedy output is the same token for token and sampled
        output is distributed the same; the first token that differs from the draft is kept, and the cells of
        the drafts after it are removed before anything is emitted."""
        draft, r.draft = r.draft, NO_DRAFT
        base = r.batch_index
        drawn: list[tuple[int, TokenLogprob | None]] = []
        for i in range(len(draft) + 1):
            r.batch_index = base + i
            got = self._draw(r)
            if got is None:  # the request failed (a grammar; not drafted, but never lose the cells)
                return
            drawn.append(got)
            if i == len(draft) or got[0] != draft[i] or self.engine.is_eog(got[0]):
                break
        right = len(drawn) - 1  # drafts that came true: their cells hold what the reply says
        if right < len(draft):
            self.engine.kv_remove(r.slot.seq, r.n_past + right, -1)
        if right:
            self.cache.advance(r.slot, draft[:right])
            r.n_past += right
        self.acceptance.record(r.match, right, right + (right < len(draft)))
        self.totals.drafted_tokens += len(draft)
        self.totals.accepted_tokens += right
        for tok, lp in drawn:
            self._emit(r, tok, lp)
            if r.status is Status.FINISHED:
                return

    def _sample(self, r: Request) -> int | None:
        """Draw r's next token from its row of the last decode and emit it; the token (None when r failed)."""
        got = self._draw(r)
        if got is not None:
            self._emit(r, *got)
            return got[0]
        return None

    def _draw(self, r: Request) -> tuple[int, TokenLogprob | None] | None:
        """r's next token from its row (r.batch_index) of the last decode, with its logprobs when asked; None
        when its grammar failed (r is finished with the error). A request without a grammar or logprobs takes
        the plain path (two attribute checks)."""
        if r.constraint is None and r.params.logprobs is None:
            return self.engine.sample(r.sampler, r.batch_index), None
        k = r.params.logprobs
        # the raw distribution first: the grammar's mask below writes -inf into the same row
        dist = self.engine.log_probs(r.batch_index, k) if k is not None else None
        try:
            tok = self.engine.sample(r.sampler, r.batch_index, r.constraint)
            if r.constraint is not None and not self.engine.is_eog(tok):
                r.constraint.accept(tok)
        except ConstraintError as e:  # this request's grammar alone failed: the others go on
            self._finish(r, "error", error=str(e), code="grammar")
            return None
        return tok, TokenLogprob(tok, dist.logprob(tok), dist.top) if dist is not None else None

    def _admit(self) -> None:
        held: list[Request] = []
        while self.waiting and len(self.running) < self.settings.max_running:
            r = self.waiting.popleft()
            if not r.hashes:
                r.hashes = chain_hashes(r.prompt)
            if self._shares_running_prefill(r):
                held.append(r)
                continue
            outstanding = sum(x.outstanding_cells for x in self.running)
            try:
                attached = self.cache.attach(r, protect_cells=outstanding)
            except Exception as e:  # never lose a request: it gets an error record
                log.exception("admitting request %d failed", r.id)
                self.cache.discard_owner(r)
                self._finish_unadmitted(r, "error", error=f"internal error: {e}", code="internal")
                continue
            if attached is None:
                if self.running:
                    self.waiting.appendleft(r)
                    break  # wait for running requests to finish and free KV
                pinned = self.cache.kv_budget - self.cache.room()
                self._finish_unadmitted(r, "error", code="kv_budget_exceeded", error=(
                    f"the request needs {len(r.prompt) + r.max_new} KV cells ({len(r.prompt)} prompt + "
                    f"{r.max_new} max_tokens) and the KV budget is {self.cache.kv_budget} tokens (--kv-size), of "
                    f"which pinned prefixes hold {pinned}; lower max_tokens or the prompt, or raise --kv-size"))
                continue
            r.admitted = time.perf_counter()
            r.status = Status.PREFILL
            self.running.append(r)
            if r.max_new > 0:
                r.sampler = self.engine.make_sampler(r.params, r.prompt)
                r.detok = IncrementalDetokenizer(self.engine.piece)
                # a grammar decides where the reply ends: a stop string must not cut the JSON
                r.stops = StopMatcher(() if r.constraint is not None else r.params.stop)
            self.totals.cached_tokens += r.cached_tokens
            self.totals.prompt_tokens += len(r.prompt)
        self.waiting.extendleft(reversed(held))

    def _shares_running_prefill(self, r: Request) -> bool:
        """True when a running request is still reading a prefix of r's prompt (SHARE_MIN_TOKENS or more):
        r waits and then forks it instead of computing the same tokens a second time."""
        for x in self.running:
            if x.status is Status.PREFILL:
                shared = shared_blocks(x.hashes, r.hashes) * BLOCK
                if shared >= SHARE_MIN_TOKENS and x.n_past < shared:
                    return True
        return False

    def _emit(self, r: Request, tok: int, lp: TokenLogprob | None = None) -> None:
        if not r.first_token:
            r.first_token = time.perf_counter()
        if self.engine.is_eog(tok):
            self._finish(r, "stop")
            return
        r.output.append(tok)
        r.pending.append(tok)
        if r.drafts:
            r.drafts.append(tok)
        if lp is not None:
            r.logprobs.append(lp)
            r.pending_logprobs.append(lp)
        text = r.detok.add(tok)
        if text:
            out = r.stops.feed(text)
            if out:
                self._send(r, out)
            if r.stops.stopped:
                r.stop_string = r.stops.matched
                self._finish(r, "stop")
                return
        if r.constraint is not None and r.constraint.done:  # the value is closed: nothing more may follow
            self._finish(r, "stop")
            return
        if len(r.output) >= r.max_new:
            self._finish(r, "length")
            return
        r.next_token = tok

    def _send(self, r: Request, text: str) -> None:
        r.text.append(text)
        ids, r.pending = r.pending, []
        lps = None
        if r.params.logprobs is not None:
            lps, r.pending_logprobs = r.pending_logprobs, []
        r.sink(Chunk(text, ids, lps))

    def _finish(self, r: Request, reason: str, error: str | None = None, code: str | None = None) -> None:
        if r.stops is not None and not r.stops.stopped and reason != "error":
            out = r.stops.feed(r.detok.flush())
            out += r.stops.flush()
            if r.stops.stopped:
                r.stop_string = r.stops.matched
                reason = "stop"
            if out:
                self._send(r, out)
        r.status = Status.FINISHED
        self.running.remove(r)
        if r.sampler is not None:
            r.sampler.close()
        if reason == "error":
            self.cache.discard_owner(r)
        else:
            self.cache.release(r, pin=r.pin)
        self._report(r, reason, error, code)

    def _finish_unadmitted(self, r: Request, reason: str, error: str | None = None, code: str | None = None) -> None:
        r.status = Status.FINISHED
        self._report(r, reason, error, code)

    def _report(self, r: Request, reason: str, error: str | None, code: str | None = None) -> None:
        now = time.perf_counter()
        first = r.first_token or now
        n_gen = len(r.output)
        decode_s = now - first
        res = Result(
            finish_reason=reason,
            text="".join(r.text),
            token_ids=list(r.output),
            prompt_tokens=len(r.prompt),
            cached_tokens=r.cached_tokens,
            prefilled_tokens=r.prefilled,
            generated_tokens=n_gen,
            cache_source=r.cache_source,
            cache_note=r.cache_note,
            ttft_s=first - r.arrived,
            queue_s=(r.admitted or now) - r.arrived,
            decode_tps=(n_gen - 1) / decode_s if n_gen > 1 and decode_s > 0 else 0.0,
            total_s=now - r.arrived,
            stop_string=r.stop_string,
            seed=r.sampler.seed if r.sampler is not None else r.params.seed,
            error=error,
            error_code=code,
            max_tokens=r.max_new,
            logprobs=list(r.logprobs) if r.params.logprobs is not None else None,
        )
        self.totals.finished[reason] = self.totals.finished.get(reason, 0) + 1
        self.totals.generated_tokens += n_gen
        for obs in () if r.internal else self.observers:
            try:
                obs(r, res)
            except Exception:
                log.exception("observer failed")
        r.sink(res)

    def _stats(self) -> SchedulerStats:
        c = self.cache
        store = c.store
        return SchedulerStats(
            running=len(self.running),
            waiting=len(self.waiting),
            prefilling=tuple((r.id, r.n_past, len(r.prompt)) for r in self.running if r.status is Status.PREFILL),
            kv_cells_used=c.cells_used,
            kv_cells_idle=c.idle_cells(),
            kv_cells_budget=c.kv_budget,
            kv_idle_cap=self.settings.kv_idle_cells,
            kv_idle_moving=c.flushing,
            live_sequences=len(c.slots),
            busy_sequences=sum(1 for s in c.slots.values() if s.owner is not None),
            pinned_sequences=sum(1 for s in c.slots.values() if s.pins),
            ram_bytes=store.ram_used if store else 0,
            disk_bytes=store.disk_used if store else 0,
            ram_states=store.ram_count if store else 0,
            disk_states=store.disk_count if store else 0,
            corrupt_cache_files=store.corrupt_files if store else 0,
            cache=dataclasses.replace(c.counters),
            totals=self.totals.copy(),
        )


def _answer(task: Answering, fn: Callable) -> None:
    """Run a task's work on the scheduler thread and hand the result, or what it raised, to its Future."""
    if task.future.set_running_or_notify_cancel():
        try:
            task.future.set_result(fn())
        except BaseException as e:  # handed to the caller
            task.future.set_exception(e)
