"""Errors a user can act on.

Every error parley raises for bad input or a bad setup is a ParleyError: a one-line message that names the
field or the limit at fault and, where there is one, the fix. The HTTP layer turns them into the OpenAI error
shape with `status`; the CLI prints the message and exits 2. Nothing here is for programming errors.
"""

from __future__ import annotations

SHOWN_CHARS = 64     # a client's id, path or field name is shown up to this many characters in an error


def shorten(text, limit: int = SHOWN_CHARS) -> str:
    """A client-supplied string as an error message shows it: a 60 KB id is not echoed back whole."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class ParleyError(Exception):
    """Base class. `param` names the request field or setting at fault (None when there is none)."""

    status: int = 400
    type: str = "invalid_request_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class ModelError(ParleyError):
    """The model file is missing, unreadable or not a GGUF model llama.cpp can load."""

    status = 500
    type = "model_error"


class TemplateError(ParleyError):
    """A chat template is missing, broken or failed while rendering."""

    status = 400
    type = "invalid_request_error"
    code = "template_error"


class InvalidRequest(ParleyError):
    """A request field has the wrong type or value."""


class LimitExceeded(ParleyError):
    """A request goes over a named limit (context size, max_tokens, body size, ...)."""

    code = "limit_exceeded"


class Overloaded(ParleyError):
    """Too many requests at once for the configured caps; retry later."""

    status = 429
    type = "rate_limit_error"
    code = "overloaded"


class NotFound(ParleyError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class Conflict(ParleyError):
    """The request clashes with what is going on (a conversation still generating, a document in use)."""

    status = 409
    code = "conflict"


class ShuttingDown(ParleyError):
    """New work while parley stops (a server draining after SIGTERM / Ctrl-C, a closed Parley)."""

    status = 503
    type = "server_error"
    code = "shutting_down"


class EngineUnavailable(ParleyError):
    """No engine can take the request now: every upstream is down (--upstream), or no replica of the model's
    application runs on the cluster (--cluster). A client may retry."""

    status = 503
    type = "server_error"
    code = "engine_unavailable"
