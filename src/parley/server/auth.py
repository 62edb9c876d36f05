"""Optional API key: `Authorization: Bearer KEY` on every route but /health, compared in constant time.

A pure ASGI middleware, so an unauthenticated request is refused before its body is parsed or any route is
looked up (a wrong key learns nothing about the API, not even which routes exist).

A browser cannot send a Bearer header when it opens a page, so the web page and the API docs (`page_paths`) also
take the page cookie that parley's own login page (/login, server/login.py) sets once the key is typed in: an
HMAC of a fixed label under the key (never the key itself), HttpOnly and SameSite=Strict. The API routes stay
Bearer-only, so no other site can use a logged-in browser to call them. Opening the page without the cookie
redirects to /login; any other request without the key gets 401.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from parley.server.errors import error_body
from parley.server.limits import drain, header, send_json

OPEN_PATHS = frozenset({"/health", "/login", "/logout"})
PAGE_COOKIE = "parley_key"
_LABEL = b"parley web page v1"


def bearer_ok(authorization: bytes | None, key: bytes) -> bool:
    """True when the header is `Bearer <key>` (scheme case-insensitive)."""
    if not authorization:
        return False
    scheme, _, token = authorization.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(token.strip(), key)


def page_token(key: bytes) -> str:
    """The page cookie's value for an API key."""
    return hmac.new(key, _LABEL, hashlib.sha256).hexdigest()


def cookie_value(cookies: bytes | None, name: str) -> bytes | None:
    for part in (cookies or b"").split(b";"):
        k, sep, v = part.strip().partition(b"=")
        if sep and k == name.encode():
            return v.strip()
    return None


def wants_page(scope) -> bool:
    """A browser opening a page (GET with Accept: text/html): it is sent to the login page, not given JSON."""
    return scope["method"] in ("GET", "HEAD") and b"text/html" in (header(scope, b"accept") or b"")


class ApiKeyAuth:
    def __init__(self, app, api_key: str, page_paths: Callable[[str], bool] = lambda path: False):
        self.app = app
        self.key = api_key.encode("utf-8")
        self.token = page_token(self.key).encode()
        self.page_paths = page_paths

    def _cookie_ok(self, scope) -> bool:
        given = cookie_value(b"; ".join(v for k, v in scope.get("headers", ()) if k == b"cookie"), PAGE_COOKIE)
        return given is not None and hmac.compare_digest(given, self.token)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        page = self.page_paths(scope["path"])
        if bearer_ok(header(scope, b"authorization"), self.key) or (page and self._cookie_ok(scope)):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return None
        if page and wants_page(scope):
            complete = await drain(receive)
            headers = [(b"location", b"/login"), (b"content-length", b"0"), (b"cache-control", b"no-store")]
            if not complete:
                headers.append((b"connection", b"close"))
            await send({"type": "http.response.start", "status": 303, "headers": headers})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return None
        given = header(scope, b"authorization")
        if given is None:
            message, code = "missing API key: send the header 'Authorization: Bearer <key>'", "missing_api_key"
        else:
            message, code = "invalid API key (expected 'Authorization: Bearer <key>')", "invalid_api_key"
        complete = await drain(receive)
        body = error_body(message, type="authentication_error", code=code, status=401, path=scope["path"])
        await send_json(send, 401, body, headers=[(b"www-authenticate", b'Bearer realm="parley"')],
                        close=not complete)
