"""Structured output and log-probabilities at the HTTP edges, for every protocol in one place.

Grammars: each protocol's spelling becomes a `parley.sampling.Grammar`, which the scheduler compiles at submit
(llguidance; the reply ends "stop" once it is complete, and stop strings do not apply to it):
    OpenAI      response_format {"type": "text" | "json_object" | "json_schema", "json_schema": {"name",
                "schema", "strict", "description"}}: json_schema is always enforced (strict or not)
    llama-server grammar (GBNF) and json_schema (an object), on the OpenAI routes
    TGI         parameters.grammar {"type": "json", "value": schema (an object or its JSON text)} |
                {"type": "regex", "value": "..."}
    Ollama      format "json" (any object) | a JSON Schema object
A schema feature the compiler cannot enforce (`not`, `if`/`then`, `uniqueItems`, a remote $ref) is a 400, as
is every bad shape. Each reader returns an `Asked`: the Grammar and the field that holds it (the schema's own,
response_format.json_schema.schema), and `grammar_errors(asked.param)` around the submit makes the compiler's
errors (param "grammar") name that field.

Log-probabilities (`TokenLogprob`: the raw distribution's, before temperature, top-k/p and the grammar's mask)
in each protocol's shape: OpenAI chat's {"content": [{token, logprob, bytes, top_logprobs}]}, the legacy
completions' {tokens, token_logprobs, top_logprobs, text_offset}, Ollama's list of {token, logprob, bytes,
top_logprobs}. A non-streamed reply lists the tokens its text holds: the ones that spelled a stop string (which
is never in the text) are left out, as a stream never sends them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

from parley.api import Result, TokenLogprob
from parley.errors import InvalidRequest, shorten
from parley.sampling import MAX_LOGPROBS, Grammar

RESPONSE_FORMATS = ("text", "json_object", "json_schema")
_JSON_SCHEMA_KEYS = ("name", "schema", "strict", "description")


# ---- grammars -----------------------------------------------------------------------------------------------
class Asked(NamedTuple):
    """A Grammar and the request field it was read from, as the client spelled it."""

    param: str
    grammar: Grammar


def _kind_of(value) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


def schema_grammar(schema, param: str) -> Asked:
    """A JSON Schema sent as an object (or, where a protocol allows it, as its JSON text) -> json_schema."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except (ValueError, RecursionError) as e:
            raise InvalidRequest(f"{param} is not valid JSON: {shorten(e, 120)}", param=param) from None
    if not isinstance(schema, dict):
        raise InvalidRequest(f"{param} must be a JSON Schema (a JSON object), got {_kind_of(schema)}", param=param)
    with grammar_errors(param):
        return Asked(param, Grammar("json_schema", json.dumps(schema)))


def response_format(value: dict[str, Any] | None, param: str = "response_format") -> Asked | None:
    """OpenAI's response_format -> the Grammar it asks for (None: plain text)."""
    if value is None:
        return None
    kind = value.get("type")
    if kind not in RESPONSE_FORMATS:
        raise InvalidRequest(f"{param}.type must be one of {', '.join(RESPONSE_FORMATS)}, got "
                             f"{shorten(repr(kind))}", param=f"{param}.type")
    extra = [k for k in value if k not in ("type", "json_schema")] or \
        (["json_schema"] if kind != "json_schema" and "json_schema" in value else [])
    if extra:
        raise InvalidRequest(f"{param} does not take {shorten(extra[0])!r} with type {kind!r}",
                             param=f"{param}.{shorten(extra[0])}")
    if kind == "text":
        return None
    if kind == "json_object":
        return Asked(param, Grammar("json_object"))
    return _json_schema_format(value.get("json_schema"), f"{param}.json_schema")


def _json_schema_format(spec, param: str) -> Asked:
    if not isinstance(spec, dict):
        raise InvalidRequest(f"{param} must be an object {{\"name\", \"schema\", \"strict\"}}, got {_kind_of(spec)}",
                             param=param)
    unknown = [k for k in spec if k not in _JSON_SCHEMA_KEYS]
    if unknown:
        raise InvalidRequest(f"{param} does not take {shorten(unknown[0])!r}; it takes "
                             f"{', '.join(_JSON_SCHEMA_KEYS)}", param=f"{param}.{shorten(unknown[0])}")
    for key, types, what in (("name", str, "a string"), ("description", str, "a string"),
                             ("strict", (bool, type(None)), "a boolean")):
        if key in spec and not isinstance(spec[key], types):
            raise InvalidRequest(f"{param}.{key} must be {what}, got {_kind_of(spec[key])}", param=f"{param}.{key}")
    if "schema" not in spec:     # OpenAI's own default is an empty schema: any JSON; ask for what is meant
        raise InvalidRequest(f"{param}.schema is required (a JSON Schema object; for any JSON object send "
                             "{\"type\": \"json_object\"})", param=f"{param}.schema")
    return schema_grammar(spec["schema"], f"{param}.schema")


