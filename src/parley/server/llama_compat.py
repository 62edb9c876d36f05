"""llama-server's own request fields (its tools/server README, /completion options) on /v1/chat/completions and
/v1/completions: what parley does with each.

Honoured:
    n_predict           max_tokens (-1: as many as the server allows; 0, "only read the prompt", is refused)
    ignore_eos          SamplingParams.ignore_eos
    repeat_last_n       SamplingParams.penalty_last_n (-1: the whole context)
    samplers            which of top_k, top_p, min_p, temperature run (one left out is off: temperature then
                        1); penalties always run first when asked for. Names or llama.cpp's letters
                        ("kpmt"); an order other than parley's is refused.
    t_max_predict_ms    the reply ends once this long has passed since its first token and it holds a newline
                        (finish_reason "length", as llama-server reports it)
    seed -1             random (SamplingFields)
    grammar             a GBNF grammar the reply matches (Grammar "gbnf"; "" is none)
    json_schema         a JSON Schema the reply matches (as response_format json_schema); with response_format
                        or each other: a 400, one constraint per reply
    n_probs             the k most likely tokens beside each generated token's log-probability, in the OpenAI
                        shape of the route (chat: logprobs true + top_logprobs k; completions: logprobs k)
Accepted, changing nothing: cache_prompt (parley always reuses the longest cached prefix; `false` is said in the
response's parley.note), id_slot (no slots: the cache finds KV by tokens), n_keep (no context shift: nothing is
discarded), n_cache_reuse, and the settings of samplers that are off (dry_base, mirostat_tau, xtc_threshold, ...).
Refused by name, with the reason, unless off: typical_p, min_keep > 1, top_n_sigma, dynatemp_range,
dry_multiplier, mirostat, xtc_probability, n_indent, n_cmpl, return_tokens,
timings_per_token, return_progress, post_sampling_probs, response_fields, lora, chat_template_kwargs,
reasoning_format other than "none".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from parley.errors import InvalidRequest, shorten
from parley.sampling import Grammar
from parley.server import structured
from parley.server.errors import NotSupported

REFUSED: dict[str, tuple[Callable[[Any], bool], str]] = {   # field -> (is the value "off"?, why nothing else)
    "post_sampling_probs": (lambda v: v is False, "log-probabilities are the model's raw distribution's (before "
                                                  "the samplers), as n_probs returns them"),
    "typical_p": (lambda v: v == 1, "locally typical sampling is not implemented"),
    "min_keep": (lambda v: v in (0, 1), "parley's samplers always keep at least one token, no more"),
    "top_n_sigma": (lambda v: v <= 0, "top-n-sigma sampling is not implemented"),
    "dynatemp_range": (lambda v: v == 0, "dynamic temperature is not implemented"),
    "dry_multiplier": (lambda v: v == 0, "the DRY repetition penalty is not implemented"),
    "mirostat": (lambda v: v == 0, "Mirostat sampling is not implemented"),
    "xtc_probability": (lambda v: v == 0, "XTC sampling is not implemented"),
    "n_indent": (lambda v: v == 0, "minimum indentation is not implemented"),
    "n_cmpl": (lambda v: v == 1, "it returns one completion per request"),
    "return_tokens": (lambda v: v is False, "token ids are not returned (usage counts them)"),
    "timings_per_token": (lambda v: v is False, "timings are not sent per token; each response's parley object "
                                                "has ttft_s and decode_tps"),
    "return_progress": (lambda v: v is False, "prompt progress events are not sent"),
    "response_fields": (lambda v: not v, "responses are not reshaped"),
    "lora": (lambda v: not v, "LoRA adapters are not available"),
    "chat_template_kwargs": (lambda v: not v, "the chat template takes no extra variables"),
    "reasoning_format": (lambda v: v == "none", "reasoning is not parsed out of the reply (send \"none\")"),
}

SAMPLER_NAMES = {"penalties": "penalties", "dry": "dry", "top_n_sigma": "top_n_sigma", "top_k": "top_k",
                 "typ_p": "typical_p", "typical_p": "typical_p", "typical": "typical_p", "top_p": "top_p",
                 "nucleus": "top_p", "min_p": "min_p", "xtc": "xtc", "temperature": "temperature",
                 "temp": "temperature", "infill": "infill"}
SAMPLER_LETTERS = {"e": "penalties", "d": "dry", "s": "top_n_sigma", "k": "top_k", "y": "typical_p",
                   "p": "top_p", "m": "min_p", "x": "xtc", "t": "temperature", "i": "infill"}
ORDER = ("penalties", "top_k", "top_p", "min_p", "temperature")   # parley's chain (engine/llamacpp.py)
WHEN_LEFT_OUT = {"top_k": 0, "top_p": 1.0, "min_p": 0.0, "temperature": 1.0}


def check(body) -> None:
    """400 naming the first llama-server field that asks for something parley cannot do."""
    for name, (is_off, why) in REFUSED.items():
        value = getattr(body, name, None)
        if value is not None and not is_off(value):
            raise NotSupported(f"{name}={shorten(repr(value))} is not supported by parley: {why}", param=name)
    if body.n_predict is not None and body.n_predict < 1 and body.n_predict != -1:
        if body.n_predict == 0:
            raise NotSupported("n_predict=0 (only read the prompt into the cache) is not supported by parley: "
                               "send 1 or more, or -1", param="n_predict")
        raise InvalidRequest(f"n_predict must be -1 or at least 1, got {body.n_predict}", param="n_predict")
    if body.repeat_last_n is not None and body.repeat_last_n < -1:
        raise InvalidRequest(f"repeat_last_n must be -1, 0 or positive, got {body.repeat_last_n}",
                             param="repeat_last_n")
    if body.t_max_predict_ms is not None and body.t_max_predict_ms < 0:
        raise InvalidRequest(f"t_max_predict_ms must be 0 (no limit) or positive, got {body.t_max_predict_ms}",
                             param="t_max_predict_ms")


def grammar(body) -> structured.Asked | None:
    """The Grammar (and the field) of llama-server's grammar (GBNF) or json_schema; None when neither is sent."""
    sent = [name for name in ("grammar", "json_schema") if getattr(body, name, None)]
    if len(sent) > 1:
        raise InvalidRequest("send grammar or json_schema, not both: a reply matches one constraint",
                             param="json_schema")
    if not sent:
        return None
    if sent[0] == "json_schema":
        return structured.schema_grammar(body.json_schema, "json_schema")
    with structured.grammar_errors("grammar"):
        return structured.Asked("grammar", Grammar("gbnf", body.grammar))


