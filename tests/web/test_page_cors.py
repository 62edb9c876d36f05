"""CORS on the page's own routes (/, /config, /gradio_api/...): the API's policy and nothing else. A page on
another port of the same host is same-site, so it gets the login cookie; if the page's routes echoed its Origin
with credentials allowed (what Gradio's own CORS layer does for any localhost origin), it could read them.
Real requests against live servers on the real model: preflights and simple GETs, with and without the cookie,
on an open server, a keyed one, and a keyed one with --cors-origin naming one origin."""

from __future__ import annotations

import contextlib

import httpx
import pytest
from webutil import API_KEY, CORS_ORIGIN

pytestmark = pytest.mark.model

OTHER_PORTS = ("http://127.0.0.1:5173", "http://localhost:3000")   # same host, another port: same-site
PAGE_ROUTES = ("/", "/config", "/gradio_api/info", "/gradio_api/queue/data?session_hash=cors-probe")
PREFLIGHT = {"access-control-request-method": "POST", "access-control-request-headers": "content-type"}


def cors(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def login_cookie(url: str) -> dict[str, str]:
    """The cookie a browser keeps after typing the key into /login."""
    r = httpx.post(url + "/login", data={"key": API_KEY})
    assert r.status_code == 303 and "parley_key" in r.cookies
    return {"parley_key": r.cookies["parley_key"]}


def get(url: str, path: str, origin: str, cookies: dict | None = None) -> httpx.Response:
    """A simple GET's answer (headers only: /gradio_api/queue/data is an event stream that stays open)."""
    with contextlib.closing(httpx.Client(cookies=cookies or {}, timeout=10)) as client:
        with client.stream("GET", url + path, headers={"origin": origin}) as r:
            return r


def preflight(url: str, path: str, origin: str, cookies: dict | None = None) -> httpx.Response:
    with contextlib.closing(httpx.Client(cookies=cookies or {}, timeout=10)) as client:
        return client.options(url + path, headers={"origin": origin, **PREFLIGHT})


@pytest.mark.parametrize("keyed", [False, True], ids=["open", "keyed"])
def test_no_cors_on_the_page_without_cors_origin(keyed, request):
    url = request.getfixturevalue("keyed_server" if keyed else "server").url
    cookies = login_cookie(url) if keyed else None
    for origin in OTHER_PORTS:
        for path in PAGE_ROUTES:
            r = get(url, path, origin, cookies)
            assert r.status_code == 200, (origin, path, r.status_code)     # served, but not to that page
            assert cors(r) == {}, (origin, path)
            assert cors(preflight(url, path, origin, cookies)) == {}, (origin, path)
            if keyed:                                                        # without the cookie: 401, bare
                r = get(url, path, origin)
                assert r.status_code == 401 and cors(r) == {}, (origin, path)
                assert cors(preflight(url, path, origin)) == {}, (origin, path)


def test_cors_origin_lets_only_that_origin_read_the_page(cors_server):
    url = cors_server.url
    cookies = login_cookie(url)
    for path in PAGE_ROUTES:
        r = get(url, path, CORS_ORIGIN, cookies)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == CORS_ORIGIN, path
        assert "access-control-allow-credentials" not in r.headers, path   # as the API's CORS answers
        pre = preflight(url, path, CORS_ORIGIN)              # a preflight carries no cookie
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == CORS_ORIGIN, path
        for origin in OTHER_PORTS:
            r = get(url, path, origin, cookies)
            assert r.status_code == 200 and cors(r) == {}, (origin, path)
            assert "access-control-allow-origin" not in preflight(url, path, origin).headers, (origin, path)


def test_the_page_queue_polls_at_parley_s_pace_not_gradio_s(server):
    """Gradio's queue looks for work every 1 ms by default, on the event loop the API streams from (8% of a
    core's time beside llama.cpp's threads, measured): the served page's queue takes parley's pace, and a
    Gradio that renamed those knobs fails here rather than spinning silently."""
    from parley.web.page import PROGRESS_POLL_S, QUEUE_POLL_S

    (page,) = [a for a in server.state.attached if hasattr(a, "blocks")]
    queue = page.blocks._queue
    assert (queue.sleep_when_free, queue.progress_update_sleep_when_free) == (QUEUE_POLL_S, PROGRESS_POLL_S)
    assert httpx.get(server.url + "/config", timeout=10).status_code == 200      # and the page still serves
