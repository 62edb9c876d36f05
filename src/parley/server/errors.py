"""Every error the server returns is JSON in the OpenAI shape, `{"error": {"message", "type", "param", "code"}}`,
with a status that says whose fault it is (4xx: the request; 5xx: the server). Messages name the field or the
limit at fault. On the TGI routes the body also carries TGI's `error_type`, so the `text-generation` client raises
its matching exception (ValidationError, OverloadedError, GenerationError). On Ollama's routes (/api/...) it is
Ollama's shape, `{"error": "message"}`, with parley's `type`, `param` and `code` beside it (the `ollama` client
reads "error"; the middlewares' 401, 413, 429, 503 ... take it too, as every error here is built by path). An
exception nobody expected is faults.py's: a 500 that names only its type."""

from __future__ import annotations

import json
import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from parley.errors import InvalidRequest, ParleyError, shorten

log = logging.getLogger("parley.server")

TGI_PATHS = frozenset({"/", "/generate", "/generate_stream"})
OLLAMA_PREFIX = "/api/"     # Ollama's API (ollama_api.py)


class NotSupported(InvalidRequest):
    """A documented field of the OpenAI or TGI API that parley does not implement (with a non-default value)."""

    code = "unsupported_parameter"


RETRY_AFTER_S = 1    # the Retry-After of every 429: the cap that refused it frees up as soon as a reply ends


def retry_headers(status: int) -> dict[str, str] | None:
    return {"Retry-After": str(RETRY_AFTER_S)} if status == 429 else None


def error_body(message: str, *, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None, status: int = 400, path: str = "") -> dict:
    if path.startswith(OLLAMA_PREFIX):
        return {"error": message, "type": type, "param": param, "code": code}
    body: dict = {"error": {"message": message, "type": type, "param": param, "code": code}}
    if path in TGI_PATHS:
        body["error_type"] = tgi_error_type(status)
    return body


def tgi_error_type(status: int) -> str:
    if status == 429:
        return "overloaded"
    if status >= 500:
        return "generation"
    return "validation"


def parley_error_body(e: ParleyError, path: str = "") -> dict:
    return error_body(e.message, type=e.type, param=e.param, code=e.code, status=e.status, path=path)


def error_response(status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None, path: str = "", headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type=type, param=param, code=code, status=status, path=path),
                        status_code=status, headers=headers)


def parley_error_response(e: ParleyError, path: str = "") -> JSONResponse:
    return JSONResponse(parley_error_body(e, path), status_code=e.status, headers=retry_headers(e.status))


# ---- pydantic validation errors -> one message that names each field ------------------------------------
_TAG = re.compile(r"^(function-\w+\[.*\]|[a-z]+\[.*\]|str|int|float|bool|list|dict|none|[A-Z]\w*)$")


def _loc(loc: tuple) -> str:
    """`messages.0.content` from pydantic's location, without "body" and union-member tags."""
    parts = [str(p) for p in loc if p != "body" and not (isinstance(p, str) and _TAG.match(p))]
    return ".".join(parts)


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


_TYPES = {
    "string_type": "a string", "int_type": "an integer", "float_type": "a number", "bool_type": "a boolean",
    "list_type": "a list", "dict_type": "an object", "model_type": "an object", "model_attributes_type": "an object",
}


def _shown(value) -> str:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool) and len(repr(value)) < 40:
        return repr(value)
    return _json_type(value)


def _describe(err: dict) -> tuple[str, str | None]:
    """(message, param) for one pydantic error."""
    kind = err.get("type", "")
    loc = tuple(err.get("loc", ()))
    where = _loc(loc)
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "json_invalid":
        pos = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
        why = ctx.get("error", "not JSON")
        at = f" at character {pos}" if pos is not None else ""
        return f"the request body is not valid JSON: {why}{at}", None
    if not where:  # the body as a whole
        if kind == "missing":
            return "the request needs a JSON body (Content-Type: application/json)", None
        if isinstance(value, bytes):
            return "the request body must be a JSON object (send it with Content-Type: application/json)", None
        return f"the request body must be a JSON object, got {_json_type(value)}", None
    if kind == "extra_forbidden":
        where = shorten(where)
        return f"unknown field '{where}': this API does not take it (check the spelling; see /docs)", where
    if kind == "missing":
        return f"{where} is required", where
    if kind in _TYPES:
        return f"{where} must be {_TYPES[kind]}, got {_shown(value)}", where
    msg = err.get("msg", kind)
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    else:
        msg = msg[:1].lower() + msg[1:]
        if kind.endswith("_type") or kind.endswith("_parsing") or kind == "literal_error":
            msg += f", got {_shown(value)}"
    return f"{where}: {msg}", where


def validation_message(errors: list[dict]) -> tuple[str, str | None]:
    by_field: dict[str, list[tuple[str, str | None, str]]] = {}
    for err in errors:
        message, param = _describe(err)
        by_field.setdefault(param or "", []).append((message, param, err.get("type", "")))
    parts: list[str] = []
    first_param = None
    for field, found in by_field.items():
        # a union (string or list...): the specific complaint wins; else say every accepted form
        specific = [f for f in found if f[2] == "value_error"] or found
        if len(specific) > 1 and field and all(f[2] in _TYPES for f in specific):
            kinds = " or ".join(dict.fromkeys(_TYPES[f[2]] for f in specific))
            got = specific[0][0].rsplit(", got ", 1)[-1]
            parts.append(f"{field} must be {kinds}, got {got}")
        elif len(specific) > 1 and field:
            alternatives = " or ".join(dict.fromkeys(m.split(": ", 1)[-1] for m, _, _ in specific))
            parts.append(f"{field}: {alternatives}")
        else:
            parts.extend(dict.fromkeys(m for m, _, _ in specific))
        if first_param is None:
            first_param = specific[0][1]
    message = "; ".join(dict.fromkeys(parts[:8]))
    if len(parts) > 8:
        message += f"; and {len(parts) - 8} more problems"
    return message, first_param


# ---- handlers -------------------------------------------------------------------------------------------
def install(app: FastAPI) -> None:
    @app.exception_handler(ParleyError)
    async def _parley_error(request: Request, e: ParleyError):
        if e.status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, e.message)
        return parley_error_response(e, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError):
        message, param = validation_message(list(e.errors()))
        return error_response(400, message, param=param, code="invalid_value", path=request.url.path)

    @app.exception_handler(json.JSONDecodeError)
    async def _json_error(request: Request, e: json.JSONDecodeError):
        return error_response(400, f"the request body is not valid JSON: {e.msg} at character {e.pos}",
                              code="invalid_json", path=request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException):
        path = request.url.path
        method, shown = shorten(request.method, 16), shorten(path)
        if e.status_code == 404:
            return error_response(404, f"no such route: {method} {shown} (the API is listed at /docs)",
                                  type="not_found_error", code="not_found", path=path)
        if e.status_code == 405:
            allowed = (e.headers or {}).get("Allow", "")
            return error_response(405, f"{method} is not allowed on {shown}; allowed: {allowed}",
                                  code="method_not_allowed", path=path, headers=e.headers)
        detail = e.detail if isinstance(e.detail, str) else json.dumps(e.detail)
        if e.status_code == 400 and "parsing the body" in detail:  # FastAPI: bytes that are not UTF-8 JSON
            return error_response(400, "the request body is not valid JSON (send UTF-8 JSON with Content-Type: "
                                       "application/json)", code="invalid_json", path=path)
        kind = "invalid_request_error" if e.status_code < 500 else "server_error"
        return error_response(e.status_code, detail, type=kind, path=path, headers=e.headers)
