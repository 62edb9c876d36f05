"""SamplingParams: the one description of how to pick tokens, shared by the CLI, both HTTP APIs and the
Python API, with its validation (errors name the field and the allowed range).

One home for the defaults:
  NEUTRAL      SamplingParams() itself: every stage off (no top-k, no min-p, no penalty), temperature 1 and
               top_p 1 (OpenAI's defaults). The HTTP APIs start every request from it (or from the server's
               `parley serve --temperature ...` defaults), so a request that names no sampler gets the same
               tokens on chat completions, completions, conversations and TGI, as from any OpenAI server.
  CHAT_PRESET  what the terminal chat and `Parley.chat()` use unless told otherwise: llama.cpp's chat defaults
               (temperature 0.7, top-p 0.95, top-k 40, min-p 0.05, repeat penalty 1.1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from parley.errors import InvalidRequest

MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 256
SEED_MAX = 2**63 - 1


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
