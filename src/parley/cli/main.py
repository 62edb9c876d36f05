"""Entry point: `parley [chat|serve|ask|models|bench|...] ...`; `parley` alone starts the terminal chat."""

from __future__ import annotations

import argparse
import logging
import sys

from parley import __version__
from parley.errors import ParleyError

COMMANDS = ("chat", "serve", "ask", "bench", "conversations", "conv", "personas", "skills", "models", "cluster")


def build_parser() -> argparse.ArgumentParser:
    from parley.cli import ask, bench, chat, cluster, conversations, models, personas, serve, skills

    p = argparse.ArgumentParser(prog="parley", description="Talk with language models on your own machine.")
    p.add_argument("--version", action="version", version=f"parley {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    chat.add_parser(sub)
    serve.add_parser(sub)
    ask.add_parser(sub)
    conversations.add_parser(sub)
    personas.add_parser(sub)
    skills.add_parser(sub)
    models.add_parser(sub)
    cluster.add_parser(sub)
    bench.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv = ["chat", *argv]
    logging.basicConfig(level=logging.WARNING, format="parley: %(levelname)s: %(message)s")
    try:
        args = build_parser().parse_args(argv)
        return args.func(args) or 0
    except ParleyError as e:
        print(f"parley: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("parley: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
