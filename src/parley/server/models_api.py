"""The models this server offers, over HTTP (OpenAI's list, llama-server's router and LM Studio's verbs):

    GET  /v1/models                   every model with its state: loaded / loading / unloaded, where it runs, its
                                      context; OpenAI's list shape, parley's facts under `parley`
    GET  /v1/models/{name}            one (an unknown name is a 404 listing the known ones)
    POST /v1/models/{name}/load       load it now (a request would load it on demand); answers once it is loaded
    POST /v1/models/{name}/unload     unload it now, its conversations' KV saved to disk (409 while it generates)

Everything goes through the facade's `parley.models` (api/models.py), in a worker thread.
"""

from __future__ import annotations

from fastapi import APIRouter

from parley.api import ModelView
from parley.server.bounds import BoundedRoute, off_loop
from parley.server.state import ServerState, State

router = APIRouter(tags=["Models"], route_class=BoundedRoute)


def model_card(state: ServerState, v: ModelView) -> dict:
    return {"id": v.name, "object": "model", "created": int(state.started), "owned_by": "parley",
            "context_length": v.context_size,
            "parley": {"state": v.state, "progress": round(v.progress, 3), "device": v.device, "default": v.default,
                       "display_name": v.display_name, "source": v.source, "architecture": v.architecture,
                       "file_type": v.file_type, "size_bytes": v.size_bytes, "settings": v.settings,
                       "embedding": v.embedding, "error": v.error}}


@router.get("/v1/models", summary="The models this server offers, with their state (OpenAI list)")
async def list_models(state: State):
    views = await off_loop(state.parley.models.list)
    return {"object": "list", "data": [model_card(state, v) for v in views]}


@router.get("/v1/models/{model_id:path}", summary="One model (OpenAI)")
async def get_model(model_id: str, state: State):
    return model_card(state, await off_loop(state.parley.models.show, model_id))


@router.post("/v1/models/{name}/load", summary="Load a model now")
async def load(name: str, state: State):
    return model_card(state, await off_loop(state.parley.models.load, name))


@router.post("/v1/models/{name}/unload", summary="Unload a model now (its KV saved to disk)")
async def unload(name: str, state: State):
    return model_card(state, await off_loop(state.parley.models.unload, name))
