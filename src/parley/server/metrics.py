"""GET /metrics in the Prometheus text format (0.0.4), rendered by prometheus_client from a CollectorRegistry of
this app's own (no global registry: tests build several apps in one process, and each counts only itself).

Sources:
  - HttpMetrics (ASGI middleware): requests by route, method and status, including the 401s and 413s that
    never reach a route. Labels come from fixed sets, so no client can grow /metrics: routes are the app's
    route templates or "unmatched", methods the standard ones or "other". A request that ends without an
    answer because its client left (an abandoned body) counts as 499, never as a 500;
  - Metrics.observe, a scheduler observer (runs on the scheduler thread): finish reasons, prompt / cached /
    prefilled / generated tokens, where the cache came from, histograms of time to first token, time per
    generated token and time queued. These are prometheus_client Counters and Histograms;
  - the snapshot render() is handed at scrape time (Parley.stats(), the requests generating now, the stored
    conversations): running / waiting requests, KV cells used and budget, RAM and disk tiers (bytes and states),
    cache hits by tier, evictions. A custom collector reads it, so one scrape shows one consistent snapshot.

prometheus_client would add a `<name>_created` gauge per counter and histogram series; /metrics never had them
(and `disable_created_metrics()` switches them off for the whole process), so _Observed drops those samples.
Content type: text/plain version 0.0.4, what generate_latest writes by default and what prometheus_client's own
HTTP handlers send for it; its CONTENT_TYPE_LATEST names version 1.0.0 (UTF-8 metric names) since 0.23, a
version that scrapers older than it do not know. Next to the hand-written exposition it replaced, the samples and their
label sets are the same; the text differs only in how prometheus_client writes it: values as floats ("2.0"),
labels in alphabetical order.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
CLIENT_LEFT = 499   # nginx's "client closed request": the status of a request nobody was left to answer
FINISH_REASONS = ("stop", "length", "cancelled", "error")
CACHE_SOURCES = ("live", "ram", "disk", "none")
TIERS = ("live", "ram", "disk")

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.2, 2.5)
QUEUE_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True, slots=True)
class Scrape:
    """What one scrape reads besides the counters the server keeps itself."""

    stats: object           # Parley.stats(): a SchedulerStats (the edges import only parley.api)
    in_flight: int          # HTTP requests generating now
    conversations: int      # in the store


class Metrics:
    def __init__(self, model_name: str, version: str, kv_cell_bytes: int = 0):
        self.model = model_name
        self.version = version
        self.kv_cell_bytes = kv_cell_bytes
        # observe() moves several counters for one finished request; holding this lock there and while they are
        # collected, a scrape never sees a request's tokens without its finish reason
        self._lock = threading.Lock()
        self._rendering = threading.Lock()   # the snapshot collector holds one scrape's snapshot at a time
        self.http = Counter("parley_http_requests", "HTTP requests answered, by route, method and status.",
                            ("route", "method", "status"), registry=None)
        self.finished = Counter("parley_requests_finished", "Generations finished, by finish reason.",
                                ("reason",), registry=None)
        self.prompt_tokens = Counter("parley_prompt_tokens", "Prompt tokens of finished generations.",
                                     registry=None)
        self.cached_tokens = Counter("parley_cached_tokens", "Prompt tokens whose KV was reused, not recomputed.",
                                     registry=None)
        self.prefilled_tokens = Counter("parley_prefilled_tokens", "Prompt tokens computed (not reused).",
                                        registry=None)
        self.generated_tokens = Counter("parley_generated_tokens", "Tokens generated.", registry=None)
        self.sources = Counter("parley_requests_by_cache_source",
                               "Generations by where their reused KV came from (live, ram, disk, none).",
                               ("source",), registry=None)
        self.ttft = Histogram("parley_time_to_first_token_seconds",
                              "Time from submission to the first generated token.", buckets=TTFT_BUCKETS,
                              registry=None)
        self.per_token = Histogram("parley_time_per_output_token_seconds", "Time per generated token after the first.",
                                   buckets=TOKEN_BUCKETS, registry=None)
        self.queued = Histogram("parley_queue_seconds", "Time a request waited for a sequence.",
                                buckets=QUEUE_BUCKETS, registry=None)
        for reason in FINISH_REASONS:   # every known label from the first scrape on, at 0
            self.finished.labels(reason)
        for source in CACHE_SOURCES:
            self.sources.labels(source)

        self.registry = CollectorRegistry()
        Info("parley", "The model this server runs (value 1).", registry=self.registry).info(
            {"model": model_name, "version": version})
        self.registry.register(_Observed(self._lock, (
            self.http, self.finished, self.prompt_tokens, self.cached_tokens, self.prefilled_tokens,
            self.generated_tokens, self.sources, self.ttft, self.per_token, self.queued)))
        self._snapshot = _Snapshot(kv_cell_bytes)
        self.registry.register(self._snapshot)

    # ---- inputs ------------------------------------------------------------------------------------------
    def observe(self, request, result) -> None:
        """Scheduler observer: called on the scheduler thread when a request finishes."""
        with self._lock:
            if result.finish_reason in FINISH_REASONS:   # fixed label sets: /metrics cannot grow
                self.finished.labels(result.finish_reason).inc()
            if result.cache_source in CACHE_SOURCES:
                self.sources.labels(result.cache_source).inc()
            self.prompt_tokens.inc(result.prompt_tokens)
            self.cached_tokens.inc(result.cached_tokens)
            self.prefilled_tokens.inc(result.prefilled_tokens)
            self.generated_tokens.inc(result.generated_tokens)
            if result.generated_tokens > 0:
                _observe(self.ttft, result.ttft_s)
            if result.generated_tokens > 1 and result.decode_tps > 0:
                # the reply's mean per-token time, once per token after the first. prometheus_client observes one
                # value at a time: microseconds per token here, against milliseconds to decode each of them
                for _ in range(result.generated_tokens - 1):
                    _observe(self.per_token, 1.0 / result.decode_tps)
            _observe(self.queued, result.queue_s)

    def count_http(self, route: str, method: str, status: int) -> None:
        # a labelled child has its own lock; HTTP counts need no consistency with the generation counters
        self.http.labels(route, method, str(status)).inc()

    # ---- output ------------------------------------------------------------------------------------------
    def render(self, stats, *, in_flight: int, conversations: int) -> bytes:
        """The exposition text (UTF-8) of one scrape; `stats` is what Parley.stats() returned for it."""
        with self._rendering:
            self._snapshot.scrape = Scrape(stats, in_flight, conversations)
            try:
                return generate_latest(self.registry)
            finally:
                self._snapshot.scrape = None


def _observe(histogram: Histogram, value: float) -> None:
    if value == value:   # a NaN would turn the histogram's sum into NaN for good
        histogram.observe(value)


class _Observed:
    """The server's own prometheus_client Counters and Histograms, without their `_created` samples."""

    def __init__(self, lock: threading.Lock, metrics: tuple):
        self.lock = lock
        self.metrics = metrics

    def describe(self):   # the names, so the registry refuses a collector that would repeat one
        return [family for metric in self.metrics for family in metric.describe()]

    def collect(self):
        with self.lock:
            families = [family for metric in self.metrics for family in metric.collect()]
        for family in families:
            family.samples = [s for s in family.samples if s.name != family.name + "_created"]
            yield family


