"""`parley conversations`: the stored conversations ($PARLEY_HOME/parley.db) from the command line.

    parley conversations list [--limit N] [--json]
    parley conversations show ID [--tree] [--json]
    parley conversations search TEXT
    parley conversations export ID [-o FILE]        the whole tree as JSON
    parley conversations import FILE                 a new conversation (new ids)
    parley conversations rm ID
    parley conversations fork ID --at MESSAGE        a new conversation holding the branch up to MESSAGE

No model is loaded: only the store is opened.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from parley.cli.options import add_store_options
from parley.errors import InvalidRequest


def add_parser(sub) -> None:
    p = sub.add_parser("conversations", aliases=["conv"], help="list, show, search, export, import, delete, fork "
                       "stored conversations", description=__doc__.split("\n\n")[0])
    add_store_options(p)
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    ls = verbs.add_parser("list", help="newest first")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true")
    show = verbs.add_parser("show", help="a conversation's current branch (--tree: every message)")
    show.add_argument("id")
    show.add_argument("--tree", action="store_true")
    show.add_argument("--json", action="store_true")
    search = verbs.add_parser("search", help="full-text search over every message")
    search.add_argument("text", nargs="+")
    export = verbs.add_parser("export", help="the whole tree as JSON")
    export.add_argument("id")
    export.add_argument("-o", "--output", metavar="FILE", help="write here (default: standard output)")
    imp = verbs.add_parser("import", help="an exported file as a new conversation")
    imp.add_argument("file")
    rm = verbs.add_parser("rm", help="delete a conversation and every message")
    rm.add_argument("id")
    fork = verbs.add_parser("fork", help="a new conversation holding the branch up to a message")
    fork.add_argument("id")
    fork.add_argument("--at", required=True, metavar="MESSAGE")
    for verb in (ls, show, search, export, imp, rm, fork):  # `parley conversations list --db-url URL` too
        add_store_options(verb, defaults=False)
    p.set_defaults(func=run)


def _when(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")


def run(args: argparse.Namespace) -> int:
    from parley.api import Library

    lib = Library(args.home, db_url=args.db_url)
    out = sys.stdout
    try:
        if args.verb == "list":
            convs = lib.list(limit=args.limit).items
            if args.json:
                print(json.dumps([{"id": c.id, "title": c.title, "messages": c.message_count,
                                   "updated": c.updated} for c in convs], indent=1))
            for c in [] if args.json else convs:
                print(f"{c.id}  {_when(c.updated)}  {c.message_count} messages  {c.title or '(untitled)'}", file=out)
            if not convs and not args.json:
                print("(no conversations yet: parley chat starts one)", file=out)
        elif args.verb == "show":
            conv = lib.get(args.id, tree=args.tree)
            msgs = conv.messages
            if args.json:
                print(json.dumps(lib.export(conv.id) if args.tree else
                                 [{"id": m.id, "parent_id": m.parent_id, "role": m.role, "content": m.content}
                                  for m in msgs], indent=1))
                return 0
            print(f"{conv.title or '(untitled)'}  [{conv.id}]", file=out)
            if conv.system:
                print(f"system: {conv.system}", file=out)
            for m in msgs:
                flag = " (cut short)" if m.partial else ""
                where = f"  [{m.id}{' <- ' + m.parent_id if args.tree and m.parent_id else ''}]"
                print(f"\n{m.role}:{flag}{where}\n{m.content}", file=out)
        elif args.verb == "search":
            hits = lib.search(" ".join(args.text))
            for h in hits:
                print(f"{h.conversation_id}  {h.message_id}  {h.role}: {h.snippet}  ({h.conversation_title})",
                      file=out)
            if not hits:
                print("(nothing found)", file=out)
        elif args.verb == "export":
            data = json.dumps(lib.export(args.id), indent=1, ensure_ascii=False)
            if args.output:
                Path(args.output).write_text(data + "\n")
            else:
                print(data, file=out)
        elif args.verb == "import":
            try:
                data = json.loads(Path(args.file).read_text())
            except OSError as e:
                raise InvalidRequest(f"cannot read {args.file}: {e.strerror}", param="file") from None
            except ValueError as e:
                raise InvalidRequest(f"{args.file} is not JSON: {e}", param="file") from None
            conv = lib.import_(data)
            print(f"imported as {conv.id} ({conv.message_count} messages)", file=out)
        elif args.verb == "rm":
            lib.delete(args.id)
            print(f"deleted {args.id}", file=out)
        elif args.verb == "fork":
            conv = lib.fork(args.id, args.at)
            print(f"forked as {conv.id} ({conv.message_count} messages)", file=out)
    finally:
        lib.close()
    return 0
