"""Whose conversations: each browser gets a random owner id in a cookie the first time it asks for the page, and
every conversation the page creates is stored with it (Sessions.create(owner=...)), so each browser lists and
opens only its own. The cookie is HttpOnly (page scripts cannot read it) and SameSite=Lax (a link from elsewhere
still opens the page with its own conversations). It separates people sharing a server; it is not a password:
with --api-key the key decides who gets in (server/auth.py)."""

from __future__ import annotations

import re
import secrets

COOKIE = "parley_owner"
MAX_AGE_S = 365 * 24 * 3600
_VALID = re.compile(r"[0-9a-f]{32}")


def new_owner() -> str:
    return secrets.token_hex(16)


def read_cookie(header: bytes | str | None, name: str) -> str | None:
    """One cookie's value from a Cookie header (None when absent)."""
    if not header:
        return None
    text = header.decode("latin-1") if isinstance(header, bytes) else header
    for part in text.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return None


def valid(owner: str | None) -> bool:
    return bool(owner) and bool(_VALID.fullmatch(owner))


def owner_of(request) -> str:
    """The owner id of the browser behind a Gradio event (gr.Request). The page's first response set the cookie,
    and OwnerCookie puts it on every request that lacks one, so it is always there."""
    owner = read_cookie(request.headers.get("cookie"), COOKIE)
    if not valid(owner):
        raise ValueError("the request carries no owner cookie")
    return owner


class OwnerCookie:
    """ASGI wrapper of the page's app: a request without a valid owner cookie gets a new one, both in its own
    Cookie header (so the handlers see it) and as a Set-Cookie on the answer (so the browser keeps it)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = list(scope.get("headers", ()))
        cookie = b"; ".join(v for k, v in headers if k == b"cookie")
        if valid(read_cookie(cookie, COOKIE)):
            return await self.app(scope, receive, send)
        owner = new_owner()
        merged = (cookie + b"; " if cookie else b"") + f"{COOKIE}={owner}".encode()
        scope = {**scope, "headers": [(k, v) for k, v in headers if k != b"cookie"] + [(b"cookie", merged)]}
        set_cookie = f"{COOKIE}={owner}; Path=/; Max-Age={MAX_AGE_S}; HttpOnly; SameSite=Lax".encode()

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), (b"set-cookie", set_cookie)]}
            await send(message)

        return await self.app(scope, receive, send_with_cookie)
