"""The Host check: a guard against DNS rebinding (the attack behind Ollama's CVE-2024-28224).

A web page at attacker.example can rebind its own name to 127.0.0.1 and then read this server's answers as
same-origin; its requests still say `Host: attacker.example`. So a request is answered only when its Host
names this server:
  - always: localhost, 127.0.0.1, [::1] (with or without a port);
  - the address given to `--host`, when it is a specific one;
  - listening on every interface (0.0.0.0, ::): any IP address literal (a name can be rebound, an address
    cannot: a page's origin is its own address, so the browser's same-origin rule holds), and this machine's
    own host name (socket.gethostname() and its fully qualified form);
  - whatever `--allowed-host` lists (a reverse proxy's name, a LAN name); `*` accepts any Host.
Anything else gets 421 in the OpenAI error shape, naming the Host and the flag. A request without a Host header
(HTTP/1.0; HTTP/1.1 requires one) comes from no browser and passes.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from parley.errors import shorten
from parley.server.errors import error_body
from parley.server.limits import drain, header, send_json
from parley.server.settings import ServerSettings

LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def host_name(value: bytes) -> str:
    """The name in a Host header, lower-cased, without port, brackets or a trailing dot."""
    text = value.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1:text.find("]")] if "]" in text else text
    name, sep, port = text.rpartition(":")
    if sep and port.isdigit() and ":" not in name:
        text = name
    return text.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _own_names() -> frozenset[str]:
    names = set()
    for get in (socket.gethostname, socket.getfqdn):
        try:
            names.add(get().lower().rstrip("."))
        except OSError:  # pragma: no cover
            pass
    return frozenset(n for n in names if n)


@dataclass(frozen=True)
class HostPolicy:
    names: frozenset[str]        # Host names (and addresses) accepted as they are
    any_ip: bool                 # listening on every interface: IP literals are accepted
    anything: bool               # --allowed-host '*'

    @classmethod
    def from_settings(cls, s: ServerSettings) -> HostPolicy:
        names = set(LOCAL_NAMES) | {host_name(h.encode()) for h in s.allowed_hosts if h != "*"}
        if s.listens_everywhere:
            names |= _own_names()
        elif s.host:
            names.add(host_name(s.host.encode()))
        return cls(frozenset(names), s.listens_everywhere, "*" in s.allowed_hosts)

    def allows(self, value: bytes | None) -> bool:
        if self.anything or value is None:
            return True
        name = host_name(value)
        return name in self.names or (self.any_ip and _is_ip(name))


class HostCheck:
    """ASGI middleware: 421 for a request whose Host does not name this server (see the module docstring)."""

    def __init__(self, app, policy: HostPolicy):
        self.app = app
        self.policy = policy

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        value = header(scope, b"host")
        if self.policy.allows(value):
            return await self.app(scope, receive, send)
        shown = shorten(value.decode("latin-1"))
        message = (f"Host {shown!r} does not name this server (a web page rebinding its DNS name to this machine "
                   "sends its own name): use localhost or this server's address, or start it with "
                   "`parley serve --allowed-host NAME` (allowed_hosts)")
        complete = await drain(receive)
        body = error_body(message, param="host", code="invalid_host", status=421, path=scope["path"])
        await send_json(send, 421, body, close=not complete)