def tgi_grammar(value: dict[str, Any] | None, param: str = "parameters.grammar") -> Asked | None:
    """TGI's {"type": "json", "value": schema} / {"type": "regex", "value": "..."} (also "json_schema" and
    "regex" as the newer TGI names them)."""
    if value is None:
        return None
    unknown = [k for k in value if k not in ("type", "value")]
    if unknown:
        raise InvalidRequest(f"{param} takes type and value, not {shorten(unknown[0])!r}",
                             param=f"{param}.{shorten(unknown[0])}")
    kind, source = value.get("type"), value.get("value")
    if kind in ("json", "json_schema"):
        return schema_grammar(source, f"{param}.value")
    if kind == "regex":
        if not isinstance(source, str):
            raise InvalidRequest(f"{param}.value must be a regular expression (a string), got {_kind_of(source)}",
                                 param=f"{param}.value")
        with grammar_errors(f"{param}.value"):
            return Asked(f"{param}.value", Grammar("regex", source))
    raise InvalidRequest(f"{param}.type must be \"json\" or \"regex\", got {shorten(repr(kind))}",
                         param=f"{param}.type")


def ollama_format(value, param: str = "format") -> Asked | None:
    """Ollama's format: "json" (any JSON object), a JSON Schema object, or empty (plain text)."""
    if value in (None, "", {}):
        return None
    if value == "json":
        return Asked(param, Grammar("json_object"))
    if isinstance(value, str):
        raise InvalidRequest(f"format must be \"json\" or a JSON Schema object, got {shorten(repr(value))}",
                             param=param)
    return schema_grammar(value, param)


@contextmanager
def grammar_errors(param: str) -> Iterator[None]:
    """The grammar's errors (made here, or compiled at submit: param "grammar") as errors of `param`."""
    try:
        yield
    except InvalidRequest as e:
        if e.param != "grammar":
            raise
        raise type(e)(f"{param}: {e.message}", param=param, code=e.code) from None


def check_top(value: int | None, param: str) -> None:
    """0..20 alternatives per token (OpenAI's limit and llama-server's)."""
    if value is not None and not 0 <= value <= MAX_LOGPROBS:
        raise InvalidRequest(f"{param} must be 0 to {MAX_LOGPROBS}, got {value}", param=param)


# ---- log-probabilities --------------------------------------------------------------------------------------
def shown(door, r: Result) -> list[TokenLogprob]:
    """The logprobs of the tokens `r.text` holds: those past it spelled a stop string the text leaves out."""
    lps = r.logprobs or []
    want = len(r.text.encode())
    out, seen = [], 0
    for lp in lps:
        if seen >= want:
            break
        out.append(lp)
        seen += len(door.token_bytes(lp.token))
    return out


def _openai_token(door, token: int, logprob: float) -> dict:
    return {"token": door.token_text(token), "logprob": logprob, "bytes": list(door.token_bytes(token))}


def openai_content(door, lps: Sequence[TokenLogprob]) -> list[dict]:
    """OpenAI's logprobs.content entries (chat completions; Ollama's list has the same shape)."""
    return [{**_openai_token(door, lp.token, lp.logprob),
             "top_logprobs": [_openai_token(door, t, p) for t, p in lp.top]} for lp in lps]


def chat_logprobs(door, lps: Sequence[TokenLogprob]) -> dict:
    return {"content": openai_content(door, lps), "refusal": None}


class LegacyLogprobs:
    """The legacy completions' logprobs of one choice, chunk by chunk: text_offset counts the characters before
    each token in the choice's text (after an echoed prompt), complete characters only."""

    def __init__(self, door, start: int = 0):
        self._door = door
        self._start = start
        self._bytes = b""

    def take(self, lps: Sequence[TokenLogprob]) -> dict:
        out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for lp in lps:
            out["tokens"].append(self._door.token_text(lp.token))
            out["token_logprobs"].append(lp.logprob)
            out["top_logprobs"].append({self._door.token_text(t): p for t, p in lp.top})
            out["text_offset"].append(self._start + len(self._bytes.decode("utf-8", "ignore")))
            self._bytes += self._door.token_bytes(lp.token)
        return out
