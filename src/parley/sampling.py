"""SamplingParams: the one description of how to pick tokens, shared by the CLI, both HTTP APIs and the
Python API, with its validation (errors name the field and the allowed range).

One home for the defaults:
  NEUTRAL      SamplingParams() itself: every stage off (no top-k, no min-p, no penalty), temperature 1 and
               top_p 1 (OpenAI's defaults). The HTTP APIs start every request from it (or from the server's
               `parley serve --temperature ...` defaults), so a request that names no sampler gets the same
               tokens on chat completions, completions, conversations and TGI, as from any OpenAI server.
  CHAT_PRESET  what the terminal chat and `Parley.chat()` use unless told otherwise: llama.cpp's chat defaults
               (temperature 0.7, top-p 0.95, top-k 40, min-p 0.05, repeat penalty 1.1).

Two requests beyond picking tokens ride along, both off by default (and then free):
  grammar      a `Grammar` the reply must match (structured output). Only its kind and types are checked here;
               the engine compiles it when the request is submitted (engine/constraint.py), so a schema it
               cannot do is an InvalidRequest raised in the caller's thread with param "grammar".
  logprobs     None: off; 0: each generated token's log-probability; 1..20: also the k most likely tokens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from parley.errors import InvalidRequest, shorten

MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 256
SEED_MAX = 2**63 - 1
MAX_LOGPROBS = 20          # the most alternatives per token (OpenAI's top_logprobs limit, llama-server's too)
MAX_GRAMMAR_CHARS = 100_000
GRAMMAR_KINDS = ("json_schema", "json_object", "regex", "lark", "gbnf")


@dataclass(frozen=True, slots=True)
class Grammar:
    """What a reply must match. `kind`:
      json_schema  `source` is a JSON Schema as a JSON string (an object); objects take only the properties
                   they name unless the schema says otherwise (`additionalProperties`), as OpenAI's strict mode
      json_object  any JSON object; `source` is ""
      regex        `source` is a regular expression the whole reply matches (no anchors needed)
      lark         `source` is a Lark grammar (llguidance's dialect; `start` is the first rule)
      gbnf         `source` is a llama.cpp GBNF grammar (`root` is the first rule), translated to Lark
    The reply ends ("stop") as soon as the grammar is complete and nothing more may follow."""

    kind: str
    source: str = ""

    def __post_init__(self) -> None:
        if self.kind not in GRAMMAR_KINDS:
            raise InvalidRequest(f"grammar kind must be one of {', '.join(GRAMMAR_KINDS)}, got {shorten(self.kind)!r}",
                                 param="grammar")
        if not isinstance(self.source, str):
            raise InvalidRequest(f"{self.kind} must be given as a string, got {type(self.source).__name__}",
                                 param="grammar")
        if self.kind == "json_object" and self.source:
            raise InvalidRequest("json_object takes no source (any JSON object); use json_schema for a schema",
                                 param="grammar")
        if self.kind != "json_object" and not self.source.strip():
            raise InvalidRequest(f"{self.kind} is empty", param="grammar")
        if len(self.source) > MAX_GRAMMAR_CHARS:
            raise InvalidRequest(f"{self.kind} is {len(self.source)} characters; at most {MAX_GRAMMAR_CHARS}",
                                 param="grammar")


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """temperature 0 means greedy (argmax); top_k 0, top_p 1, min_p 0 and penalties of 1/0 switch a stage off, as
    the defaults do (NEUTRAL, above)."""

    max_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_last_n: int = 64
    seed: int | None = None
    stop: tuple[str, ...] = field(default=())
    ignore_eos: bool = False  # never end at the model's end-of-turn tokens (benchmarks, tests): max_tokens or a stop
    # the reply matches this grammar and ends when it is complete; stop strings are not applied to it (they could
    # cut the JSON), only max_tokens can cut it ("length")
    grammar: Grammar | None = None
    logprobs: int | None = None   # None: off; 0: the chosen token's; k in 1..20: and the k most likely (Chunk.logprobs)

    def __post_init__(self) -> None:
        validate(self)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def replace(self, **changes) -> SamplingParams:
        """A copy with `changes` applied (None values are ignored, so optional request fields pass through)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if "stop" in changes:
            changes["stop"] = normalize_stop(changes["stop"])
        return dataclasses.replace(self, **changes)

    def with_stops(self, extra: Sequence[str]) -> SamplingParams:
        """These params with `extra` stop strings after their own (a chat format's end-of-turn strings), each
        once: the one place stop strings are merged."""
        merged = tuple(dict.fromkeys((*self.stop, *extra)))
        return self if merged == self.stop else dataclasses.replace(self, stop=merged)

    def without_stops(self, extra: Sequence[str]) -> SamplingParams:
        """These params without the stop strings in `extra` (what a user set, the chat format's own left out)."""
        kept = tuple(s for s in self.stop if s not in extra)
        return self if kept == self.stop else dataclasses.replace(self, stop=kept)


def normalize_stop(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if not isinstance(stop, (list, tuple)):
        raise InvalidRequest("stop must be a string or a list of strings", param="stop")
    return tuple(stop)


def _number(name: str, value, lo: float, hi: float, *, lo_open: bool = False, integer: bool = False) -> None:
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise InvalidRequest(f"{name} must be {kind}, got {type(value).__name__}", param=name)
    if value != value:  # NaN
        raise InvalidRequest(f"{name} must be {kind}, got NaN", param=name)
    if value < lo or value > hi or (lo_open and value == lo):
        left = "(" if lo_open else "["
        raise InvalidRequest(f"{name} must be in {left}{lo}, {hi}], got {value}", param=name)


def validate(p: SamplingParams) -> None:
    _number("max_tokens", p.max_tokens, 1, 1_000_000, integer=True)
    _number("temperature", p.temperature, 0.0, 5.0)
    _number("top_p", p.top_p, 0.0, 1.0, lo_open=True)
    _number("top_k", p.top_k, 0, 1_000_000, integer=True)
    _number("min_p", p.min_p, 0.0, 1.0)
    _number("repeat_penalty", p.repeat_penalty, 0.0, 10.0, lo_open=True)
    _number("presence_penalty", p.presence_penalty, -2.0, 2.0)
    _number("frequency_penalty", p.frequency_penalty, -2.0, 2.0)
    _number("penalty_last_n", p.penalty_last_n, 0, 1_000_000, integer=True)
    if p.seed is not None:
        _number("seed", p.seed, 0, SEED_MAX, integer=True)
    if p.logprobs is not None:
        _number("logprobs", p.logprobs, 0, MAX_LOGPROBS, integer=True)
    if p.grammar is not None and not isinstance(p.grammar, Grammar):
        raise InvalidRequest(f"grammar must be a Grammar, got {type(p.grammar).__name__}", param="grammar")
    if not isinstance(p.ignore_eos, bool):
        raise InvalidRequest(f"ignore_eos must be true or false, got {type(p.ignore_eos).__name__}", param="ignore_eos")
    if not isinstance(p.stop, tuple):
        raise InvalidRequest("stop must be a tuple of strings (use SamplingParams.replace)", param="stop")
    if len(p.stop) > MAX_STOP_STRINGS:
        raise InvalidRequest(f"stop takes at most {MAX_STOP_STRINGS} strings, got {len(p.stop)}", param="stop")
    for s in p.stop:
        if not isinstance(s, str):
            raise InvalidRequest(f"stop strings must be strings, got {type(s).__name__}", param="stop")
        if not s:
            raise InvalidRequest("stop strings must not be empty", param="stop")
        if len(s) > MAX_STOP_CHARS:
            raise InvalidRequest(f"a stop string is at most {MAX_STOP_CHARS} characters, got {len(s)}", param="stop")


# ---- the presets (after validate: building them validates them) --------------------------------------------
NEUTRAL = SamplingParams()
CHAT_PRESET = SamplingParams(temperature=0.7, top_p=0.95, top_k=40, min_p=0.05, repeat_penalty=1.1)
PRESETS = {"chat": CHAT_PRESET, "neutral": NEUTRAL}
SHOWN = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty")


def describe(p: SamplingParams) -> str:
    """One line for --help and /stats: the preset's name when `p` samples exactly like one, then the values
    ("chat preset: temperature 0.7, top_p 0.95, top_k 40, min_p 0.05, repeat_penalty 1.1")."""
    values = ", ".join(f"{name} {getattr(p, name):g}" for name in SHOWN
                       if name in ("temperature", "top_p") or getattr(p, name) != getattr(NEUTRAL, name))
    for name, preset in PRESETS.items():
        if all(getattr(p, f) == getattr(preset, f) for f in SHOWN):
            return f"{name} preset: {values}"
    return values
