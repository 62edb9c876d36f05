"""GET /metrics: valid Prometheus text; counters move by exactly what a request used; histograms are whole; the
metric families (names, types, labels) users' dashboards read stay as they are; every app counts only itself."""

from __future__ import annotations

import math
import re
import socket
import time

import httpx
from srvutil import wait_idle
from starlette.testclient import TestClient

from parley import __version__
from parley.server import ServerSettings, create_app

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})? (\S+)$')
PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

# name -> (type, label names) of every family /metrics exposes: dashboards read these
FAMILIES = {
    "parley_info": ("gauge", {"model", "version"}),
    "parley_http_requests_total": ("counter", {"route", "method", "status"}),
    "parley_requests_finished_total": ("counter", {"reason"}),
    "parley_prompt_tokens_total": ("counter", set()),
    "parley_cached_tokens_total": ("counter", set()),
    "parley_prefilled_tokens_total": ("counter", set()),
    "parley_generated_tokens_total": ("counter", set()),
    "parley_requests_by_cache_source_total": ("counter", {"source"}),
    "parley_time_to_first_token_seconds": ("histogram", set()),
    "parley_time_per_output_token_seconds": ("histogram", set()),
    "parley_queue_seconds": ("histogram", set()),
    "parley_requests_running": ("gauge", set()),
    "parley_requests_waiting": ("gauge", set()),
    "parley_http_requests_generating": ("gauge", set()),
    "parley_conversations": ("gauge", set()),
    "parley_kv_cells_used": ("gauge", set()),
    "parley_kv_cells_idle": ("gauge", set()),
    "parley_kv_cells_budget": ("gauge", set()),
    "parley_kv_sequences": ("gauge", {"state"}),
    "parley_kv_bytes": ("gauge", {"tier"}),
    "parley_kv_states": ("gauge", {"tier"}),
    "parley_cache_hits_total": ("counter", {"tier"}),
    "parley_cache_misses_total": ("counter", set()),
    "parley_cache_evictions_total": ("counter", set()),
    "parley_cache_idle_trims_total": ("counter", set()),
    "parley_cache_compactions_total": ("counter", set()),
    "parley_cache_retired_total": ("counter", set()),
    "parley_cache_saved_states_total": ("counter", set()),
    "parley_cache_restore_failures_total": ("counter", set()),
    "parley_cache_corrupt_files": ("gauge", set()),
}


def series(name: str, **labels: str) -> str:
    """A sample's key in scrape()'s result: labels in sorted order, as the exposition's order is not part of it."""
    if not labels:
        return name
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def parse(text: str) -> tuple[dict[str, float], dict[str, str]]:
    """(samples keyed by series(), the type of each family); fails on anything that is not Prometheus text."""
    samples: dict[str, float] = {}
    typed: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram")
            typed[name] = kind
            continue
        if line.startswith("#") or not line:
            continue
        m = LINE.match(line)
        assert m, f"not a Prometheus sample: {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or base in typed, f"{name} has no # TYPE"
        samples[series(name, **dict(PAIR.findall(labels)))] = float(value)
    return samples, typed


def scrape(server) -> dict[str, float]:
    r = httpx.get(server.url + "/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(r.text)[0]


def test_metrics_count_a_request(server, parley):
    wait_idle(parley)
    before = scrape(server)
    body = {"messages": [{"role": "user", "content": "Say something."}], "max_tokens": 5, "temperature": 0}
    r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60).json()
    wait_idle(parley)
    after = scrape(server)

    def delta(key: str) -> float:
        return after.get(key, 0) - before.get(key, 0)

    u = r["usage"]
    assert delta("parley_prompt_tokens_total") == u["prompt_tokens"]
    assert delta("parley_cached_tokens_total") == u["prompt_tokens_details"]["cached_tokens"]
    assert delta("parley_generated_tokens_total") == u["completion_tokens"]
    reason = r["choices"][0]["finish_reason"]
    assert delta(f'parley_requests_finished_total{{reason="{reason}"}}') == 1
    assert delta(series("parley_http_requests_total", route="/v1/chat/completions", method="POST", status="200")) == 1
    assert delta("parley_time_to_first_token_seconds_count") == 1
    assert delta("parley_time_per_output_token_seconds_count") == u["completion_tokens"] - 1
    # the scrape before this one is counted too
    assert after[series("parley_http_requests_total", route="/metrics", method="GET", status="200")] >= 1


