"""Request: one generation as the scheduler sees it (prompt tokens in, text chunks and a final record out)."""

from __future__ import annotations

import enum
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from parley.sampling import SamplingParams

_ids = itertools.count(1)


class Status(enum.Enum):
    WAITING = "waiting"      # queued, no sequence yet
    PREFILL = "prefill"      # reading its prompt, chunk by chunk
    DECODE = "decode"        # generating, one token per step
    FINISHED = "finished"


FINISH_REASONS = ("stop", "length", "cancelled", "error")


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token's log-probability under the distribution the model gave (log-softmax of the raw
    logits: before temperature, top-k/top-p/min-p, penalties and a grammar's mask, as OpenAI's and
    llama-server's are), read from the logits the sampler used. `top`: the k most likely (token, logprob),
    most likely first (SamplingParams.logprobs = k; empty for 0). Under sampling (or a grammar) the chosen
    token need not be top[0]; for greedy without penalties it is."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(slots=True)
class Chunk:
    """New text of a reply (never half a character, never any part of a stop string) and its token ids.
    `logprobs` (when the request asked, else None) has one entry per token id, in the same order: a token held
    back by stop-string matching travels, with its logprob, in the chunk that carries its text."""

    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None


@dataclass(slots=True)
class Result:
    """The final record of a request."""

    finish_reason: str                 # "stop" | "length" | "cancelled" | "error"
    text: str                          # the whole reply as streamed
    token_ids: list[int]               # generated token ids (the end-of-turn token excluded)
    prompt_tokens: int
    cached_tokens: int                 # prompt tokens whose KV was reused (not prefilled)
    prefilled_tokens: int              # prompt tokens computed for this request
    generated_tokens: int
    cache_source: str                  # "live" | "ram" | "disk" | "none"
    cache_note: str                    # why the cache covered what it did ("" when it covered everything)
    ttft_s: float                      # time to first token, from submission
    queue_s: float                     # time spent waiting for a sequence
    decode_tps: float                  # generated tokens per second after the first
    total_s: float
    stop_string: str | None = None     # the stop string that ended the reply, if any
    seed: int | None = None
    error: str | None = None
    error_code: str | None = None      # "kv_budget_exceeded" (will not fit beside the pinned prefixes) |
                                       # "kv_full" (llama.cpp found no free cells mid-way) | "internal"
    max_tokens: int = 0                # the generation limit applied: max_tokens clipped to the context left
    logprobs: list[TokenLogprob] | None = None   # one per token_ids entry when the request asked, else None

    @property
    def stats(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "prefilled_tokens": self.prefilled_tokens,
            "generated_tokens": self.generated_tokens,
            "cache_source": self.cache_source,
            "cache_note": self.cache_note,
            "ttft_s": round(self.ttft_s, 4),
            "decode_tps": round(self.decode_tps, 2),
            "total_s": round(self.total_s, 4),
            "finish_reason": self.finish_reason,
        }


Sink = Callable[[Chunk | Result], None]


@dataclass(eq=False, slots=True)
class Request:
    prompt: list[int]
    params: SamplingParams
    sink: Sink
    id: int = field(default_factory=lambda: next(_ids))
    status: Status = Status.WAITING
    arrived: float = field(default_factory=time.perf_counter)
    cancelled: bool = False
    # set by the scheduler
    slot: Any = None                   # the live sequence (prefix_cache.Slot) this request extends
    sampler: Any = None
    detok: Any = None
    stops: Any = None
    constraint: Any = None             # engine.constraint.Constraint when params.grammar (compiled at submit)
    n_past: int = 0                    # tokens of prompt + output already in the sequence's KV
    next_token: int = -1               # sampled, not yet decoded
    batch_index: int = -1
    output: list[int] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)   # generated ids whose text is not yet sent
    logprobs: list[TokenLogprob] = field(default_factory=list)          # every generated token's (when asked)
    pending_logprobs: list[TokenLogprob] = field(default_factory=list)  # those of `pending`
    text: list[str] = field(default_factory=list)
    cached_tokens: int = 0
    cache_source: str = "none"
    cache_note: str = ""
    admitted: float = 0.0
    first_token: float = 0.0
    stop_string: str | None = None
    max_new: int = 0                   # max_tokens clipped to the context left (0: read the prompt only)
    prefilled: int = 0                 # prompt tokens computed (not reused) for this request
    pin: bool = False                  # keep the sequence pinned in the prefix cache when done
    internal: bool = False             # parley's own work (read-ahead): not reported to observers
    hashes: list = field(default_factory=list)  # chained block hashes of the prompt (prefix_index)
    # speculation (scheduler._plan_drafts): the n-gram index of prompt + output (None: not built yet, False:
    # this request never drafts), this step's drafted tokens (decoded after next_token, verified in _verify),
    # the first token proposed when nothing was drafted (checked against what came, to learn for free), and the
    # length of the match the draft or proposal came from (speculation.Acceptance)
    drafts: Any = None
    draft: Sequence[int] = ()
    proposal: int = -1
    match: int = 0

    @property
    def outstanding_cells(self) -> int:
        """KV cells this request may still take: the rest of its prompt and of its max_tokens."""
        return max(0, len(self.prompt) + self.max_new - self.n_past)
