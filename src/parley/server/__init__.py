"""parley's HTTP server: OpenAI- and TGI-compatible APIs, server-side conversations and Prometheus metrics over
one loaded model. `create_app(parley, settings)` builds the FastAPI app; `parley serve` runs it with uvicorn.

Both names load on first use, so `parley serve`'s flags (server/settings.py) are read without importing the app
and FastAPI: every other subcommand (`parley personas list`) starts in a third of the time."""

from __future__ import annotations

__all__ = ["ServerSettings", "create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from parley.server.app import create_app
        return create_app
    if name == "ServerSettings":
        from parley.server.settings import ServerSettings
        return ServerSettings
    raise AttributeError(f"module 'parley.server' has no attribute {name!r}")
