"""HEAD on every GET route answers as GET would, without the body (RFC 9110: /health, /v1/models, /info,
/metrics, / ...; a load balancer's or uptime checker's HEAD used to get 405).

The app sees a GET (a copy of the scope); uvicorn, which keeps the original scope, sends the GET's status and
headers (Content-Length included) and drops the body. HEAD on a path with no GET route is left alone (405 or
404 as before), and the OpenAPI document stays as it is.
"""

from __future__ import annotations

from parley.server.route_table import RouteTable


class HeadAsGet:
    def __init__(self, app, routes: RouteTable):
        self.app = app
        self.routes = routes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "HEAD" and self.routes.has(scope["path"], "GET"):
            return await self.app({**scope, "method": "GET"}, receive, send)
        return await self.app(scope, receive, send)
