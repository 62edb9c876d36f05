"""Optional API key: `Authorization: Bearer KEY` on every route but /health, compared in constant time.

A pure ASGI middleware, so an unauthenticated request is refused before its body is parsed or any route is
looked up (a wrong key learns nothing about the API, not even which routes exist)."""

from __future__ import annotations

import hmac

from parley.server.errors import error_body
from parley.server.limits import drain, header, send_json

OPEN_PATHS = frozenset({"/health"})


def bearer_ok(authorization: bytes | None, key: bytes) -> bool:
    """True when the header is `Bearer <key>` (scheme case-insensitive)."""
    if not authorization:
        return False
    scheme, _, token = authorization.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(token.strip(), key)


class ApiKeyAuth:
    def __init__(self, app, api_key: str):
        self.app = app
        self.key = api_key.encode("utf-8")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        given = header(scope, b"authorization")
        if bearer_ok(given, self.key):
            return await self.app(scope, receive, send)
        if given is None:
            message, code = "missing API key: send the header 'Authorization: Bearer <key>'", "missing_api_key"
        else:
            message, code = "invalid API key (expected 'Authorization: Bearer <key>')", "invalid_api_key"
        complete = await drain(receive)
        body = error_body(message, type="authentication_error", code=code, status=401, path=scope["path"])
        await send_json(send, 401, body, headers=[(b"www-authenticate", b'Bearer realm="parley"')],
                        close=not complete)
