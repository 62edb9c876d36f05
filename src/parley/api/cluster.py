"""The cluster's replicas, without loading a model here: which parley applications run on the Ray cluster
(--cluster, default 'auto': the one `ray start --head` runs on this machine), scaling one, deleting them. A front
end deploys its model's application itself when it first loads it (parley serve --cluster, cluster/deploy.py)."""

from __future__ import annotations

from parley.models.registry import ModelRegistry
from parley.settings import Settings


def _joined(settings: Settings):
    from parley.cluster import deploy
    deploy.connect(settings.ray.cluster or "auto")
    return deploy


def _entry(settings: Settings):
    return ModelRegistry(settings.data_dir / "models").resolve(settings.models.model[0] if settings.models.model
                                                               else None)


def status(settings: Settings) -> dict[str, dict]:
    """Each parley application on the cluster: {name: {"status": ..., "replicas": {state: count}}}."""
    return _joined(settings).status()


def scale(settings: Settings, replicas: int) -> dict[str, dict]:
    """Run `replicas` replicas of -m's model (the embedded one by default) with these settings; the status after."""
    deploy = _joined(settings)
    e = _entry(settings)
    deploy.scale(e.name, e.path, settings, replicas)
    return deploy.status()


def down(settings: Settings, *, every: bool = False) -> list[str]:
    """Delete -m's model's application (`every`: all of parley's); the names deleted."""
    deploy = _joined(settings)
    return deploy.down(None if every else _entry(settings).name)
