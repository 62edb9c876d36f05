"""Request fields -> SamplingParams, with the server's caps. Errors name the field as the client spelled it
(repetition_penalty, max_completion_tokens, max_new_tokens), not parley's internal name. Every request starts
from the server's sampling defaults (ServerSettings.sampling: the protocol's, unless `parley serve` set others)."""

from __future__ import annotations

from parley.errors import InvalidRequest, LimitExceeded
from parley.sampling import MAX_STOP_STRINGS, SamplingParams, normalize_stop
from parley.server.settings import ServerSettings

_SAME = ("temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty", "seed")


def pick(a_name: str, a, b_name: str, b):
    """Two spellings of one field (max_tokens / max_completion_tokens): at most one value."""
    if a is not None and b is not None and a != b:
        raise InvalidRequest(f"{a_name} and {b_name} are the same setting and differ ({a} vs {b}): send one",
                             param=b_name)
    return (a_name, a) if a is not None else (b_name, b)


def build(base: SamplingParams, changes: dict, names: dict[str, str], *, settings: ServerSettings,
          context_size: int, template_stops: tuple[str, ...] = ()) -> SamplingParams:
    """base.replace(**changes), checked; `names` maps parley's field names to the request's spelling."""
    cap = settings.tokens_cap(context_size)
    n = changes.get("max_tokens")
    if n is not None and isinstance(n, int) and not isinstance(n, bool) and n > cap:
        name = names.get("max_tokens", "max_tokens")
        why = "max_tokens_cap, `parley serve --max-tokens-cap`" if cap < context_size else "the context size"
        raise LimitExceeded(f"{name} is {n}; this server generates at most {cap} tokens per request ({why})",
                            param=name, code="max_tokens_exceeded")
    stop = changes.get("stop")
    if stop is not None:
        stops = normalize_stop(stop)
        room = MAX_STOP_STRINGS - len(template_stops)
        if len(stops) > room:
            raise InvalidRequest(f"stop takes at most {room} strings here, got {len(stops)}", param="stop")
        changes["stop"] = stops
    try:
        params = base.replace(**changes)
    except InvalidRequest as e:
        name = names.get(e.param or "", e.param)
        message = e.message if name == e.param else e.message.replace(e.param or "", name or "", 1)
        raise InvalidRequest(message, param=name) from None
    if params.max_tokens > cap:  # not sent: parley's default, within the cap
        params = params.replace(max_tokens=cap)
    if template_stops:
        params = with_stops(params, template_stops)
    return params


def with_stops(params: SamplingParams, extra: tuple[str, ...]) -> SamplingParams:
    """The chat format's end-of-turn strings added to the request's stop strings."""
    merged = tuple(dict.fromkeys((*params.stop, *extra)))
    return params.replace(stop=merged) if merged != params.stop else params


def openai_changes(body, *, max_tokens_name: str = "max_tokens",
                   max_tokens: int | None = None) -> tuple[dict, dict[str, str]]:
    """The sampling fields an OpenAI-style body sets (None = not sent), and how the request spelled them."""
    changes = {name: getattr(body, name) for name in _SAME}
    if changes["seed"] == -1:  # llama-server's "random", as when no seed is sent
        changes["seed"] = None
    names: dict[str, str] = {}
    rp_name, rp = pick("repetition_penalty", body.repetition_penalty, "repeat_penalty", body.repeat_penalty)
    changes["repeat_penalty"] = rp
    names["repeat_penalty"] = rp_name
    changes["stop"] = body.stop
    changes["max_tokens"] = max_tokens
    names["max_tokens"] = max_tokens_name
    return changes, names
