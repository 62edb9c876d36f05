"""ServerSettings: the HTTP server's settings and named limits, one name each (the field), one home (here).

`parley serve`'s flags are generated from these fields (parley.config.add_flags), so a field, its flag and
its help never drift apart. Every limit a request can hit is named in its error message, so a user reading a
4xx knows which setting (or flag) to change.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from parley.api import Caps
from parley.config import check, setting
from parley.errors import InvalidRequest
from parley.sampling import SamplingParams

MiB = 1 << 20
_HOST = re.compile(r"[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]+")


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = setting("127.0.0.1", "--host", metavar="ADDRESS",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 for every interface). "
                             "Requests must name it, or localhost, in their Host header")
    port: int = setting(8000, "--port", least=0, help="port (default 8000; 0 = any free port)")
    api_key: str | None = setting(None, "--api-key", metavar="KEY", env="PARLEY_API_KEY",
                                  help="require 'Authorization: Bearer KEY' on every route but /health (default: "
                                       "$PARLEY_API_KEY; none: bind to localhost only)")
    cors_origins: tuple[str, ...] = setting((), "--cors-origin", metavar="ORIGIN",
                                            help="let web pages from ORIGIN (e.g. http://localhost:5173, or *) call "
                                                 "the API from a browser (repeatable; default: none)")
    allowed_hosts: tuple[str, ...] = setting(
        (), "--allowed-host", metavar="NAME",
        help="also answer requests whose Host header is NAME (a proxy's or LAN name; repeatable; * = any). "
             "Without it only localhost and the --host address are answered (0.0.0.0: also any IP address and "
             "this machine's name), so a web page cannot reach the server by rebinding its own DNS name")
    log_level: str = setting("warning", "--log-level", choices=("critical", "error", "warning", "info", "debug"),
                             help="uvicorn's log level (default warning; info logs every request)")
    shutdown_grace: float = setting(10.0, "--shutdown-grace", metavar="SECONDS", least=0,
                                    help="after SIGTERM or Ctrl-C, how long running replies may take to finish "
                                         "before they end with finish_reason 'cancelled' (new requests get 503 "
                                         "meanwhile; default 10)")
    max_body_bytes: int = setting(2 * MiB, "--max-body-bytes", metavar="BYTES", least=1,
                                  help="largest request body, refused before it is parsed (default 2 MiB: the "
                                       "longest prompt a 128k context takes, every character JSON-escaped)")
    max_messages: int = setting(4096, "--max-messages", metavar="N", least=1,
                                help="most messages in one chat request, refused before they are validated or "
                                     "rendered (default 4096)")
    max_prompt_tokens: int = setting(0, "--max-prompt-tokens", metavar="TOKENS", least=0,
                                     help="largest prompt in tokens (default 0: the context size)")
    max_tokens_cap: int = setting(0, "--max-tokens-cap", metavar="TOKENS", least=0,
                                  help="largest max_tokens a request may ask for (default 0: the context size)")
    max_concurrent: int = setting(64, "--max-concurrent", metavar="N", least=1,
                                  help="HTTP requests generating at once; more get 429 (default 64; the "
                                       "scheduler decodes --max-running of them at a time and queues the rest)")
    header_timeout: float = setting(10.0, "--header-timeout", metavar="SECONDS", least=0.001,
                                    help="time a client has to send its request line and headers (default 10)")
    body_timeout: float = setting(30.0, "--body-timeout", metavar="SECONDS", least=0.001,
                                  help="time a client has to send its request body, from its headers; then 408 "
                                       "(default 30)")
    max_connections: int = setting(256, "--max-connections", metavar="N", least=1,
                                   help="open connections, idle ones included; one more gets 503 (default 256)")
    keep_alive: float = setting(5.0, "--keep-alive", metavar="SECONDS", least=0.001,
                                help="how long an idle connection stays open between requests (default 5)")
    docs_root: str | None = setting(None, "--docs-root", metavar="DIR",
                                    help="POST /v1/documents may load server-side files under DIR (default: "
                                         "none, uploads only)")
    # Sampling defaults of every HTTP request (its own fields win): SamplingParams() switches every stage off
    # with temperature 1 and top_p 1, as OpenAI and TGI define them (`parley serve --temperature ...`).
    sampling: SamplingParams = field(default_factory=SamplingParams)

    def __post_init__(self) -> None:
        check(self)
        for origin in self.cors_origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise InvalidRequest(f"cors_origins (--cors-origin): {origin!r} is not an origin like "
                                     "http://localhost:5173 (scheme and host, no path) or *", param="cors_origins")
        for host in self.allowed_hosts:
            if host != "*" and not _HOST.fullmatch(host):
                raise InvalidRequest(f"allowed_hosts (--allowed-host): {host!r} is not a host name or address "
                                     "like my-box.lan or 192.168.1.20 (no scheme, port or path), or *",
                                     param="allowed_hosts")
        if not isinstance(self.sampling, SamplingParams):
            raise InvalidRequest("sampling must be a parley.sampling.SamplingParams", param="sampling")
        if self.api_key is not None and not self.api_key.strip():
            raise InvalidRequest("api_key must not be empty (leave it unset for no authentication)",
                                 param="api_key")

    def caps(self) -> Caps:
        """The limits every request to this server gets, at each model's context (fixed once, when the app is
        built): --max-prompt-tokens and --max-tokens-cap."""
        return Caps(prompt_tokens=self.max_prompt_tokens, max_tokens=self.max_tokens_cap,
                    prompt_setting="max_prompt_tokens, `parley serve --max-prompt-tokens`",
                    tokens_setting="max_tokens_cap, `parley serve --max-tokens-cap`")

    @property
    def listens_everywhere(self) -> bool:
        """True for a wildcard bind (0.0.0.0, ::): every address of this machine reaches the server."""
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_unspecified
        except ValueError:
            return self.host == ""