class _Snapshot:
    """The gauges (and the cache's own counters) of the snapshot Metrics.render hands over for one scrape."""

    def __init__(self, kv_cell_bytes: int):
        self.kv_cell_bytes = kv_cell_bytes
        self.scrape: Scrape | None = None

    def collect(self):
        if self.scrape is None:   # collected outside Metrics.render (no snapshot): nothing to say
            return
        s, c = self.scrape.stats, self.scrape.stats.cache
        yield GaugeMetricFamily("parley_requests_running", "Generations decoding or prefilling now.", s.running)
        yield GaugeMetricFamily("parley_requests_waiting", "Generations queued for a sequence.", s.waiting)
        yield GaugeMetricFamily("parley_http_requests_generating",
                                "HTTP requests generating now (max_concurrent caps it).", self.scrape.in_flight)
        yield GaugeMetricFamily("parley_conversations", "Conversations in the store (/v1/conversations).",
                                self.scrape.conversations)
        yield GaugeMetricFamily("parley_kv_cells_used", "KV cache cells (tokens) held by live sequences.",
                                s.kv_cells_used)
        yield GaugeMetricFamily("parley_kv_cells_idle", "KV cells held only by idle conversations (--kv-idle-cells "
                                "caps them while anyone decodes).", s.kv_cells_idle)
        yield GaugeMetricFamily("parley_kv_cells_budget", "KV cache cells available (--kv-size).", s.kv_cells_budget)
        yield _labelled(GaugeMetricFamily, "parley_kv_sequences", "Live KV sequences, and how many are pinned.",
                        "state", {"live": s.live_sequences, "pinned": s.pinned_sequences})
        tiers = {"ram": s.ram_bytes, "disk": s.disk_bytes}
        if self.kv_cell_bytes:
            tiers = {"live": s.kv_cells_used * self.kv_cell_bytes, **tiers}
        yield _labelled(GaugeMetricFamily, "parley_kv_bytes",
                        "KV cache bytes by tier (live: cells used x bytes per cell, estimated).", "tier", tiers)
        yield _labelled(GaugeMetricFamily, "parley_kv_states", "Saved KV states by tier.", "tier",
                        {"ram": s.ram_states, "disk": s.disk_states})
        yield _labelled(CounterMetricFamily, "parley_cache_hits", "Prompts that reused a cached prefix, by tier.",
                        "tier", {t: getattr(c, f"hits_{t}") for t in TIERS})
        yield CounterMetricFamily("parley_cache_misses", "Prompts with no cached prefix.", c.misses)
        yield CounterMetricFamily("parley_cache_evictions", "Sequences evicted from the live KV cache.", c.evictions)
        yield CounterMetricFamily("parley_cache_idle_trims",
                                  "Idle conversations moved out of the context to RAM/disk so decoding scans fewer "
                                  "cells.", c.idle_trims)
        yield CounterMetricFamily("parley_cache_compactions", "Forked prefixes copied out and back in to sit low in the "
                                  "KV buffer once their source moved out (decodes scan up to the highest cell).",
                                  c.compactions)
        yield CounterMetricFamily("parley_cache_retired", "Sequences of a conversation's earlier window moved out of "
                                  "the context once its window moved on.", c.retired)
        yield CounterMetricFamily("parley_cache_saved_states", "KV states saved to RAM or disk.", c.saved_states)
        yield CounterMetricFamily("parley_cache_restore_failures", "Saved KV states that could not be restored.",
                                  c.restore_failures)
        yield GaugeMetricFamily("parley_cache_corrupt_files", "Disk cache files that failed their checks.",
                                s.corrupt_cache_files)
        if s.upstreams:   # --upstream: each server's health and what it reported
            ups = {u["url"]: u for u in s.upstreams}
            yield _labelled(GaugeMetricFamily, "parley_upstream_up", "1 while an upstream passes its health checks.",
                            "upstream", {url: int(u["healthy"]) for url, u in ups.items()})
            yield _labelled(GaugeMetricFamily, "parley_upstream_running", "Requests in flight to an upstream.",
                            "upstream", {url: u["running"] for url, u in ups.items()})
            for key, help_ in (("requests", "Requests an upstream served to the end."),
                               ("prompt_tokens", "Prompt tokens sent to an upstream."),
                               ("cached_tokens", "Of them, those the upstream reported cached (its prefix cache)."),
                               ("failures", "Requests an upstream failed (taken out, the request moved on).")):
                yield _labelled(CounterMetricFamily, f"parley_upstream_{key}", help_, "upstream",
                                {url: u[key] for url, u in ups.items()})


def _labelled(family_type, name: str, help_: str, label: str, values: dict[str, float]):
    family = family_type(name, help_, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


class HttpMetrics:
    """ASGI middleware counting every HTTP response by route template (not raw path: ids stay out of labels)."""

    def __init__(self, app, metrics: Metrics, routes):
        self.app = app
        self.metrics = metrics
        self.routes = routes   # route_table.RouteTable

    def _route(self, scope) -> str:
        return self.routes.route_of(scope["path"]) or "unmatched"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 0

        async def counting_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        failed = True
        try:
            await self.app(scope, receive, counting_send)
            failed = False
        finally:  # no answer and no exception: the client left before there was anything to answer
            self.metrics.count_http(self._route(scope), method_label(scope["method"]),
                                    status or (500 if failed else CLIENT_LEFT))
