"""parley's HTTP server: OpenAI- and TGI-compatible APIs, server-side conversations and Prometheus metrics over
one loaded model. `create_app(parley, settings)` builds the FastAPI app; `parley serve` runs it with uvicorn."""

from parley.server.app import create_app
from parley.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]
