"""Settings: every knob of a loaded parley, with one name, one default and one home.

    parley.load(kv_size=8192, deterministic=True)     # the Python API takes the field names
    parley chat --kv-size 8192 --deterministic        # the CLI flags are generated from the same fields
    Settings.from_env().replace(threads=1)            # environment fallbacks: PARLEY_MODEL, PARLEY_HOME

Each field carries its flag, its help and its range (`setting(...)`), so `add_flags()` builds the argparse
options, `from_args()` reads them back, and `check()` refuses a bad value naming the field and its flag. The
engine and the scheduler read their numbers from here; nothing else holds a default for them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parley.errors import InvalidRequest

MiB = 1 << 20


def setting(default: Any, *flags: str, help: str, least: float | None = None, metavar: str | None = None,
            choices: tuple | None = None, env: str | None = None, hidden: bool = False) -> Any:
    """A dataclass field with what the CLI and the checks need to know about it."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("settings defaults are immutable (use a tuple)")
    return field(default=default, metadata={"flags": flags, "help": help, "least": least, "metavar": metavar,
                                            "choices": choices, "env": env, "hidden": hidden})


def _formats() -> tuple[str, ...]:
    from parley.text.template import KNOWN_FORMATS
    return KNOWN_FORMATS


@dataclass(frozen=True, slots=True)
class Settings:
    model: str | None = setting(
        None, "-m", "--model", metavar="PATH", env="PARLEY_MODEL",
        help="a GGUF model file (default: $PARLEY_MODEL, else the embedded SmolLM2-135M-Instruct)")
    chat_format: str | None = setting(
        None, "--chat-format", metavar="NAME",
        help="chat template: 'model' (the file's own, default) or a named format: chatml, llama2, llama3, gemma, "
             "user-assistant, raw")
    threads: int = setting(0, "-t", "--threads", least=0,
                           help="CPU threads (default 0: every core, one fewer while another process competes)")
    gpu_layers: int | None = setting(
        None, "--gpu-layers", metavar="N", least=0,
        help="model layers on the GPU (default: every layer when llama.cpp was built with a GPU backend, else 0; "
             "on a CPU-only build the model runs on the CPU and says so)")
    kv_size: int = setting(16384, "--kv-size", metavar="TOKENS", least=16,
                           help="KV cache cells shared by every conversation (default 16384)")
    ctx_size: int = setting(0, "-c", "--ctx-size", metavar="TOKENS", least=0,
                            help="max tokens per conversation (default 0: the model's training context, at most "
                                 "--kv-size)")
    max_running: int = setting(8, "--max-running", metavar="N", least=1,
                               help="sequences generating at once (default 8)")
    batch_tokens: int = setting(512, "--batch-tokens", metavar="N", least=1,
                                help="most tokens per decode call, at least --max-running (default 512)")
    prefill_chunk: int = setting(128, "--prefill-chunk", metavar="N", least=1,
                                 help="prompt tokens read per step while other replies stream: lower keeps them "
                                      "smoother, higher reads long prompts sooner (default 128)")
    kv_idle_cells: int = setting(2048, "--kv-idle-cells", metavar="TOKENS", least=-1,
                                 help="while anyone is generating, idle conversations beyond this many KV cells "
                                      "move to the RAM tier, since every decode scans every cell in use (default "
                                      "2048; -1 keeps them)")
    ram_cache_mb: int = setting(1024, "--ram-cache-mb", metavar="MB", least=0,
                                help="host RAM for KV states moved out of the context (default 1024)")
    disk_cache_mb: int = setting(8192, "--disk-cache-mb", metavar="MB", least=0,
                                 help="disk for KV states under $PARLEY_HOME/kv, kept across restarts (default "
                                      "8192; 0 turns the disk tier off)")
    deterministic: bool = setting(False, "--deterministic",
                                  help="batch-invariant results: the same tokens alone or beside others, cached or "
                                       "not (prompts read about 25%% slower)")
    home: str | None = setting(None, "--home", metavar="DIR", env="PARLEY_HOME",
                               help="data directory: conversations (parley.db), KV cache, personas, skills "
                                    "(default: $PARLEY_HOME, else ~/.local/share/parley)")
    docs_max_mb: int = setting(200, "--docs-max-mb", metavar="MB", least=1,
                               help="largest document parley loads, all its files together (default 200; one "
                                    "file at most 50)")
    docs_max_files: int = setting(5000, "--docs-max-files", metavar="N", least=1,
                                  help="most files read from one directory or archive (default 5000)")
    max_waiting: int = setting(256, "--max-waiting", metavar="N", least=1,
                               help="requests queued for a sequence before new ones are refused (429; default 256)")
    store: bool = setting(True, hidden=True,
                          help="keep conversations in $PARLEY_HOME/parley.db (False: in memory, gone at exit)")
    n_seq_max: int = setting(64, least=1, hidden=True, help="engine sequences (live KV slots) at once")

    def __post_init__(self) -> None:
        check(self)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, **changes: Any) -> Settings:
        """Defaults, then environment fallbacks (PARLEY_MODEL, PARLEY_HOME), then `changes`."""
        return from_args(argparse.Namespace(), cls, **changes)

    @property
    def data_dir(self) -> Path:
        from parley.paths import data_dir
        return Path(self.home).expanduser() if self.home else data_dir()

    @property
    def document_limits(self):
        from parley.documents import DocumentLimits
        total = self.docs_max_mb * MiB
        return DocumentLimits(max_file_bytes=min(50 * MiB, total), max_total_bytes=total,
                              max_files=self.docs_max_files)

    @property
    def ram_cache_bytes(self) -> int:
        return self.ram_cache_mb * MiB

    @property
    def disk_cache_bytes(self) -> int:
        return self.disk_cache_mb * MiB


