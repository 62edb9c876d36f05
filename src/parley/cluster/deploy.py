"""Parley's engine replicas as a Ray Serve application: joining the cluster, deploying, scaling, the handle.

One application per model, named `parley-<model>`, with one deployment ("engine", cluster/replica.py) of N
replicas, each reserving --threads CPUs; AffinityRouter (cluster/router.py) routes every handle's requests. Ray
places the replicas on the cluster's nodes, checks their health, restarts the ones that die. The model file must
be at the same path on every node (the embedded model is, wherever parley is installed).

An application already running is used as it is: several parley front ends (each with the shared PostgreSQL
store) share one set of replicas. Serve's own HTTP proxy is not started: parley's server is the ingress.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

from parley import __version__
from parley.errors import InvalidRequest, ModelError
from parley.settings import Settings

log = logging.getLogger("parley.cluster")

DEPLOYMENT = "engine"
ROUTERS = {"affinity": "parley.cluster.router.AffinityRouter",
           "round-robin": "parley.cluster.router.RoundRobinRouter",                        # baselines
           "pow2": "ray.serve._private.request_router:PowerOfTwoChoicesRequestRouter"}   # (Ray's default)
HEALTH_PERIOD_S = 2.0
ONGOING = 2     # a replica takes this many times --max-running at once (a batch running, one waiting); beyond, Ray
                # sends the request to the next replica, or holds it until one has room


def need_ray():
    try:
        import ray
        from ray import serve
    except ImportError:
        raise InvalidRequest("--cluster needs Ray Serve: pip install 'parley[cluster]'", param="cluster") from None
    return ray, serve


def app_name(model: str) -> str:
    return "parley-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", model)


def connect(address: str) -> None:
    """Join the Ray cluster at `address` ('local': start one in this process for its life; 'auto': the one
    `ray start` runs on this machine), once per process."""
    ray, serve = need_ray()
    if not ray.is_initialized():
        extra = {"include_dashboard": False} if address == "local" else {}
        try:
            ray.init(address=address, namespace="parley", log_to_driver=False, **extra)
        except (ConnectionError, RuntimeError, ValueError) as e:
            hint = " (start one with `ray start --head`, or give --cluster local or HOST:PORT)" if address == "auto" else ""
            raise ModelError(f"cannot join the Ray cluster at {address!r} (--cluster): {e}{hint}") from None
    serve.start(proxy_location="Disabled")


def running(model: str) -> bool:
    _, serve = need_ray()
    app = serve.status().applications.get(app_name(model))
    return app is not None and str(app.status).endswith("RUNNING")


def deploy(model: str, model_path: str | Path, settings: Settings, replicas: int, *, router: str = "affinity"):
    """Deploy (or update) the model's application with `replicas` replicas; returns its handle once they are
    ready. The replicas' settings are the process's, generating locally (no --cluster, no --upstream)."""
    _, serve = need_ray()
    from ray.serve.config import RequestRouterConfig

    from parley.cluster.replica import Replica
    # --threads 0 (every core) shares this machine's cores among --replicas replicas (the setting, not this
    # count: `parley cluster scale` changes the count and keeps each replica's threads); on several nodes give -t
    threads = settings.engine.threads or max(1, (os.cpu_count() or 1) // settings.ray.replicas)
    s = settings.replace(cluster="", upstream=(), replicas=1, threads=threads)   # (the count is the deployment's)
    deployment = serve.deployment(
        Replica, name=DEPLOYMENT, num_replicas=replicas, max_ongoing_requests=ONGOING * s.scheduler.max_running,
        ray_actor_options={"num_cpus": threads}, health_check_period_s=HEALTH_PERIOD_S,
        request_router_config=RequestRouterConfig(request_router_class=ROUTERS[router],
                                                  request_routing_stats_period_s=HEALTH_PERIOD_S))
    # the same model, settings and parley are the same version: a new count only adds or drains replicas (else
    # Serve versions each serve.run anew and replaces every replica). Serve keeps this option for its own use.
    what = (__version__, str(model_path), s.engine, s.scheduler, s.template, str(s.data_dir), router)
    version = hashlib.blake2b(repr(what).encode(), digest_size=8).hexdigest()   # what the replicas run with
    deployment = deployment.options(version=version, _internal=True)
    log.warning("deploying %d replica(s) of %s on Ray (%d CPU thread(s) each)", replicas, model, threads)
    return serve.run(deployment.bind(str(model_path), s), name=app_name(model), route_prefix=None)


def handle(model: str, model_path: str | Path, settings: Settings):
    """The model's application handle: the running one, else deployed with --replicas replicas."""
    _, serve = need_ray()
    connect(settings.ray.cluster)
    if running(model):
        return serve.get_app_handle(app_name(model))
    return deploy(model, model_path, settings, settings.ray.replicas)


def scale(model: str, model_path: str | Path, settings: Settings, replicas: int) -> None:
    """Change a running application's replica count: deployed again with the same model and settings, Ray only
    adds replicas or drains some (other settings than it runs with restart the replicas with them)."""
    _, serve = need_ray()
    if serve.status().applications.get(app_name(model)) is None:
        raise InvalidRequest(f"no parley application for {model!r} runs on this Ray cluster", param="model")
    deploy(model, model_path, settings, replicas)


def status() -> dict[str, dict]:
    """Each parley application on the cluster: its status and its replicas' states."""
    _, serve = need_ray()
    out = {}
    for name, app in serve.status().applications.items():
        if name.startswith("parley-"):
            engine = app.deployments.get(DEPLOYMENT)
            out[name] = {"status": str(app.status).rsplit(".", 1)[-1],
                         "replicas": {str(k).rsplit(".", 1)[-1]: v for k, v in
                                      (engine.replica_states if engine else {}).items()}}
    return out


def down(model: str | None = None) -> list[str]:
    """Delete the model's application (every parley one when None); returns the names deleted."""
    _, serve = need_ray()
    names = [app_name(model)] if model else list(status())
    for name in names:
        serve.delete(name)
    return names
