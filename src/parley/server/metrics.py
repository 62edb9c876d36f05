"""GET /metrics in the Prometheus text format (0.0.4), written by hand: no client library, no global registry.

Sources:
  - HttpMetrics (ASGI middleware): requests by route, method and status, including the 401s and 413s that
    never reach a route. Labels come from fixed sets, so no client can grow /metrics: routes are the app's
    route templates or "unmatched", methods the standard ones or "other". A request that ends without an
    answer because its client left (an abandoned body) counts as 499, never as a 500;
  - Metrics.observe, a scheduler observer (runs on the scheduler thread, hence the lock): finish reasons, prompt /
    cached / prefilled / generated tokens, where the cache came from, histograms of time to first token, time
    per generated token and time queued;
  - scheduler.stats() at scrape time: running / waiting requests, KV cells used and budget, RAM and disk tiers
    (bytes and states), cache hits by tier, evictions.
"""

from __future__ import annotations

import collections
import math
import threading

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
CLIENT_LEFT = 499   # nginx's "client closed request": the status of a request nobody was left to answer

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.2, 2.5)
QUEUE_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _esc(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items()) + "}"


def _num(v: float) -> str:
    if isinstance(v, float):
        if math.isinf(v):
            return "+Inf" if v > 0 else "-Inf"
        return repr(v)
    return str(v)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float, n: int = 1) -> None:
        """Record `value` n times (n > 1: the same per-token latency for each token of a reply)."""
        if n <= 0 or value != value:
            return
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += n
                break
        self.sum += value * n
        self.count += n

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, c in zip(self.buckets, self.counts, strict=True):
            running += c
            out.append(f'{name}_bucket{{le="{bound}"}} {running}')
        out.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        out.append(f"{name}_sum {_num(self.sum)}")
        out.append(f"{name}_count {self.count}")
        return out


