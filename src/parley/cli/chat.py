"""`parley chat`: an interactive terminal chat kept in the store (resume it any time), or one answer with -p.

Every message is stored as it happens ($PARLEY_HOME/parley.db); `--resume` picks the latest conversation (or
the one named) up again, with its KV cache from disk. Multi-line input: paste it (lines that arrive together
are one message), or open a block with three double quotes on a line of their own and close it the same way.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
import threading
from pathlib import Path

from parley.api import Chat, Parley, parse_params, read_persona_file
from parley.cli.options import add_model_options, add_sampling_options, load_settings, sampling_kwargs
from parley.errors import ParleyError
from parley.sampling import describe

HELP = """commands:
  /retry             a new reply to your last message (the old one is kept as a branch)
  /back [N]          go N messages back (default 2: your last message and its reply); what you say next
                     continues from there, as a new branch
  /branches          the conversation's branches; /branch K switches to branch K
  /title [TEXT]      show or set the title
  /system [TEXT]     show the system prompt, or set it (the conversation goes on with it)
  /skill [NAME k=v]  wrap your next messages in a skill (translate to=German, summarize, ...); /skill off;
                     /skill alone lists them
  /as NAME           in a persona's group scene: who answers next
  /new               a new conversation (this one stays stored: parley chat --resume ID)
  /stats             the numbers of the last reply and the sampling settings
  /help              this text
  /quit              leave (or Ctrl-D); Ctrl-C stops a reply, not the program
multi-line: paste it, or type \"\"\" on a line, then the lines, then \"\"\" again"""

BLOCK = '"""'
HISTORY_FILE = "chat_history"
HISTORY_LINES = 1000


def add_parser(sub) -> None:
    p = sub.add_parser("chat", help="chat in the terminal (default command)",
                       description="Chat with a local model in the terminal (kept in $PARLEY_HOME/parley.db; "
                                   "--resume picks it up again), or answer once with -p.")
    p.add_argument("-p", "--prompt", help="answer this once and exit ('-' reads it from standard input)")
    p.add_argument("-s", "--system", help="system prompt")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="ID",
                   help="continue the latest conversation (or the one with this id: parley conversations list)")
    p.add_argument("--new", action="store_true", help="start a new conversation (the default)")
    p.add_argument("--persona", metavar="NAME",
                   help="talk to a persona: a bundled or imported one (parley personas list) or a card file "
                        "(.json, .png, .toml)")
    p.add_argument("--skill", metavar="NAME", help="wrap every message in a skill (parley skills list)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a parameter of the skill (repeatable), e.g. --param to=German")
    p.add_argument("--doc", action="append", default=[], metavar="FILE",
                   help="talk about a document: files, directories or archives, loaded once into model memory "
                        "and pinned first in the conversation (repeatable: one document of them all)")
    p.add_argument("--stats", action="store_true", help="print token counts and speed after each reply")
    add_model_options(p)
    add_sampling_options(p)
    p.set_defaults(func=run)


class Session:
    """The terminal's state around a Chat: the skill in use, who speaks next."""

    def __init__(self, parley: Parley, chat: Chat, args: argparse.Namespace):
        self.parley = parley
        self.chat = chat
        self.args = args
        self.skill: str | None = args.skill
        self.skill_params: dict[str, str] = _params(args.param)
        self.speaker: str | None = None
        if self.skill:
            parley.skills.get(self.skill).apply("x", self.skill_params)  # refuse a bad skill before the first turn

    def send(self, text: str):
        return self.chat.send(text, skill=self.skill, skill_params=self.skill_params or None,
                              speaker=self.speaker)


def _params(items: list[str]) -> dict[str, str]:
    return parse_params(items)


def _stats_line(chat: Chat) -> str:
    last = chat.last
    r = last.result
    parts = [f"{r.prompt_tokens} prompt tokens ({r.cached_tokens} cached)", f"{r.generated_tokens} generated",
             f"first token {r.ttft_s * 1000:.0f} ms", f"{r.decode_tps:.1f} tok/s", r.finish_reason]
    if last.note:
        parts.append(last.note)
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


def open_chat(parley: Parley, args: argparse.Namespace) -> Chat:
    if args.resume is not None and args.new:
        raise ParleyError("--resume and --new contradict each other: pick one", param="resume")
    if args.resume is not None:
        return parley.chat(resume=args.resume)
    docs = None
    if args.doc:
        info = parley.documents.add(args.doc)
        how = "read whole" if info.fits else "longer than the context: each message brings the passages it needs"
        print(f"parley: {info.name}: {info.tokens} tokens, {how}", file=sys.stderr)
        parley.documents.warm([info.id])
        docs = [info.id]
    return parley.chat(args.system, persona=_persona(parley, args.persona), document_ids=docs,
                       **sampling_kwargs(args))


def _persona(parley: Parley, name: str | None):
    if name is None:
        return None
    path = Path(name).expanduser()
    if path.suffix.lower() in (".json", ".png", ".toml") and path.is_file():
        return read_persona_file(path)
    return name


def run(args: argparse.Namespace) -> int:
    if args.prompt is not None:
        text = sys.stdin.read() if args.prompt == "-" else args.prompt
        with Parley(settings=load_settings(args)) as parley:
            session = Session(parley, open_chat(parley, args), args)
            _stream(session.chat, session.send(text), sys.stdout)
            if args.stats:
                print(_stats_line(session.chat), file=sys.stderr)
        return 0
    return _interactive(args)


