"""`parley serve`: the HTTP server (the web chat page, OpenAI and TGI APIs, conversations, /metrics) over the models
it offers: every registered one (`parley models list`), or those named with a repeated -m. The default one (the
first -m, else the embedded model) loads at start, the others on their first request; the start-up lines say
which is which, each one's context and where it runs, and when they unload (--models-max, --model-idle,
--models-memory-mb).

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
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """serve's flags (`parley cluster up` takes them too)."""
    add_flags(p, ServerSettings, "server (each limit is named in the 4xx it causes)")
    smp = p.add_argument_group("sampling defaults of every HTTP request (a request's own fields win; default: the "
                               "protocols' own: every stage off, temperature 1)")
    add_sampling_defaults(smp, NEUTRAL)
    add_model_options(p)


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


STATES = {"loaded": "loaded", "unloaded": "loads on its first request"}    # the others (loading, missing) as named


def offer_lines(views, m) -> list[str]:
    """What the start-up says about the models (parley.models.list(); `m`: the models' settings): one line each,
    the default first (loaded or not, context, device), then when they load and unload."""
    from parley.api.facade import memory_budget  # -1 means a share of this machine's memory: say how much

    lines = [f"{len(views)} model{'s' if len(views) != 1 else ''} offered (`model` in a request, TGI's x-model "
             "header or /models/NAME path; GET /v1/models lists them):"]
    for v in sorted(views, key=lambda v: not v.default):    # the default first, the others as listed
        state = STATES.get(v.state, v.state) + (f": {v.error}" if v.error else "")
        mark = "* " if v.default else "  "
        gpu = v.settings.get("gpu_layers")
        device = v.device if v.state == "loaded" or gpu is None else f"{v.device}; gpu_layers {gpu} when it loads"
        lines.append(f"  {mark}{v.name} ({v.file_type}, {v.architecture}): {state}, context {v.context_size}, "
                     f"device {device}")
    idle = f"after {m.model_idle:g} s unused (--model-idle)" if m.model_idle > 0 else "never for idleness " \
        "(--model-idle 0)"
    budget = memory_budget(m.models_memory_mb)
    room = f"{budget >> 20} MB for their weights and KV" if budget else "no memory budget"
    lines.append(f"at most {m.models_max} loaded at once (--models-max), {room} (--models-memory-mb); one "
                 f"unloads {idle}, or the least recently used first to make room")
    return lines


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
        # the first line is the one scripts and tests read the URL from: its shape stays
        print(f"parley: chat in a browser at {url}/ · serving {parley.name} on {url} (OpenAI: {url}/v1, TGI: "
              f"{url}/generate, docs: {url}/docs); the model runs on {parley.info.device}; Ctrl-C stops", flush=True)
        for line in offer_lines(parley.models.list(), parley.settings.models):
            print(f"parley: {line}", flush=True)
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