class Metrics:
    def __init__(self, model_name: str, version: str, kv_cell_bytes: int = 0):
        self.model = model_name
        self.version = version
        self.kv_cell_bytes = kv_cell_bytes
        self._lock = threading.Lock()
        self.http: collections.Counter = collections.Counter()        # (route, method, status) -> n
        self.finished: collections.Counter = collections.Counter()    # finish reason -> n
        self.tokens: collections.Counter = collections.Counter()      # prompt / cached / prefilled / generated
        self.sources: collections.Counter = collections.Counter()     # cache source -> requests
        self.ttft = Histogram(TTFT_BUCKETS)
        self.per_token = Histogram(TOKEN_BUCKETS)
        self.queued = Histogram(QUEUE_BUCKETS)

    # ---- inputs ------------------------------------------------------------------------------------------
    def observe(self, request, result) -> None:
        """Scheduler observer: called on the scheduler thread when a request finishes."""
        with self._lock:
            self.finished[result.finish_reason] += 1
            self.tokens["prompt"] += result.prompt_tokens
            self.tokens["cached"] += result.cached_tokens
            self.tokens["prefilled"] += result.prefilled_tokens
            self.tokens["generated"] += result.generated_tokens
            self.sources[result.cache_source] += 1
            if result.generated_tokens > 0:
                self.ttft.observe(result.ttft_s)
            if result.generated_tokens > 1 and result.decode_tps > 0:
                self.per_token.observe(1.0 / result.decode_tps, result.generated_tokens - 1)
            self.queued.observe(result.queue_s)

    def count_http(self, route: str, method: str, status: int) -> None:
        with self._lock:
            self.http[(route, method, status)] += 1

    # ---- output ------------------------------------------------------------------------------------------
    def render(self, stats, *, in_flight: int, conversations: int) -> str:
        """The exposition text; `stats` is a parley SchedulerStats snapshot."""
        lines: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[dict, float]]) -> None:
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                lines.append(f"{name}{_labels(labels)} {_num(value)}")

        def hist(name: str, help_: str, h: Histogram) -> None:
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} histogram")
            lines.extend(h.lines(name))

        s = stats
        with self._lock:
            metric("parley_info", "gauge", "The model this server runs (value 1).",
                   [({"model": self.model, "version": self.version}, 1)])
            metric("parley_http_requests_total", "counter", "HTTP requests answered, by route, method and status.",
                   [({"route": r, "method": m, "status": st}, n) for (r, m, st), n in sorted(self.http.items())])
            metric("parley_requests_finished_total", "counter", "Generations finished, by finish reason.",
                   [({"reason": r}, self.finished.get(r, 0)) for r in ("stop", "length", "cancelled", "error")])
            metric("parley_prompt_tokens_total", "counter", "Prompt tokens of finished generations.",
                   [({}, self.tokens["prompt"])])
            metric("parley_cached_tokens_total", "counter", "Prompt tokens whose KV was reused, not recomputed.",
                   [({}, self.tokens["cached"])])
            metric("parley_prefilled_tokens_total", "counter", "Prompt tokens computed (not reused).",
                   [({}, self.tokens["prefilled"])])
            metric("parley_generated_tokens_total", "counter", "Tokens generated.",
                   [({}, self.tokens["generated"])])
            metric("parley_requests_by_cache_source_total", "counter",
                   "Generations by where their reused KV came from (live, ram, disk, none).",
                   [({"source": k}, self.sources.get(k, 0)) for k in ("live", "ram", "disk", "none")])
            hist("parley_time_to_first_token_seconds", "Time from submission to the first generated token.",
                 self.ttft)
            hist("parley_time_per_output_token_seconds", "Time per generated token after the first.",
                 self.per_token)
            hist("parley_queue_seconds", "Time a request waited for a sequence.", self.queued)
        metric("parley_requests_running", "gauge", "Generations decoding or prefilling now.",
               [({}, s.running)])
        metric("parley_requests_waiting", "gauge", "Generations queued for a sequence.", [({}, s.waiting)])
        metric("parley_http_requests_generating", "gauge", "HTTP requests generating now (max_concurrent caps it).",
               [({}, in_flight)])
        metric("parley_conversations", "gauge", "Conversations in the store (/v1/conversations).", [({}, conversations)])
        metric("parley_kv_cells_used", "gauge", "KV cache cells (tokens) held by live sequences.",
               [({}, s.kv_cells_used)])
        metric("parley_kv_cells_idle", "gauge", "KV cells held only by idle conversations (--kv-idle-cells caps "
               "them while anyone decodes).", [({}, s.kv_cells_idle)])
        metric("parley_kv_cells_budget", "gauge", "KV cache cells available (--kv-size).",
               [({}, s.kv_cells_budget)])
        metric("parley_kv_sequences", "gauge", "Live KV sequences, and how many are pinned.",
               [({"state": "live"}, s.live_sequences), ({"state": "pinned"}, s.pinned_sequences)])
        tiers = [({"tier": "ram"}, s.ram_bytes), ({"tier": "disk"}, s.disk_bytes)]
        if self.kv_cell_bytes:
            tiers.insert(0, ({"tier": "live"}, s.kv_cells_used * self.kv_cell_bytes))
        metric("parley_kv_bytes", "gauge", "KV cache bytes by tier (live: cells used x bytes per cell, estimated).",
               tiers)
        metric("parley_kv_states", "gauge", "Saved KV states by tier.",
               [({"tier": "ram"}, s.ram_states), ({"tier": "disk"}, s.disk_states)])
        metric("parley_cache_hits_total", "counter", "Prompts that reused a cached prefix, by tier.",
               [({"tier": t}, getattr(s.cache, f"hits_{t}")) for t in ("live", "ram", "disk")])
        metric("parley_cache_misses_total", "counter", "Prompts with no cached prefix.",
               [({}, s.cache.misses)])
        metric("parley_cache_evictions_total", "counter", "Sequences evicted from the live KV cache.",
               [({}, s.cache.evictions)])
        metric("parley_cache_idle_trims_total", "counter",
               "Idle conversations moved out of the context to RAM/disk so decoding scans fewer cells.",
               [({}, s.cache.idle_trims)])
        metric("parley_cache_retired_total", "counter",
               "Sequences of a conversation's earlier window moved out of the context once its window moved on.",
               [({}, s.cache.retired)])
        metric("parley_cache_saved_states_total", "counter", "KV states saved to RAM or disk.",
               [({}, s.cache.saved_states)])
        metric("parley_cache_restore_failures_total", "counter", "Saved KV states that could not be restored.",
               [({}, s.cache.restore_failures)])
        metric("parley_cache_corrupt_files", "gauge", "Disk cache files that failed their checks.",
               [({}, s.corrupt_cache_files)])
        return "\n".join(lines) + "\n"


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


class HttpMetrics:
    """ASGI middleware counting every HTTP response by route template (not raw path: ids stay out of labels)."""

    def __init__(self, app, metrics: Metrics, routes):
        self.app = app
        self.metrics = metrics
        self.routes = routes   # route_table.RouteTable

    def _route(self, scope) -> str:
        return self.routes.template(scope["path"]) or "unmatched"

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
