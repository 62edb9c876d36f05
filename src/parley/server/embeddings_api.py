"""OpenAI's embeddings route: POST /v1/embeddings, one unit-length vector per input from a loaded model.

`input` is a string, a list of strings, a list of token ids (one input) or a list of lists of token ids, as
OpenAI takes it; `encoding_format` "float" (lists of numbers) or "base64" (each vector's little-endian float32
bytes, as OpenAI sends them and its Python client decodes them); `dimensions` is refused by name unless it is
the model's own; `model` picks the model as on the other routes (loaded on demand; an embedding GGUF from the
registry the same way); usage.prompt_tokens counts every input's tokens. The vectors come from the facade's
`embed` (engine/embeddings.py: the model's hidden states, pooled, in a llama.cpp context of the model's own),
called in a worker thread. Embedding a large batch is work like a generation: it takes a slot of the
concurrency gate (429 past --max-concurrent), and a client that leaves cancels it between decodes
(`embedded`, which Ollama's /api/embed and /api/embeddings run through too).
"""

from __future__ import annotations

import asyncio
import base64
import threading
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import Field
from starlette.responses import Response

from parley.api import Embeddings
from parley.errors import ShuttingDown
from parley.server.bounds import BoundedRoute, off_loop
from parley.server.openai_api import model_door
from parley.server.schemas import Strict, Text
from parley.server.state import ServerState, State
from parley.server.streaming import client_gone, wait_disconnect

router = APIRouter(tags=["OpenAI"], route_class=BoundedRoute)


class EmbeddingRequest(Strict):
    input: Text | list[Text] | list[int] | list[list[int]] = Field(
        description="A text, a list of texts, a list of token ids (one input) or a list of lists of token ids. "
                    "No input may be empty or longer than the model's embedding context (no truncation).")
    model: Text | None = Field(None, description="The model that embeds (default: the default one).")
    encoding_format: Literal["float", "base64"] | None = Field(
        None, description="float (default): lists of numbers; base64: each vector's little-endian float32 bytes.")
    dimensions: int | None = Field(None, description="Accepted only as the model's own vector size.")
    user: Text | None = Field(None, description="Accepted and ignored (OpenAI's end-user id).")


def inputs(value) -> list:
    """The request's inputs as the facade takes them: a lone text or a flat list of token ids is one input."""
    if isinstance(value, str):
        return [value]
    if value and all(isinstance(t, int) for t in value):
        return [value]
    return list(value)


def encode(vector, fmt: str | None) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


async def embedded(state: ServerState, request: Request, door, texts, **options) -> Embeddings | Response:
    """door.embed(texts, **options) in a worker thread, as every embeddings route runs it: refused while the
    server drains, in a slot of the concurrency gate (429 past --max-concurrent), stopped between decodes when
    the client leaves (then the response for a client that is gone)."""
    if state.drain.active:
        raise ShuttingDown(state.drain.reason)
    cancel = threading.Event()
    state.gate.acquire()
    try:
        work = asyncio.ensure_future(off_loop(door.embed, texts, cancel=cancel, **options))
        watcher = asyncio.ensure_future(wait_disconnect(request.receive))
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():     # the client left: stop between decodes, and hold the slot until it has
            cancel.set()
            await asyncio.wait({work})
            work.exception()    # retrieved: nobody reads a cancelled request's error
            return client_gone()
        watcher.cancel()
        return work.result()
    finally:
        state.gate.release()


@router.post("/v1/embeddings", summary="Embeddings (OpenAI): a vector per input from the model's hidden states")
async def embeddings(body: EmbeddingRequest, request: Request, state: State):
    door = await model_door(state, body.model)
    result = await embedded(state, request, door, inputs(body.input), dimensions=body.dimensions)
    if isinstance(result, Response):
        return result
    data = [{"object": "embedding", "index": i, "embedding": encode(v, body.encoding_format)}
            for i, v in enumerate(result.vectors)]
    return {"object": "list", "data": data, "model": result.model,
            "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}}
