"""/docs (Swagger UI) served offline: its script and style come from the installed fastapi-offline package (static
files only; its FastAPI factory is not used), mounted at /docs/static, so the page renders on a machine without
internet. FastAPI's own /docs loads them from a CDN: create_app turns it off, and /redoc with it (ReDoc's page
fetches its logo from the internet whatever it is given; /docs covers the same document)."""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = "/docs/static"
PATHS = ("/docs", "/docs/oauth2-redirect", "/openapi.json")  # the documentation pages and their data


def install(app: FastAPI) -> None:
    assets = files("fastapi_offline") / "static"
    title = f"{app.title} {app.version}: API"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=title,
                                   swagger_js_url=f"{STATIC}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{STATIC}/swagger-ui.css",
                                   swagger_favicon_url=f"{STATIC}/favicon.png",
                                   oauth2_redirect_url="/docs/oauth2-redirect",
                                   swagger_ui_parameters={"validatorUrl": None})  # no badge from swagger.io

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    app.mount(STATIC, StaticFiles(directory=str(assets)), name="docs-static")
