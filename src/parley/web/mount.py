"""The page on the server's FastAPI app, at `/`, on the same port as the API.

gr.mount_gradio_app wires Gradio's queue into the app's lifespan and mounts Gradio at "/", where a plain mount
would catch every path: the API's own 404 and 405 answers (GET /v1/chat/completions, /v1/nothing) would become
Gradio's. So the mount is swapped for PageMount, which takes only the page's paths (GET /, /config, /gradio_api/...,
/assets/..., /theme.css, ...); everything else stays the API's. POST / (TGI's compat route) matches the API's
route first, GET / falls through to the page. The page adds no operation to /openapi.json.

CORS on the page is the API's (server/app.py: only with --cors-origin, only those origins). Gradio's own CORS
layer is removed from the mounted app: on a server at localhost or 127.0.0.1 it echoes any localhost Origin with
credentials allowed, so a page on another port of the same host (same-site: it gets the login cookie) could
read the page's routes.
"""

from __future__ import annotations

import gradio as gr
from gradio.route_utils import CustomCORSMiddleware
from gradio.routes import INTERNAL_ROUTES
from starlette.routing import Match, Mount

from parley.api import Parley
from parley.web.owner import OwnerCookie

# first path segments Gradio serves (its login/logout and monitoring pages are not used: parley has its own login)
PAGE_SEGMENTS = frozenset(INTERNAL_ROUTES) - {"login", "logout", "monitoring"}


def is_page_path(path: str) -> bool:
    """Whether a request path belongs to the web page (and so to Gradio)."""
    if path in ("/", ""):
        return True
    return path.lstrip("/").split("/", 1)[0] in PAGE_SEGMENTS


class PageMount(Mount):
    """A Mount at "/" that matches only the page's own paths (see the module docstring)."""

    def __init__(self, app):
        super().__init__("", app=app)

    def matches(self, scope):
        if scope["type"] in ("http", "websocket") and not is_page_path(scope["path"]):
            return Match.NONE, {}
        return super().matches(scope)


class Page:
    """The mounted page, as the server's shutdown sees it (server/lifecycle.py drains it with the API)."""

    def __init__(self, blocks, state, gradio_app):
        self.blocks = blocks
        self.state = state           # state.PageState: the replies being streamed
        self.gradio_app = gradio_app

    def running(self) -> int:
        return len(self.state.live)

    def close(self) -> None:
        """End the replies still streaming (each is recorded as cancelled) and close the page's event streams
        (each open page holds one, and its heartbeat), so the server stops without waiting for browsers."""
        for reply in list(self.state.live.values()):
            reply.cancel()
        self.blocks._queue.close()
        self.gradio_app.stop_event.set()


def mount_page(app, parley: Parley, settings) -> Page:
    """Build the page and mount it on `app` (before the app starts: Gradio's queue starts in its lifespan).
    `parley` is the server's door (its limits: the max tokens slider's end); `settings` the server's own
    (parley.server.ServerSettings: --max-concurrent is the page's too, --api-key gives it a log-out link, and
    the largest upload is a card's body or a document, whichever limit is larger)."""
    from parley.web.page import CSS, build

    blocks, state = build(parley, settings)
    max_file = max(settings.max_body_bytes, parley.documents.limits.max_total_bytes)
    gr.mount_gradio_app(app, blocks, path="/", footer_links=[], ssr_mode=False, mcp_server=False,
                        enable_monitoring=False, pwa=False, show_error=True, max_file_size=max_file, css=CSS)
    mounted = app.router.routes.pop()
    if not isinstance(mounted, Mount):  # pragma: no cover - Gradio changed how it mounts
        raise RuntimeError(f"gradio's mount_gradio_app added {mounted!r}, not a Mount")
    without_gradio_cors(mounted.app)
    app.router.routes.append(PageMount(OwnerCookie(mounted.app)))
    return Page(blocks, state, mounted.app)


def without_gradio_cors(gradio_app) -> None:
    """Drop Gradio's CORS middleware from its app (see the module docstring); the app has not started, so its
    middleware stack is built later from the list that is left."""
    kept = [m for m in gradio_app.user_middleware if m.cls is not CustomCORSMiddleware]
    if len(kept) == len(gradio_app.user_middleware) or gradio_app.middleware_stack is not None:
        raise RuntimeError("gradio's app no longer adds its CORS middleware as parley expects")  # pragma: no cover
    gradio_app.user_middleware[:] = kept