# ---- input -------------------------------------------------------------------------------------------------
class Input:
    """Lines from the terminal: readline editing, history kept across runs, pastes and \"\"\" blocks joined into
    one message."""

    def __init__(self, history: Path | None):
        self.history = history
        self._readline = None
        try:
            import readline
        except ImportError:  # pragma: no cover
            return
        self._readline = readline
        if history is not None and history.is_file():
            try:
                readline.read_history_file(str(history))
            except OSError:
                pass

    def _pending(self) -> bool:
        """More input already waiting (the rest of a paste)."""
        try:
            return bool(select.select([sys.stdin], [], [], 0.03)[0])
        except (OSError, ValueError):
            return False

    def read(self) -> str:
        line = input("> ")
        if line.strip() == BLOCK:
            lines = []
            while (more := input("... ")).strip() != BLOCK:
                lines.append(more)
            return "\n".join(lines)
        lines = [line]
        while sys.stdin.isatty() and self._pending():
            lines.append(input(""))
        text = "\n".join(lines)
        if self._readline is not None and not sys.stdin.isatty() and text.strip():
            self._readline.add_history(text)  # readline records typed lines itself, not piped ones
        return text

    def save(self) -> None:
        if self._readline is None or self.history is None:
            return
        try:
            self.history.parent.mkdir(parents=True, exist_ok=True)
            self._readline.set_history_length(HISTORY_LINES)
            self._readline.write_history_file(str(self.history))
        except OSError:
            pass


def _interactive(args: argparse.Namespace) -> int:
    err = sys.stderr
    parley = Parley(settings=load_settings(args))
    reader = Input(parley.settings.data_dir / HISTORY_FILE if os.access(parley.settings.data_dir, os.W_OK)
                   else None)
    try:
        info = parley.info
        session = Session(parley, open_chat(parley, args), args)
        chat = session.chat
        resumed = " (resumed: " + _summary(chat) + ")" if args.resume is not None else ""
        print(f"parley: {info.name} on {info.device}, context {info.context_size} tokens, {info.threads} threads; "
              f"conversation {chat.id}{resumed}. Type /help for commands.", file=err)
        _show_greeting(chat)
        while True:
            try:
                line = reader.read()
            except EOFError:
                print(file=err)
                return 0
            except KeyboardInterrupt:
                print("\n(/quit or Ctrl-D to leave)", file=err)
                continue
            if not line.strip():
                continue
            try:
                if line.startswith("/") and "\n" not in line:
                    if _command(session, line.strip(), err) == "quit":
                        return 0
                    continue
                _stream(session.chat, session.send(line), sys.stdout)
                if args.stats:
                    print(_stats_line(session.chat), file=err)
            except ParleyError as e:
                print(f"error: {e}", file=err)
    finally:
        reader.save()
        parley.close()


def _summary(chat: Chat) -> str:
    conv = chat.conversation
    return f"{conv.title or 'untitled'}, {conv.message_count} messages"


def _show_greeting(chat: Chat) -> None:
    msgs = chat.messages
    if len(msgs) and msgs[-1]["role"] == "assistant":
        print(msgs[-1]["content"])


def _command(session: Session, line: str, err) -> str | None:
    chat = session.chat
    cmd, _, rest = line.partition(" ")
    rest = rest.strip()
    if cmd in ("/quit", "/exit"):
        return "quit"
    if cmd == "/help":
        print(HELP, file=err)
    elif cmd in ("/new", "/clear"):
        chat.clear()
        print(f"(new conversation {chat.id}; the previous one is kept)", file=err)
    elif cmd == "/system":
        if rest:
            chat.set_system(rest)
            print("(system prompt set; it applies from the next message)", file=err)
        else:
            system = chat.conversation.system
            print(f"system prompt: {system}" if system else "(no system prompt; /system TEXT sets one)", file=err)
    elif cmd == "/title":
        if rest:
            chat.set_title(rest)
        print(f"title: {chat.conversation.title or '(none)'}", file=err)
    elif cmd == "/stats":
        print(_stats_line(chat) if chat.last else "(no reply yet)", file=err)
        print(f"[sampling: {describe(chat.params)}]", file=err)
    elif cmd == "/retry":
        _stream(chat, chat.retry(speaker=session.speaker), sys.stdout)
        if session.args.stats:
            print(_stats_line(chat), file=err)
    elif cmd == "/back":
        n = int(rest) if rest.isdigit() else 2
        kept = chat.back(n)
        print(f"(back {n} messages; {kept} kept; what you say next starts a new branch)", file=err)
    elif cmd == "/branches":
        for i, (_leaf, preview, current) in enumerate(chat.branches(), 1):
            print(f"{'*' if current else ' '} {i}. {preview}", file=err)
        print("(/branch K switches)", file=err)
    elif cmd == "/branch":
        branches = chat.branches()
        if not rest.isdigit() or not 1 <= int(rest) <= len(branches):
            print(f"/branch takes a number from 1 to {len(branches)} (/branches lists them)", file=err)
        else:
            chat.switch(branches[int(rest) - 1][0])
            print(f"(on branch {rest})", file=err)
    elif cmd == "/skill":
        _skill(session, rest, err)
    elif cmd == "/as":
        session.speaker = rest or None
        print(f"(next: {rest})" if rest else "(parley picks who answers)", file=err)
    else:
        print(f"unknown command {cmd}; /help lists them", file=err)
    return None


def _skill(session: Session, rest: str, err) -> None:
    skills = session.parley.skills
    if not rest:
        print(skills.describe(), file=err)
        print(f"(in use: {session.skill or 'none'})", file=err)
        return
    if rest == "off":
        session.skill, session.skill_params = None, {}
        print("(no skill)", file=err)
        return
    name, *items = rest.split()
    params = _params(items)
    skills.get(name).apply("x", params)  # errors name what is missing
    session.skill, session.skill_params = name, params
    print(f"(skill {name} wraps your next messages; /skill off stops it)", file=err)
