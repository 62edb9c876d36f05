"""`parley serve`: the HTTP server (OpenAI and TGI APIs, conversations, /metrics) on one loaded model.

Binds to 127.0.0.1 by default; --port 0 picks a free port (the URL line says which). Ctrl-C or SIGTERM refuses
new requests (503), lets running replies finish for --shutdown-grace seconds, ends the rest with finish_reason
"cancelled", then closes the model, saving the KV cache to disk (server/lifecycle.py); a second signal ends the
grace period at once.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
import sys

from parley.cli.options import add_model_options, add_sampling_defaults, parley_kwargs, sampling_defaults
from parley.sampling import NEUTRAL, SamplingParams
from parley.server.settings import ServerSettings

LOOPBACK_NAMES = ("localhost",)


def add_parser(sub) -> None:
    d = ServerSettings()
    p = sub.add_parser("serve", help="serve the OpenAI and TGI HTTP APIs",
                       description="Serve a local model over HTTP: OpenAI (/v1), TGI (/generate), conversations "
                                   "(/v1/conversations), Prometheus (/metrics).")
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 for every interface)")
    g.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    g.add_argument("--api-key", default=os.environ.get("PARLEY_API_KEY") or None, metavar="KEY",
                   help="require 'Authorization: Bearer KEY' on every route but /health (default: $PARLEY_API_KEY)")
    g.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="let web pages from ORIGIN (e.g. http://localhost:5173, or *) call the API from a browser "
                        "(repeatable; default: none)")
    g.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="also answer requests whose Host header is NAME (a proxy's or LAN name; repeatable; * = "
                        "any). Without it only localhost and the --host address are answered (0.0.0.0: also any "
                        "IP address and this machine's name), so a web page cannot reach the server by rebinding "
                        "its own DNS name")
    g.add_argument("--shutdown-grace", type=float, default=d.shutdown_grace_s, metavar="SECONDS",
                   help="after SIGTERM or Ctrl-C, how long running replies may take to finish before they are "
                        f"ended with finish_reason 'cancelled' (new requests get 503 meanwhile; default "
                        f"{d.shutdown_grace_s:g})")
    g.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn's log level (default warning; info logs every request)")
    lim = p.add_argument_group("limits (each named in the 4xx it causes)")
    lim.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes,
                     help=f"largest request body (default {d.max_body_bytes})")
    lim.add_argument("--max-prompt-tokens", type=int, default=d.max_prompt_tokens,
                     help="largest prompt in tokens (default 0: the context size)")
    lim.add_argument("--max-tokens-cap", type=int, default=d.max_tokens_cap,
                     help="largest max_tokens a request may ask for (default 0: the context size)")
    lim.add_argument("--max-concurrent", type=int, default=d.max_concurrent,
                     help=f"HTTP requests generating at once; more get 429 (default {d.max_concurrent})")
    lim.add_argument("--max-conversations", type=int, default=d.max_conversations,
                     help=f"conversations kept by /v1/conversations (default {d.max_conversations})")
    lim.add_argument("--max-messages", type=int, default=d.max_messages,
                     help=f"most messages in one chat request, refused before they are validated or rendered "
                          f"(default {d.max_messages})")
    lim.add_argument("--header-timeout", type=float, default=d.header_timeout_s, metavar="SECONDS",
                     help=f"time a client has to send its request line and headers (default {d.header_timeout_s:g})")
    lim.add_argument("--body-timeout", type=float, default=d.body_timeout_s, metavar="SECONDS",
                     help=f"time a client has to send its request body, from its headers; then 408 (default "
                          f"{d.body_timeout_s:g})")
    lim.add_argument("--max-connections", type=int, default=d.max_connections,
                     help=f"open connections, idle ones included; one more gets 503 (default {d.max_connections})")
    lim.add_argument("--keep-alive", type=float, default=d.keep_alive_s, metavar="SECONDS",
                     help=f"how long an idle connection stays open between requests (default {d.keep_alive_s:g})")
    smp = p.add_argument_group("sampling defaults of every HTTP request (a request's own fields win; default: the "
                               "protocols' own: every stage off, temperature 1)")
    add_sampling_defaults(smp, NEUTRAL)
    add_model_options(p)
    p.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> ServerSettings:
    return ServerSettings(
        api_key=args.api_key,
        max_body_bytes=args.max_body_bytes,
        max_messages=args.max_messages,
        max_prompt_tokens=args.max_prompt_tokens,
        max_tokens_cap=args.max_tokens_cap,
        max_concurrent=args.max_concurrent,
        max_conversations=args.max_conversations,
        cors_origins=tuple(args.cors_origin),
        host=args.host,
        allowed_hosts=tuple(args.allowed_host),
        sampling=SamplingParams(**sampling_defaults(args)),
        shutdown_grace_s=args.shutdown_grace,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        max_connections=args.max_connections,
        keep_alive_s=args.keep_alive,
    )


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """Bind before loading the model: a busy port fails at once, and --port 0 learns its port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        from parley.errors import InvalidRequest
        raise InvalidRequest(f"cannot listen on {host}:{port}: {e.strerror} (pick another --port)",
                             param="port") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


class _Terminated(Exception):
    pass


def _on_sigterm(signum, frame):
    raise _Terminated


def _run_until_stopped(server, sock: socket.socket) -> None:
    """The server drains on SIGINT/SIGTERM (server/lifecycle.py), then uvicorn raises the signal again once its
    handlers are gone: end quietly on it (exit 0), so the caller closes the model and saves the KV cache, for a
    Ctrl-C or a `kill`."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        server.run(sockets=[sock])
    except (KeyboardInterrupt, _Terminated):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace) -> int:
    from parley.api import Parley
    from parley.server.app import create_app
    from parley.server.lifecycle import make_server

    settings = settings_from(args)
    sock = bind(args.host, args.port)
    try:
        parley = Parley(args.model, **parley_kwargs(args))
    except BaseException:
        sock.close()
        raise
    try:
        app = create_app(parley, settings)
        server = make_server(app, settings, log_level=args.log_level, access_log=args.log_level in ("info", "debug"))
        url = url_of(sock, args.host)
        print(f"parley: serving {parley.name} on {url} (OpenAI: {url}/v1, TGI: {url}/generate, docs: {url}/docs); "
              f"the model runs on {parley.engine.device}; Ctrl-C stops", flush=True)
        if not is_loopback(args.host) and not settings.api_key:
            print("parley: warning: listening beyond this machine without an API key: anyone who can reach "
                  f"{args.host} can use the model (set --api-key or PARLEY_API_KEY)", file=sys.stderr, flush=True)
        _run_until_stopped(server, sock)
    finally:
        sock.close()
        print("parley: stopping; saving the KV cache", file=sys.stderr, flush=True)
        parley.close()
    return 0
