"""`parley skills`: the bundled skills and the user's ($PARLEY_HOME/skills/*.toml) from the command line.

    parley skills list [--json]        name, parameters (with defaults), description; warnings for broken files
    parley skills show NAME [--json]   the recipe, its parameters, sampling settings and examples

Use one with `parley chat --skill NAME --param key=value` (or /skill inside the chat). No model is loaded.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Iterator

from parley.cli.options import add_home_option
from parley.cli.registry_verbs import add_list_show, list_entries, show_entry


def add_parser(sub) -> None:
    p = sub.add_parser("skills", help="list and show skills (recipes that wrap your message)",
                       description=__doc__.split("\n\n")[0])
    add_home_option(p)
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    add_list_show(verbs, list_help="every skill", show_help="one skill")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from parley.api import registries

    skills = registries(args.home).skills
    if args.verb == "list":
        if args.json:
            return list_entries(skills.listing(), True, ())
        _, warnings = skills.listing()
        for w in warnings:
            print(w, file=sys.stderr)
        print(skills.describe(warnings=False))   # the table `parley chat /skill` shows too
        return 0
    return show_entry(skills.view(args.name), args.json, _page)


def _page(v: dict) -> Iterator[str]:
    yield f"{v['name']}: {v['description']} ({v['origin']})"
    yield f"\ntemplate ({{text}} is your message):\n{v['template']}"
    if v["system"]:
        yield f"\nsystem (put before it):\n{v['system']}"
    if v["params"]:
        yield "\nparameters:"
        for name, p in v["params"].items():
            value = "required" if p["required"] else f"default {p['default']}"
            yield f"  {name} ({value})" + (f": {p['description']}" if p["description"] else "")
    if v["sampling"]:
        yield "\nsampling: " + ", ".join(f"{k}={val}" for k, val in v["sampling"].items())
    for ex in v["examples"]:
        params = [x for k, val in ex["params"].items() for x in ("--param", f"{k}={val}")]
        yield "\nexample: " + shlex.join(["parley", "chat", "--skill", v["name"], *params, "-p", ex["text"]])
