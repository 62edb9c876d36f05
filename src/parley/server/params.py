"""Request fields -> SamplingParams, within the door's limits (Parley.limits: the server's caps, fixed when the
app was built). Errors name the field as the client spelled it (repetition_penalty, max_completion_tokens,
max_new_tokens), not parley's internal name. Every request starts from the server's sampling defaults
(ServerSettings.sampling: the protocol's, unless `parley serve` set others)."""

from __future__ import annotations

from parley.api import Limits
from parley.errors import InvalidRequest
from parley.sampling import MAX_STOP_STRINGS, SamplingParams, normalize_stop

_SAME = ("temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty", "seed")


def pick(a_name: str, a, b_name: str, b):
    """Two spellings of one field (max_tokens / max_completion_tokens): at most one value."""
    if a is not None and b is not None and a != b:
        raise InvalidRequest(f"{a_name} and {b_name} are the same setting and differ ({a} vs {b}): send one",
                             param=b_name)
    return (a_name, a) if a is not None else (b_name, b)


def build(base: SamplingParams, changes: dict, names: dict[str, str], *, limits: Limits,
          template_stops: tuple[str, ...] = ()) -> SamplingParams:
    """base.replace(**changes), checked; `names` maps parley's field names to the request's spelling."""
    n = changes.get("max_tokens")
    if n is not None and isinstance(n, int) and not isinstance(n, bool):
        limits.check_max_tokens(n, param=names.get("max_tokens", "max_tokens"))
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
    if params.max_tokens > limits.max_tokens:  # not sent: parley's default, within the cap
        params = params.replace(max_tokens=limits.max_tokens)
    return params.with_stops(template_stops)


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
