"""The login page of a server started with --api-key: the web page asks for the key once, here, and the browser
keeps a cookie derived from it (server/auth.py: page_token). Self-contained HTML, nothing loaded from elsewhere.

    GET  /login     the form
    POST /login     key=...: right -> the cookie and a redirect to the page; wrong -> 401 and the form again
    GET  /logout    the cookie is dropped
"""

from __future__ import annotations

import hmac
import html
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from parley.server.auth import PAGE_COOKIE, page_token

MAX_AGE_S = 30 * 24 * 3600

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>parley: log in</title>
<style>
body {{ font-family: system-ui, sans-serif; background: #f6f6f7; color: #1f2937; margin: 0; }}
main {{ max-width: 26em; margin: 12vh auto; background: #fff; padding: 2em; border-radius: 10px;
       box-shadow: 0 2px 12px rgba(0,0,0,.08); }}
h1 {{ font-size: 1.3em; margin-top: 0; }}
input {{ width: 100%; box-sizing: border-box; padding: .6em; font-size: 1em; margin: .4em 0 1em;
        border: 1px solid #d1d5db; border-radius: 6px; }}
button {{ padding: .6em 1.4em; font-size: 1em; border: 0; border-radius: 6px; background: #f97316; color: #fff;
         cursor: pointer; }}
.error {{ color: #b91c1c; margin: 0 0 1em; }}
.hint {{ font-size: .85em; color: #6b7280; margin-top: 1.5em; }}
</style></head><body><main>
<h1>parley: {name}</h1>
<p>This server needs its API key.</p>
{error}
<form method="post" action="/login">
<label for="key">API key</label>
<input id="key" name="key" type="password" autocomplete="current-password" autofocus required>
<button type="submit">Open the chat</button>
</form>
<p class="hint">The key is the one given to <code>parley serve --api-key</code> (or <code>$PARLEY_API_KEY</code>).
This browser then keeps a cookie made from it; API clients send <code>Authorization: Bearer KEY</code>.</p>
</main></body></html>
"""


def page(name: str, error: str = "") -> str:
    shown = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    return PAGE.format(name=html.escape(name), error=shown)


def install(app: FastAPI, api_key: str, model_name: str) -> None:
    key = api_key.encode("utf-8")
    token = page_token(key)

    @app.get("/login", include_in_schema=False)
    async def login_form() -> HTMLResponse:
        return HTMLResponse(page(model_name), headers={"cache-control": "no-store"})

    @app.post("/login", include_in_schema=False)
    async def login(request: Request):
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        given = (form.get("key") or [""])[0].strip().encode("utf-8")
        if not hmac.compare_digest(given, key):
            return HTMLResponse(page(model_name, "That is not this server's API key."), status_code=401,
                                headers={"cache-control": "no-store"})
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(PAGE_COOKIE, token, max_age=MAX_AGE_S, path="/", httponly=True, samesite="strict")
        return response

    @app.get("/logout", include_in_schema=False)
    async def logout():
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(PAGE_COOKIE, path="/", httponly=True, samesite="strict")
        return response