def flag(name: str, cls=None) -> str:
    """The command-line spelling of a setting, for error messages."""
    f = {f.name: f for f in dataclasses.fields(cls or Settings)}.get(name)
    flags = f.metadata.get("flags") if f is not None else None
    return flags[-1] if flags else name


def check(s) -> None:
    """Every field's lower bound (`least`), for any settings dataclass; then Settings' own rules."""
    for f in dataclasses.fields(s):
        least = f.metadata.get("least")
        value = getattr(s, f.name)
        if least is None or (value is None and f.default is None):
            continue
        number = (int, float) if f.type.startswith("float") else int
        if not isinstance(value, number) or isinstance(value, bool) or not value >= least:
            kind = "a number" if number is not int else "an integer"
            raise InvalidRequest(f"{f.name} ({flag(f.name, type(s))}) must be {kind} >= {least}, got {value!r}",
                                 param=f.name)
    if not isinstance(s, Settings):
        return
    if s.batch_tokens < s.max_running:
        raise InvalidRequest(f"batch_tokens (--batch-tokens) must be at least max_running (--max-running, "
                             f"{s.max_running}): one token per running reply each step; got {s.batch_tokens}",
                             param="batch_tokens")
    if s.kv_size < s.n_seq_max:
        raise InvalidRequest(f"kv_size (--kv-size) must be at least {s.n_seq_max} (one cell per engine sequence), "
                             f"got {s.kv_size}", param="kv_size")
    if s.chat_format is not None and s.chat_format not in _formats():
        raise InvalidRequest(f"unknown chat_format (--chat-format) {s.chat_format!r}; known: "
                             f"{', '.join(_formats())}", param="chat_format")


# ---- the command line --------------------------------------------------------------------------------------
_KINDS = {"int": int, "int | None": int, "float": float, "float | None": float, "str": str, "str | None": str}


def add_flags(parser, cls=None, title: str | None = None, *, skip: tuple[str, ...] = ()) -> None:
    """Add the flags of a settings dataclass (default: Settings) to `parser`, in a group named `title`. A flag
    that is not given leaves its field out of the namespace, so from_args() keeps the dataclass default (and
    the environment fallback)."""
    cls = cls or Settings
    g = parser.add_argument_group(title) if title else parser
    for f in dataclasses.fields(cls):
        md = f.metadata
        if md.get("hidden") or not md.get("flags") or f.name in skip:
            continue
        common = {"dest": f.name, "default": argparse.SUPPRESS, "help": md["help"]}
        if f.type == "bool":
            g.add_argument(*md["flags"], action="store_true", **common)
        elif f.type.startswith("tuple"):
            g.add_argument(*md["flags"], action="append", metavar=md.get("metavar"), **common)
        else:
            g.add_argument(*md["flags"], type=_KINDS[f.type], metavar=md.get("metavar"), choices=md.get("choices"),
                           **common)


def from_args(args: argparse.Namespace, cls=None, **changes: Any):
    """A settings dataclass (default: Settings) from parsed flags: flags given, then environment fallbacks,
    then the defaults."""
    cls = cls or Settings
    given = {}
    for f in dataclasses.fields(cls):
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            given[f.name] = tuple(value) if f.type.startswith("tuple") else value
    env = {f.name: os.environ[f.metadata["env"]] for f in dataclasses.fields(cls)
           if f.metadata.get("env") and os.environ.get(f.metadata["env"])}
    return cls(**{**env, **given, **changes})


# ---- documentation -----------------------------------------------------------------------------------------
def markdown_table() -> str:
    """The README's settings table, generated from the settings dataclasses and the sampling presets
    (tests/test_readme.py keeps the README equal to it, so the two never drift)."""
    from parley.sampling import CHAT_PRESET, NEUTRAL, describe
    from parley.server.settings import ServerSettings

    rows = ["| flag | what |", "| --- | --- |"]
    for cls, where in ((Settings, ""), (ServerSettings, " (serve)")):
        for f in dataclasses.fields(cls):
            md = f.metadata
            if md.get("hidden") or not md.get("flags"):
                continue
            meta = md.get("metavar")
            flag = ", ".join(md["flags"]) + (f" {meta}" if meta and f.type != "bool" else "")
            env = f" (env `{md['env']}`)" if md.get("env") else ""
            text = md["help"].replace("%%", "%").replace("|", "/")
            rows.append(f"| `{flag}`{where} | {text}{env} |")
    rows.append("| `--temperature`, `--top-p`, `--top-k`, `--min-p`, `--repeat-penalty`, `--presence-penalty`, "
                f"`--frequency-penalty` | sampling defaults: for `parley chat` the {describe(CHAT_PRESET)}; for "
                f"`parley serve` the base of every HTTP request that leaves a field out, the {describe(NEUTRAL)}, "
                "so a greedy request gives the same tokens on every route |")
    return "\n".join(rows)
