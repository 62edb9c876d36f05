"""An exception nobody expected: a 500 in the OpenAI error shape, and the connection it came on kept for the
client's next request.

Starlette's ServerErrorMiddleware (outermost; an `Exception` handler runs there) sends the handler's 500 and
then raises the exception again, for the server to log it; uvicorn then closes the connection, although the 500
never said `Connection: close`, so the client's next request on it, sent on a connection it still believes
kept alive, is reset. `FaultBarrier`, the innermost middleware, answers first: it logs the exception with its
traceback, sends the 500 and returns, so every layer above sees an ordinary response (HttpMetrics counts it,
CORS adds its headers) and uvicorn keeps the connection. An exception after the answer began:
  - the answer was complete (a mounted app, the web page's Gradio, sent its own 500 and raised; or a background
    task failed): logged, and the connection is kept;
  - it was cut short (a stream failing halfway): it goes on to uvicorn, which closes the connection, the only
    honest end of a reply whose end is lost.
A fault in a middleware above the barrier still reaches ServerErrorMiddleware: `unexpected()` there answers the 500 with
`Connection: close` (uvicorn closes it anyway), so the client opens a new connection instead of being reset.

The message names the exception's type only: its text may hold paths or a client's data; the log has it all.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse

from parley.server.errors import error_body
from parley.server.limits import send_json

log = logging.getLogger("parley.server")


def _body(e: BaseException, path: str) -> dict:
    return error_body(f"internal server error ({type(e).__name__}); the server's log has the details",
                      type="server_error", code="internal_error", status=500, path=path)


async def unexpected(request: Request, e: Exception) -> JSONResponse:
    """The app's `Exception` handler, which ServerErrorMiddleware runs; the connection is closed after its 500,
    and the 500 says so."""
    log.error("%s %s failed", request.method, request.url.path, exc_info=e)
    return JSONResponse(_body(e, request.url.path), status_code=500, headers={"Connection": "close"})


class FaultBarrier:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = complete = False

        async def watching_send(message):
            nonlocal started, complete
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        except Exception as e:
            if started and not complete:
                raise
            log.error("%s %s failed", scope["method"], scope["path"], exc_info=e)
            if not started:
                await send_json(send, 500, _body(e, scope["path"]))
