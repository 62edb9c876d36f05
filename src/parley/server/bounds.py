"""Bounds checked on a request's JSON before anything costly looks at it, and the off-loop rule.

One 2 MB body of 60,000 tiny messages used to hold the event loop (every stream, /health) for 4.5 s before its
400: pydantic validates it (~0.2 s, holding the GIL), then the chat template renders and tokenizes 60,000
messages. Two measures, both here and in the handlers:
  - `BoundedRoute` (every API router's route class) parses the JSON once (Starlette caches it, so FastAPI's own
    validation reuses it) and refuses, before validation, more than `max_messages` messages (400 naming it) or
    a token-id prompt longer than the prompt limit;
  - the handlers build prompts (template rendering, tokenization) with `off_loop()`, in a worker thread, so
    what remains of a big request never stalls the others.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import TypeVar

from fastapi.routing import APIRoute
from starlette.requests import Request

from parley.errors import LimitExceeded

T = TypeVar("T")


async def off_loop(fn: Callable[..., T], *args, **kwargs) -> T:
    """fn(*args, **kwargs) in a worker thread (template rendering and tokenization hold no lock the loop needs)."""
    return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))


def check_counts(data, state) -> None:
    """Refuse a body whose message list or token-id prompt is too long, from its parsed JSON alone."""
    if not isinstance(data, dict):
        return
    settings = state.settings
    messages = data.get("messages")
    if isinstance(messages, list) and len(messages) > settings.max_messages:
        raise LimitExceeded(f"the request holds {len(messages)} messages; this server takes at most "
                            f"{settings.max_messages} (max_messages, `parley serve --max-messages`)",
                            param="messages", code="too_many_messages")
    prompt = data.get("prompt")
    limits = state.parley.limits
    if isinstance(prompt, list) and len(prompt) > limits.prompt_tokens and not any(isinstance(p, str)
                                                                                    for p in prompt[:1]):
        raise limits.too_long(len(prompt), param="prompt")


async def check_body(request: Request) -> None:
    if "json" not in request.headers.get("content-type", ""):
        return  # FastAPI refuses it by name
    try:
        data = await request.json()
    except ValueError:  # not JSON / not UTF-8: FastAPI parses it again and names the problem
        return
    check_counts(data, request.app.state.parley_server)


class BoundedRoute(APIRoute):
    """An APIRoute that runs check_body() before FastAPI validates the body."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def bounded(request: Request):
            await check_body(request)
            return await handler(request)

        return bounded
