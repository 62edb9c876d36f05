"""A fault in the server (an exception nobody expected) is a 500 in the OpenAI error shape that shows neither a
traceback nor a path (the log has them), and the client's next request on the same kept-alive connection is
served: the connection stays open, or the 500 says `Connection: close` when it cannot.

The faults are provoked through routes and a middleware that only these tests add, to apps built with
create_app like `parley serve`'s: the product has no route that fails on purpose."""

from __future__ import annotations

import logging

import httpx
import pytest
from fastapi.routing import APIRoute
from srvutil import LiveServer
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from parley.server import ServerSettings, create_app

SECRET = f"cannot read {__file__}"   # what an exception's text may hold: the 500 must not show it


async def fails():
    raise RuntimeError(SECRET)


class FailsFirst:
    """A middleware outside every one of the app's (as a broken one would be): fails on /test/outer."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/test/outer":
            raise RuntimeError(SECRET)
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def faulty(parley):
    app = create_app(parley, ServerSettings())
    app.add_middleware(FailsFirst)
    # before the web page's mount at "/", which would otherwise take these paths
    app.router.routes[:0] = [
        APIRoute("/test/fails", fails, methods=["POST"]),
        # a mounted app that answers its own 500 and then raises, as the web page's Gradio app does
        Mount("/test/mounted", app=Starlette(routes=[Route("/", fails)])),
    ]
    s = LiveServer(parley, ServerSettings(), app=app)
    yield s
    s.stop()


def local_port(response: httpx.Response) -> int:
    return response.extensions["network_stream"].get_extra_info("client_addr")[1]


def assert_opaque_500(response: httpx.Response) -> None:
    assert response.status_code == 500, response.text
    err = response.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert (err["type"], err["code"], err["param"]) == ("server_error", "internal_error", None)
    assert "RuntimeError" in err["message"] and "log" in err["message"]
    assert SECRET not in response.text and __file__ not in response.text and "Traceback" not in response.text


def test_a_500_keeps_the_connection_for_the_next_request(faulty, caplog):
    with httpx.Client(base_url=faulty.url, timeout=30) as client, caplog.at_level(logging.ERROR, "parley.server"):
        for _ in range(5):
            r = client.post("/test/fails", json={"x": 1})
            assert_opaque_500(r)
            assert "connection" not in r.headers
            after = client.get("/health")
            assert after.status_code == 200
            assert local_port(after) == local_port(r)        # the same connection, not a new one
    logged = [rec for rec in caplog.records if rec.exc_info and SECRET in str(rec.exc_info[1])]
    assert len(logged) == 5                                  # the details are in the log, each once


def test_a_mounted_apps_own_500_keeps_the_connection(faulty):
    with httpx.Client(base_url=faulty.url, timeout=30) as client:
        for _ in range(3):
            r = client.get("/test/mounted/")
            assert r.status_code == 500 and SECRET not in r.text
            after = client.get("/health")
            assert after.status_code == 200 and local_port(after) == local_port(r)


def test_a_fault_above_the_app_says_connection_close(faulty):
    with httpx.Client(base_url=faulty.url, timeout=30) as client:
        for _ in range(5):
            r = client.post("/test/outer", json={})
            assert_opaque_500(r)
            assert r.headers["connection"] == "close"        # so the client does not send on a closing connection
            assert client.get("/health").status_code == 200