def test_metrics_gauges_and_histograms(server, parley):
    httpx.get(server.url + "/v1/nope")
    s = scrape(server)
    for name in ["parley_requests_running", "parley_requests_waiting", "parley_kv_cells_used",
                 "parley_kv_cells_budget", 'parley_kv_bytes{tier="live"}', 'parley_kv_bytes{tier="ram"}',
                 'parley_kv_bytes{tier="disk"}', 'parley_kv_states{tier="disk"}', 'parley_cache_hits_total{tier="live"}',
                 "parley_cache_misses_total", "parley_http_requests_generating", "parley_conversations"]:
        assert name in s, name
    assert s["parley_kv_cells_budget"] == parley.scheduler.stats().kv_cells_budget
    assert s['parley_kv_bytes{tier="live"}'] == s["parley_kv_cells_used"] * 2 * 30 * 3 * 64 * 2
    assert s[series("parley_http_requests_total", route="unmatched", method="GET", status="404")] >= 1
    for hist in ("parley_time_to_first_token_seconds", "parley_time_per_output_token_seconds",
                 "parley_queue_seconds"):
        buckets = sorted(((float(k.split('le="')[1].rstrip('"}')), v) for k, v in s.items()
                          if k.startswith(hist + "_bucket")), key=lambda kv: kv[0])
        counts = [v for _, v in buckets]
        assert counts == sorted(counts)
        assert buckets[-1][0] == math.inf and buckets[-1][1] == s[hist + "_count"]


def test_made_up_methods_do_not_grow_metrics(server):
    """3,000 requests with 3,000 invented HTTP methods: /metrics gains no series but one "other" per route."""
    before = httpx.get(server.url + "/metrics").text
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for i in range(3000):
            r = client.request(f"M{i:04d}X", "/health" if i % 2 else "/no/such/route")
            assert r.status_code in (404, 405)
    after_text = httpx.get(server.url + "/metrics").text
    assert len(after_text) < len(before) + 1000, f"/metrics grew from {len(before)} to {len(after_text)} bytes"
    after = scrape(server)
    assert not [k for k in after if "M0" in k], "an invented method became a label"
    assert after[series("parley_http_requests_total", route="/health", method="other", status="405")] >= 1500
    assert after[series("parley_http_requests_total", route="unmatched", method="other", status="404")] >= 1500


def test_an_abandoned_body_is_not_a_500(server):
    """A client that sends half its body and leaves is counted as 499 (client closed request), not as 500."""
    def key(status: int) -> str:
        return series("parley_http_requests_total", route="/v1/chat/completions", method="POST", status=str(status))

    before = scrape(server)
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n" + b'{"messages": [')
    deadline = time.monotonic() + 10
    while (after := scrape(server)).get(key(499), 0) == before.get(key(499), 0):
        assert time.monotonic() < deadline, "the abandoned request was never counted"
        time.sleep(0.05)
    assert after.get(key(500), 0) == before.get(key(500), 0)
    assert after[key(499)] == before.get(key(499), 0) + 1


def test_the_families_dashboards_read(server):
    """Every family keeps its name, type and label names, and nothing else appears (no `_created` series)."""
    httpx.get(server.url + "/metrics")   # so that the HTTP counter has a sample
    text = httpx.get(server.url + "/metrics").text
    assert parse(text)[1] == {name: kind for name, (kind, _) in FAMILIES.items()}
    labels: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            m = LINE.match(line)
            name = m.group(1) if m.group(1) in FAMILIES else re.sub(r"_(bucket|sum|count)$", "", m.group(1))
            labels.setdefault(name, set()).update(k for k, _ in PAIR.findall(m.group(2) or "") if k != "le")
    assert labels == {name: names for name, (_, names) in FAMILIES.items()}
    helps = [line.split(" ")[2] for line in text.splitlines() if line.startswith("# HELP ")]
    assert helps == list(FAMILIES)


def test_each_app_counts_only_itself(server, parley):
    """Apps in one process (the live servers here share one model) keep their own registries: no series is
    shared, no name collides."""
    key = series("parley_http_requests_total", route="/health", method="GET", status="200")
    before = scrape(server)
    client = TestClient(create_app(parley, ServerSettings()), base_url="http://127.0.0.1")
    for _ in range(3):
        assert client.get("/health").status_code == 200
    r = client.get("/metrics")
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    mine = parse(r.text)[0]
    assert mine[key] == 3
    assert mine[series("parley_info", model=parley.name, version=__version__)] == 1
    assert scrape(server).get(key, 0) == before.get(key, 0)
