"""ServerSettings: the HTTP server's named limits. Every limit a request can hit is named in its error message,
so a user reading a 4xx knows which setting (or `parley serve` flag) to change."""

from __future__ import annotations

import re
from dataclasses import dataclass

from parley.errors import InvalidRequest

MiB = 1 << 20


@dataclass(frozen=True, slots=True)
class ServerSettings:
    # Bearer token every route but /health requires (None: no authentication; then bind to localhost only).
    api_key: str | None = None
    # Largest request body. 2 MiB holds the longest prompt a 128k-token context can take even when every
    # character is JSON-escaped non-ASCII (~6 bytes each); anything bigger is refused before it is parsed.
    max_body_bytes: int = 2 * MiB
    # Largest prompt in tokens (0: the model's context size minus one token for the reply).
    max_prompt_tokens: int = 0
    # Largest max_tokens / max_new_tokens a request may ask for (0: the context size). Requests that send none
    # get min(parley's default, this cap).
    max_tokens_cap: int = 0
    # HTTP requests generating at once (streaming or not); the next one gets 429. The scheduler decodes
    # --max-running of them at a time and queues the rest.
    max_concurrent: int = 64
    # Conversations kept by /v1/conversations (in memory until the store lands); creating one more is a 429.
    max_conversations: int = 1024
    # Web origins (scheme://host:port) whose pages may call this server from a browser (CORS); "*" allows any.
    # Default none: a page on another site cannot read the answers, and cannot even send a JSON body.
    cors_origins: tuple[str, ...] = ()
    # Seconds uvicorn waits for open streams at shutdown before cancelling them.
    graceful_shutdown_s: float = 10.0

    def __post_init__(self) -> None:
        for origin in self.cors_origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise InvalidRequest(f"cors_origins: {origin!r} is not an origin like http://localhost:5173 (scheme "
                                     "and host, no path) or *", param="cors_origins")
        for name in ("max_body_bytes", "max_concurrent", "max_conversations"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InvalidRequest(f"{name} must be a positive integer, got {value!r}", param=name)
        for name in ("max_prompt_tokens", "max_tokens_cap"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise InvalidRequest(f"{name} must be 0 (no extra cap) or a positive integer, got {value!r}",
                                     param=name)
        if self.api_key is not None and not self.api_key.strip():
            raise InvalidRequest("api_key must not be empty (leave it unset for no authentication)",
                                 param="api_key")

    def prompt_limit(self, context_size: int) -> int:
        """Most prompt tokens a request may send: one token of the context is always left for the reply."""
        limit = context_size - 1
        return min(limit, self.max_prompt_tokens) if self.max_prompt_tokens else limit

    def tokens_cap(self, context_size: int) -> int:
        return min(context_size, self.max_tokens_cap) if self.max_tokens_cap else context_size
