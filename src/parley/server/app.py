"""create_app(parley, settings) -> FastAPI: the OpenAI, TGI, Ollama and conversations APIs over the models, and the
web chat page at GET / (parley.web, mounted last so that only the page's own paths reach it), with /docs and
/redoc served offline (docs.py) and, with --api-key, a login page (login.py) for the browser.

The app does not own the Parley: whoever made it closes it (so tests can share one model between apps, and
`parley serve` closes it after uvicorn has stopped, saving the KV cache to disk). The app serves it through a
door of its own (Parley.with_limits: --max-prompt-tokens and --max-tokens-cap, fixed once). The lifespan adds
and removes the metrics observer on the scheduler, and guards the server's event loop: a blocking facade call
made on it raises (api/guard.py), so no handler can stall every stream by reading SQLite or tokenizing there.

Layers, outermost first: CORS (only with --cors-origin; answers a browser's preflight, which carries no key) ->
HttpMetrics (counts every response, labels from fixed sets) -> BodyDeadline (408 for a body that is late) ->
HostCheck (421 for a Host that does not name this server: DNS rebinding) -> DrainGate (503 while shutting down)
-> ApiKeyAuth (401 before anything is parsed; the page and the docs also take the login cookie) -> HeadAsGet (HEAD on a GET route) -> BodyLimit (413 before
anything is parsed; 400 for JSON nested too deep) -> FaultBarrier (an unexpected exception: a 500 in the OpenAI
error shape, the connection kept; faults.py) -> FastAPI (bounds.BoundedRoute: message count before validation;
validation -> 400 in the OpenAI error shape) -> routes. Below the app, the h11 protocol (connections.py) bounds header time and open
connections; lifecycle.py serves it all and drains on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import PlainTextResponse

from parley import __version__
from parley.api import Parley
from parley.errors import Overloaded
from parley.sampling import describe
from parley.server import (
    conversations_api,
    docs,
    documents_api,
    embeddings_api,
    errors,
    faults,
    login,
    models_api,
    ollama_api,
    openai_api,
    personas_api,
    tgi_api,
)
from parley.server.auth import ApiKeyAuth
from parley.server.head import HeadAsGet
from parley.server.hosts import HostCheck, HostPolicy
from parley.server.lifecycle import DrainGate
from parley.server.limits import BodyDeadline, BodyLimit, ConcurrencyGate
from parley.server.metrics import CONTENT_TYPE, HttpMetrics, Metrics
from parley.server.route_table import RouteTable
from parley.server.settings import ServerSettings
from parley.server.state import ServerState, State

DESCRIPTION = """Local LLMs with a KV cache that is never recomputed.
OpenAI (/v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models), TGI (/generate, /generate_stream, /info),
Ollama (/api/chat, /api/generate, /api/embed, /api/embeddings, /api/tags, /api/show, /api/ps, /api/pull,
/api/delete),
server-side conversations (/v1/conversations), Prometheus metrics (/metrics).
Errors are `{"error": {"message", "type", "param", "code"}}` with a 4xx status naming the field or limit
(on /api/*, Ollama's `{"error": "message"}` with type, param and code beside it).

Structured output on every generating route: OpenAI's `response_format` (json_object, json_schema; the
conversations' turns too), llama-server's `grammar` (GBNF) and `json_schema`, TGI's `parameters.grammar` (json,
regex), Ollama's `format`; the reply matches it and ends once it is complete. A schema feature that cannot be
enforced (not, if/then, uniqueItems) is a 400 naming it. Log-probabilities of the model's raw distribution:
`logprobs` / `top_logprobs` (chat, Ollama), `logprobs: k` (completions), `n_probs`, TGI's `details` /
`top_n_tokens`; TGI's `best_of` keeps the most likely of several sequences.

Sampling defaults of this server, for every field a request leaves out: {sampling}. Out of the box they are the
protocols' own (temperature 1, top_p 1, no top-k, no min-p, no penalty); `parley serve --temperature ...
--top-p ... --top-k ... --min-p ... --repeat-penalty ...` changes them for every route."""

WEB_PAGE = "web page"   # the /metrics route label of everything the page serves


def create_app(parley: Parley, settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    # one door for every route and the page: the server's limits fixed once, over the shared model
    parley = parley.with_limits(settings.caps())
    metrics = Metrics(parley.name, __version__, parley.info.kv_bytes_per_cell)
    state = ServerState(parley=parley, settings=settings, metrics=metrics,
                        gate=ConcurrencyGate(settings.max_concurrent))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        remove = parley.on_finish(metrics.observe)
        unguard = parley.guard_event_loop(asyncio.get_running_loop())   # no blocking facade call on this loop
        try:
            yield
        finally:
            unguard()
            remove()

    app = FastAPI(title="parley", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description=DESCRIPTION.replace("{sampling}", describe(settings.sampling)))
    app.state.parley_server = state
    errors.install(app)
    app.add_exception_handler(Exception, faults.unexpected)   # only a middleware's fault gets past FaultBarrier
    routers = (openai_api.router, embeddings_api.router, models_api.router, conversations_api.router,
               documents_api.router, tgi_api.router, personas_api.router, ollama_api.router)
    for router in routers:
        app.include_router(router)

    docs.install(app)                                   # /docs and /redoc, offline
    if settings.api_key:
        login.install(app, settings.api_key, parley.name)  # the web page asks for the key here

    @app.get("/metrics", tags=["Monitoring"], summary="Prometheus metrics", response_class=PlainTextResponse)
    async def prometheus(state: State):
        try:
            stats = await asyncio.wait_for(asyncio.to_thread(state.parley.stats, every_model=True), timeout=10)
            conversations = await asyncio.to_thread(state.parley.conversations.count)
        except (TimeoutError, RuntimeError) as e:
            raise Overloaded(f"the scheduler did not answer for its stats: {e or 'timeout'}") from None
        text = state.metrics.render(stats, in_flight=state.gate.active, conversations=conversations)
        return PlainTextResponse(text, media_type=CONTENT_TYPE)

    routes = RouteTable.of(app, routers)
    app.state.parley_routes = routes
    page = _mount_page(app, parley, settings, routes)
    docs_limit = parley.documents.limits.max_total_bytes
    app.add_middleware(faults.FaultBarrier)                    # innermost: every layer above sees its 500
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes,
                       uploads={"/v1/documents": (docs_limit, "docs_max_mb, `parley serve --docs-max-mb`")})
    app.add_middleware(HeadAsGet, routes=routes)
    if settings.api_key:
        app.add_middleware(ApiKeyAuth, api_key=settings.api_key, page_paths=page)
    app.add_middleware(DrainGate, state=state)
    app.add_middleware(HostCheck, policy=HostPolicy.from_settings(settings))
    app.add_middleware(BodyDeadline, seconds=settings.body_timeout)
    app.add_middleware(HttpMetrics, metrics=metrics, routes=routes)
    if settings.cors_origins:  # outermost: a browser's preflight carries no API key
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["Authorization", "Content-Type"],
                           max_age=600)
    return app


def _mount_page(app: FastAPI, parley: Parley, settings: ServerSettings, routes: RouteTable):
    """The web chat page at GET / (parley.web; after every API route, so POST / stays TGI's). Returns what
    ApiKeyAuth lets a logged-in browser reach with its page cookie: the page and the API docs."""
    from parley.web import is_page_path, mount_page

    mounted = mount_page(app, parley, settings)
    app.state.parley_server.attached.append(mounted)     # drained with the API on SIGTERM / Ctrl-C
    routes.label(WEB_PAGE, is_page_path)

    def page(path: str) -> bool:
        return is_page_path(path) or path in docs.PATHS or path.startswith(docs.STATIC + "/")
    return page
