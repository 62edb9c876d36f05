"""`parley skills`: the bundled skills and the user's ($PARLEY_HOME/skills/*.toml) from the command line.

    parley skills list [--json]        name, parameters (with defaults), description; warnings for broken files
    parley skills show NAME [--json]   the recipe, its parameters, sampling settings and examples

Use one with `parley chat --skill NAME --param key=value` (or /skill inside the chat). No model is loaded.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from parley.cli.options import add_home_option


def add_parser(sub) -> None:
    p = sub.add_parser("skills", help="list and show skills (recipes that wrap your message)",
                       description=__doc__.split("\n\n")[0])
    add_home_option(p)
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    ls = verbs.add_parser("list", help="every skill")
    ls.add_argument("--json", action="store_true")
    show = verbs.add_parser("show", help="one skill")
    show.add_argument("name")
    show.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from parley.api import registries

    skills = registries(args.home).skills
    if args.verb == "list":
        if args.json:
            views, warnings = skills.listing()
            for w in warnings:
                print(w, file=sys.stderr)
            print(json.dumps(views, indent=1, ensure_ascii=False))
        else:
            print(skills.describe())
        return 0
    v = skills.view(args.name)
    if args.json:
        print(json.dumps(v, indent=1, ensure_ascii=False))
        return 0
    print(f"{v['name']}: {v['description']} ({v['origin']})")
    print(f"\ntemplate ({{text}} is your message):\n{v['template']}")
    if v["system"]:
        print(f"\nsystem (put before it):\n{v['system']}")
    if v["params"]:
        print("\nparameters:")
        for name, p in v["params"].items():
            value = "required" if p["required"] else f"default {p['default']}"
            print(f"  {name} ({value})" + (f": {p['description']}" if p["description"] else ""))
    if v["sampling"]:
        print("\nsampling: " + ", ".join(f"{k}={val}" for k, val in v["sampling"].items()))
    for ex in v["examples"]:
        params = [x for k, val in ex["params"].items() for x in ("--param", f"{k}={val}")]
        print("\nexample: " + shlex.join(["parley", "chat", "--skill", v["name"], *params, "-p", ex["text"]]))
    return 0
