"""ServerSettings: the HTTP server's named limits. Every limit a request can hit is named in its error message,
so a user reading a 4xx knows which setting (or `parley serve` flag) to change."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from parley.errors import InvalidRequest
from parley.sampling import SamplingParams

MiB = 1 << 20
_HOST = re.compile(r"[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]+")


@dataclass(frozen=True, slots=True)
class ServerSettings:
    # Bearer token every route but /health requires (None: no authentication; then bind to localhost only).
    api_key: str | None = None
    # Largest request body. 2 MiB holds the longest prompt a 128k-token context can take even when every
    # character is JSON-escaped non-ASCII (~6 bytes each); anything bigger is refused before it is parsed.
    max_body_bytes: int = 2 * MiB
    # Most messages in one chat request, counted before the body is validated or rendered: a body of tens of
    # thousands of tiny messages is refused at once instead of costing seconds of template rendering.
    max_messages: int = 4096
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
    # The address the server listens on (`--host`): requests must name it, or localhost, in their Host header
    # (a web page that rebinds its own DNS name to 127.0.0.1 sends its own name and is refused).
    host: str = "127.0.0.1"
    # More Host names requests may carry (a reverse proxy's, a LAN name); "*" accepts any Host.
    allowed_hosts: tuple[str, ...] = ()
    # Sampling defaults of every HTTP request (its own fields win): SamplingParams() switches every stage off
    # with temperature 1 and top_p 1, as OpenAI and TGI define them (`parley serve --temperature ...`).
    sampling: SamplingParams = field(default_factory=SamplingParams)
    # Seconds running replies may take to finish after SIGTERM or Ctrl-C (new requests get 503 meanwhile);
    # then they end with finish_reason "cancelled" and the server exits.
    shutdown_grace_s: float = 10.0
    # Seconds a client may take to send its request line and headers (from its first byte, or from the
    # connection opening); then the connection is closed.
    header_timeout_s: float = 10.0
    # Seconds a client may take to send a request body once its headers arrived; then 408 and the connection
    # is closed. Together with header_timeout_s: a client sending one byte at a time cannot hold a connection.
    body_timeout_s: float = 30.0
    # Open connections, idle keep-alive ones included; one more is answered 503 and closed.
    max_connections: int = 256
    # Seconds an idle keep-alive connection stays open between requests.
    keep_alive_s: float = 5.0

    def __post_init__(self) -> None:
        for origin in self.cors_origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise InvalidRequest(f"cors_origins: {origin!r} is not an origin like http://localhost:5173 (scheme "
                                     "and host, no path) or *", param="cors_origins")
        for host in self.allowed_hosts:
            if host != "*" and not _HOST.fullmatch(host):
                raise InvalidRequest(f"allowed_hosts: {host!r} is not a host name or address like "
                                     "my-box.lan or 192.168.1.20 (no scheme, port or path), or *",
                                     param="allowed_hosts")
        for name in ("max_body_bytes", "max_messages", "max_concurrent", "max_conversations", "max_connections"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidRequest(f"{name} must be a positive integer, got {value!r}", param=name)
        for name in ("max_prompt_tokens", "max_tokens_cap"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise InvalidRequest(f"{name} must be 0 (no extra cap) or a positive integer, got {value!r}",
                                     param=name)
        for name in ("header_timeout_s", "body_timeout_s", "keep_alive_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise InvalidRequest(f"{name} must be a positive number of seconds, got {value!r}", param=name)
        if not isinstance(self.shutdown_grace_s, (int, float)) or not self.shutdown_grace_s >= 0:
            raise InvalidRequest(f"shutdown_grace_s must be 0 or more seconds, got {self.shutdown_grace_s!r}",
                                 param="shutdown_grace_s")
        if not isinstance(self.sampling, SamplingParams):
            raise InvalidRequest("sampling must be a parley.sampling.SamplingParams", param="sampling")
        if self.api_key is not None and not self.api_key.strip():
            raise InvalidRequest("api_key must not be empty (leave it unset for no authentication)",
                                 param="api_key")

    def prompt_limit(self, context_size: int) -> int:
        """Most prompt tokens a request may send: one token of the context is always left for the reply."""
        limit = context_size - 1
        return min(limit, self.max_prompt_tokens) if self.max_prompt_tokens else limit

    def tokens_cap(self, context_size: int) -> int:
        return min(context_size, self.max_tokens_cap) if self.max_tokens_cap else context_size

    @property
    def listens_everywhere(self) -> bool:
        """True for a wildcard bind (0.0.0.0, ::): every address of this machine reaches the server."""
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_unspecified
        except ValueError:
            return self.host == ""
