"""`parley chat`: an interactive terminal chat with streaming, or one answer with -p for scripts."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from parley.api import Chat, Parley
from parley.cli.options import add_model_options, add_sampling_options, parley_kwargs, sampling_kwargs
from parley.errors import ParleyError
from parley.sampling import describe

HELP = """commands:
  /retry          generate the last reply again
  /clear          forget the conversation (the system prompt stays)
  /system TEXT    set the system prompt (empty: none) and start over
  /stats          show the numbers of the last reply and the sampling settings
  /help           this text
  /quit           leave (or Ctrl-D); Ctrl-C stops a reply, not the program"""


def add_parser(sub) -> None:
    p = sub.add_parser("chat", help="chat in the terminal (default command)",
                       description="Chat with a local model in the terminal, or answer once with -p.")
    p.add_argument("-p", "--prompt", help="answer this once and exit ('-' reads it from standard input)")
    p.add_argument("-s", "--system", help="system prompt")
    p.add_argument("--stats", action="store_true", help="print token counts and speed after each reply")
    add_model_options(p)
    add_sampling_options(p)
    p.set_defaults(func=run)


def _stats_line(chat: Chat) -> str:
    r = chat.last.result
    parts = [f"{r.prompt_tokens} prompt tokens ({r.cached_tokens} cached)", f"{r.generated_tokens} generated",
             f"first token {r.ttft_s * 1000:.0f} ms", f"{r.decode_tps:.1f} tok/s", r.finish_reason]
    if chat.last.dropped:
        parts.append(f"{chat.last.dropped} oldest messages dropped to fit the context")
    if chat.last.note:
        parts.append(f"cache: {chat.last.note}")
    return "[" + ", ".join(parts) + "]"


def _stream(chat: Chat, chunks, out) -> bool:
    """Print a reply as it comes. Ctrl-C stops the reply, not the program: while a reply streams, SIGINT cancels
    the request (the scheduler ends it within a step, keeping what was said) instead of raising
    KeyboardInterrupt, which could land anywhere, even in a finalizer that would swallow it. Returns False when
    the reply was stopped or failed."""
    handler = None
    if threading.current_thread() is threading.main_thread():
        handler = signal.signal(signal.SIGINT, lambda signum, frame: chat.stop())
    try:
        for text in chunks:
            out.write(text)
            out.flush()
    except KeyboardInterrupt:  # a Ctrl-C that came before the handler was set
        chunks.close()
    finally:
        if handler is not None:
            signal.signal(signal.SIGINT, handler)
    result = chat.last.result if chat.last is not None else None
    if result is not None and result.finish_reason == "cancelled":
        out.write(" [stopped]\n")
        out.flush()
        return False
    out.write("\n")
    out.flush()
    if result is not None and result.finish_reason == "error":
        print(f"error: {result.error}", file=sys.stderr)
        return False
    return True


def run(args: argparse.Namespace) -> int:
    sampling = sampling_kwargs(args)
    if args.prompt is not None:
        text = sys.stdin.read() if args.prompt == "-" else args.prompt
        with Parley(args.model, **parley_kwargs(args)) as parley:
            chat = parley.chat(args.system, **sampling)
            _stream(chat, chat.send(text), sys.stdout)
            if args.stats:
                print(_stats_line(chat), file=sys.stderr)
        return 0
    return _interactive(args, sampling)


def _interactive(args: argparse.Namespace, sampling: dict) -> int:
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:  # pragma: no cover
        pass
    err = sys.stderr
    parley = Parley(args.model, **parley_kwargs(args))
    try:
        print(f"parley: {parley.name} on {parley.engine.device}, context {parley.context_size} tokens, "
              f"{parley.engine.n_threads} threads. "
              "Type /help for commands.", file=err)
        chat = parley.chat(args.system, **sampling)
        while True:
            try:
                line = input("> ")
            except EOFError:
                print(file=err)
                return 0
            except KeyboardInterrupt:
                print("\n(/quit or Ctrl-D to leave)", file=err)
                continue
            line = line.strip()
            if not line:
                continue
            try:
                if line.startswith("/"):
                    cmd, _, rest = line.partition(" ")
                    if cmd in ("/quit", "/exit"):
                        return 0
                    if cmd == "/help":
                        print(HELP, file=err)
                    elif cmd == "/clear":
                        chat.clear()
                        print("(conversation cleared)", file=err)
                    elif cmd == "/system":
                        chat.set_system(rest.strip() or None)
                        chat.clear()
                        print("(system prompt set; conversation cleared)", file=err)
                    elif cmd == "/stats":
                        print(_stats_line(chat) if chat.last else "(no reply yet)", file=err)
                        print(f"[sampling: {describe(chat.params)}]", file=err)
                    elif cmd == "/retry":
                        _stream(chat, chat.retry(), sys.stdout)
                        if args.stats:
                            print(_stats_line(chat), file=err)
                    else:
                        print(f"unknown command {cmd}; /help lists them", file=err)
                    continue
                _stream(chat, chat.send(line), sys.stdout)
                if args.stats:
                    print(_stats_line(chat), file=err)
            except ParleyError as e:
                print(f"error: {e}", file=err)
    finally:
        parley.close()
