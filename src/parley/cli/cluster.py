"""`parley cluster`: parley's engine replicated on a Ray cluster (pip install 'parley[cluster]').

    parley cluster up [--replicas N] [--threads T] [--cluster ADDRESS] [serve's flags]
                    deploy N replicas of the model on Ray Serve (unless its application already runs) and serve them
                    here: the same page and APIs as `parley serve`, each conversation routed to the replica that
                    holds its KV; ADDRESS: 'local' (default: a Ray cluster of this machine for this process's life),
                    'auto' (the one `ray start --head` runs here), HOST:PORT
    parley cluster status [--cluster ADDRESS] [--json]      parley's applications and their replicas' states
    parley cluster scale N [-m MODEL] [--cluster ADDRESS]   run N replicas of the model (the same settings flags)
    parley cluster down [-m MODEL | --all] [--cluster ADDRESS]   delete the model's application (or every parley one)

status, scale and down join a running cluster (default 'auto'); several front ends (`parley cluster up --cluster
auto`, with a shared --db-url) share one application's replicas.
"""

from __future__ import annotations

import argparse
import json
import os

from parley.cli.options import add_model_options, load_settings


def add_parser(sub) -> None:
    from parley.cli import serve

    p = sub.add_parser("cluster", help="serve replicas of parley's engine on a Ray cluster",
                       description=__doc__.split("\n\n")[0])
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    up = verbs.add_parser("up", help="deploy engine replicas on Ray and serve them (parley serve's page and APIs)")
    serve.add_arguments(up)
    up.set_defaults(func=run_up)
    st = verbs.add_parser("status", help="parley's applications on the cluster and their replicas")
    add_model_options(st)
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(func=run_status)
    sc = verbs.add_parser("scale", help="run N replicas of the model")
    sc.add_argument("count", type=int, metavar="N")
    add_model_options(sc)
    sc.set_defaults(func=run_scale)
    dn = verbs.add_parser("down", help="delete the model's application")
    dn.add_argument("--all", action="store_true", help="every parley application on the cluster")
    add_model_options(dn)
    dn.set_defaults(func=run_down)


def run_up(args: argparse.Namespace) -> int:
    from parley.cli import serve
    if not hasattr(args, "cluster") and not os.environ.get("PARLEY_CLUSTER"):
        args.cluster = "local"
    return serve.run(args)


def _print_status(apps: dict, as_json: bool = False) -> None:
    if as_json:
        print(json.dumps(apps, indent=2))
        return
    if not apps:
        print("no parley application runs on this Ray cluster (parley cluster up deploys one)")
    for name, app in apps.items():
        states = ", ".join(f"{n} {state.lower()}" for state, n in app["replicas"].items()) or "no replicas"
        print(f"{name}: {app['status'].lower()}, replicas: {states}")


def run_status(args: argparse.Namespace) -> int:
    from parley.api import cluster
    _print_status(cluster.status(load_settings(args)), args.json)
    return 0


def run_scale(args: argparse.Namespace) -> int:
    from parley.api import cluster
    from parley.errors import InvalidRequest
    if args.count < 1:
        raise InvalidRequest(f"N must be at least 1, got {args.count} (parley cluster down removes the replicas)",
                             param="replicas")
    _print_status(cluster.scale(load_settings(args), args.count))
    return 0


def run_down(args: argparse.Namespace) -> int:
    from parley.api import cluster
    for name in cluster.down(load_settings(args), every=args.all):
        print(f"deleted {name}")
    return 0
