"""`parley personas`: the bundled personas and the user's ($PARLEY_HOME/personas) from the command line.

    parley personas list [--json]
    parley personas show NAME [--json]                 every field, and the narrative its prompts hold
    parley personas import FILE [--force]              a character card (.json, .png) or a persona file (.toml)
    parley personas export NAME [-o FILE] [--png] [--spec v2|v3]
    parley personas rm NAME                            the user's only; a bundled one it replaced comes back

No model is loaded: only the registry (parley.api.registries) is read and written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

from parley.cli.options import add_home_option
from parley.cli.registry_verbs import add_list_show, list_entries, show_entry
from parley.errors import InvalidRequest

SHOWN = (("description", "description"), ("personality", "personality"), ("scenario", "scenario"),
         ("system_prompt", "system prompt"), ("post_history_instructions", "post-history instructions"),
         ("example_dialogue", "example dialogue"))


def add_parser(sub) -> None:
    p = sub.add_parser("personas", help="list, show, import, export, delete personas (character cards)",
                       description=__doc__.split("\n\n")[0])
    add_home_option(p)
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    add_list_show(verbs, list_help="bundled and imported personas", show_help="a persona's fields")
    imp = verbs.add_parser("import", help="a character card (.json, .png) or a persona file (.toml)")
    imp.add_argument("file")
    imp.add_argument("--force", action="store_true", help="replace a user persona of the same name")
    export = verbs.add_parser("export", help="a persona as a character card")
    export.add_argument("name")
    export.add_argument("-o", "--output", metavar="FILE", help="write here (default: standard output)")
    export.add_argument("--png", action="store_true", help="a PNG card (an imported PNG keeps its image)")
    export.add_argument("--spec", choices=("v2", "v3"), default="v2", help="card spec (default v2)")
    rm = verbs.add_parser("rm", help="delete a user persona")
    rm.add_argument("name")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from parley.api import registries

    personas = registries(args.home).personas
    return {"list": _list, "show": _show, "import": _import, "export": _export, "rm": _rm}[args.verb](personas, args)


def _list(personas, args) -> int:
    return list_entries(personas.listing(), args.json, COLUMNS)


def _line(text: str, n: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[:n - 3] + "..."


COLUMNS = (("name", lambda v: v["name"]), ("speaks as", lambda v: ", ".join(v["characters"])),
           ("format", lambda v: v["format"]), ("from", lambda v: v["origin"]),
           ("greeting", lambda v: _line(v["greeting"] or "-", 60)))


def _show(personas, args) -> int:
    return show_entry(personas.view(args.name), args.json, _page)


def _page(v: dict) -> Iterator[str]:
    yield f"{v['name']}: {v['character']} ({v['format']}, {v['origin']}); the user is {v['user_name']}"
    for c in v["group"]:
        yield f"  also speaks as {c['name']}" + (f": {c['description']}" if c["description"] else "")
    for key, label in SHOWN:
        if v[key].strip():
            yield f"\n{label}:\n{v[key].strip()}"
    for i, g in enumerate(v["greetings"], 1):
        yield f"\ngreeting {i}:\n{g}"
    if v["creator_notes"].strip():
        yield f"\ncreator notes (for you; never in a prompt):\n{v['creator_notes'].strip()}"
    yield f"\nthe narrative its prompts start with:\n{v['narrative']}"


def _import(personas, args) -> int:
    path = Path(args.file).expanduser()
    if not path.is_file():
        raise InvalidRequest(f"no such file: {path}", param="file")
    if path.suffix.lower() == ".toml":
        from parley.api import read_persona_file

        name = personas.save(read_persona_file(path), overwrite=args.force)
    else:
        name, _ = personas.import_file(path, overwrite=args.force)
    v = personas.view(name, full=False)
    print(f"imported {path.name} as {name!r}: {', '.join(v['characters'])} ({v['format']}); "
          f"parley chat --persona {name}")
    return 0


def _export(personas, args) -> int:
    data = personas.export_card(args.name, args.spec, png=args.png)
    if args.output:
        Path(args.output).expanduser().write_bytes(data)
        print(f"wrote {args.output} ({len(data)} bytes)", file=sys.stderr)
    elif args.png and sys.stdout.isatty():
        raise InvalidRequest("--png writes binary data: give -o FILE (or redirect standard output)", param="output")
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0


def _rm(personas, args) -> int:
    personas.delete(args.name)
    back = " (the bundled one of that name is back)" if args.name in personas.names() else ""
    print(f"deleted {args.name}{back}")
    return 0