def n_probs(body) -> int | None:
    """n_probs as a number of alternatives (None: not sent, or 0 on a route where 0 means off)."""
    structured.check_top(body.n_probs, "n_probs")
    return body.n_probs or None


def n_predict(body, tokens_cap: int) -> int | None:
    """max_tokens as n_predict asks it (None: not sent)."""
    if body.n_predict is None:
        return None
    return tokens_cap if body.n_predict == -1 else body.n_predict


def sampler_list(samplers) -> list[str]:
    """llama-server's `samplers` (names, or a string of letters) as parley's names; 400 for an unknown one."""
    if isinstance(samplers, str):
        unknown = [c for c in samplers if c not in SAMPLER_LETTERS]
        if unknown:
            raise InvalidRequest(f"samplers: unknown sampler letter {unknown[0]!r}; known: "
                                 f"{', '.join(f'{k} ({v})' for k, v in SAMPLER_LETTERS.items())}", param="samplers")
        return [SAMPLER_LETTERS[c] for c in samplers]
    out = []
    for name in samplers:
        key = name.strip().lower()
        if key not in SAMPLER_NAMES:
            raise InvalidRequest(f"samplers: unknown sampler {shorten(name)!r}; known: "
                                 f"{', '.join(dict.fromkeys(SAMPLER_NAMES))}", param="samplers")
        out.append(SAMPLER_NAMES[key])
    return out


def sampler_changes(samplers) -> dict:
    """The SamplingParams changes a `samplers` list makes: each of parley's samplers left out is switched off."""
    names = sampler_list(samplers)
    if "infill" in names:
        raise NotSupported("samplers: the infill sampler is not supported by parley (fill-in-the-middle is not "
                           "available)", param="samplers")
    ours = [n for n in names if n in ORDER]
    if len(ours) != len(set(ours)):
        twice = next(n for n in ours if ours.count(n) > 1)
        raise NotSupported(f"samplers: {twice} is listed twice; parley applies each sampler once",
                           param="samplers")
    if ours != sorted(ours, key=ORDER.index):
        raise NotSupported(f"samplers: parley applies its samplers in the order {', '.join(ORDER)}; got "
                           f"{', '.join(ours)}", param="samplers")
    return {name: value for name, value in WHEN_LEFT_OUT.items() if name not in ours}


def apply(body, changes: dict, names: dict[str, str], *, context_size: int) -> None:
    """Add what body's llama-server fields ask for to an OpenAI request's sampling `changes` (in place)."""
    if body.ignore_eos is not None:
        changes["ignore_eos"] = body.ignore_eos
    if body.repeat_last_n is not None:
        changes["penalty_last_n"] = context_size if body.repeat_last_n == -1 else body.repeat_last_n
        names["penalty_last_n"] = "repeat_last_n"
    if body.samplers is not None:
        changes.update(sampler_changes(body.samplers))


def note(body) -> str:
    if body.cache_prompt is False:
        return ("cache_prompt=false changes nothing: parley always reuses the longest cached prefix (its prefix "
                "cache cannot be turned off)")
    return ""


def time_limit_s(body) -> float | None:
    return body.t_max_predict_ms / 1000 if body.t_max_predict_ms else None
