"""`parley serve`: the HTTP server (the web chat page, OpenAI and TGI APIs, conversations, /metrics) on one loaded
model.

The web chat page is at GET / on the same port (the URL line names it first). Binds to 127.0.0.1 by default;
--port 0 picks a free port (the URL line says which). Ctrl-C or SIGTERM refuses new requests (503), lets running
replies finish for --shutdown-grace seconds, ends the rest with finish_reason "cancelled", then closes the model,
saving the KV cache to disk (server/lifecycle.py); a second signal ends the grace period at once.
"""

from __future__ import annotations

import argparse
import ipaddress
import signal
import socket
import sys

from parley.cli.options import add_model_options, add_sampling_defaults, load_settings, sampling_defaults
from parley.config import add_flags, from_args
from parley.sampling import NEUTRAL, SamplingParams
from parley.server.settings import ServerSettings

LOOPBACK_NAMES = ("localhost",)


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve the web page and the OpenAI and TGI HTTP APIs",
                       description="Serve a local model over HTTP: a chat page (/), OpenAI (/v1), TGI (/generate), "
                                   "conversations (/v1/conversations), Prometheus (/metrics).")
    add_flags(p, ServerSettings, "server (each limit is named in the 4xx it causes)")
    smp = p.add_argument_group("sampling defaults of every HTTP request (a request's own fields win; default: the "
                               "protocols' own: every stage off, temperature 1)")
    add_sampling_defaults(smp, NEUTRAL)
    add_model_options(p)
    p.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> ServerSettings:
    return from_args(args, ServerSettings, sampling=SamplingParams(**sampling_defaults(args)))


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
    sock = bind(settings.host, settings.port)
    try:
        parley = Parley(settings=load_settings(args))
    except BaseException:
        sock.close()
        raise
    try:
        app = create_app(parley, settings)
        server = make_server(app, settings, log_level=settings.log_level,
                             access_log=settings.log_level in ("info", "debug"))
        url = url_of(sock, settings.host)
        print(f"parley: chat in a browser at {url}/ · serving {parley.name} on {url} (OpenAI: {url}/v1, TGI: "
              f"{url}/generate, docs: {url}/docs); the model runs on {parley.info.device}; Ctrl-C stops", flush=True)
        if not is_loopback(settings.host) and not settings.api_key:
            print("parley: warning: listening beyond this machine without an API key: anyone who can reach "
                  f"{settings.host} can use the model (set --api-key or PARLEY_API_KEY)", file=sys.stderr,
                  flush=True)
        _run_until_stopped(server, sock)
    finally:
        sock.close()
        print("parley: stopping; saving the KV cache", file=sys.stderr, flush=True)
        parley.close()
    return 0
