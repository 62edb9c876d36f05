"""Command-line options shared by the subcommands: which model and how to run it, and sampling flags."""

from __future__ import annotations

import argparse

from parley.sampling import SamplingParams
from parley.text.template import KNOWN_FORMATS


def add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("-m", "--model", metavar="PATH",
                   help="a GGUF model file (default: $PARLEY_MODEL, else the embedded SmolLM2-135M-Instruct)")
    g.add_argument("--chat-format", metavar="NAME", choices=KNOWN_FORMATS,
                   help=f"chat template: 'model' (the file's own, default) or a named format: "
                        f"{', '.join(KNOWN_FORMATS[1:])}")
    g.add_argument("-t", "--threads", type=int, default=0,
                   help="CPU threads (default 0: every core, one fewer while another process competes)")
    g.add_argument("--kv-size", type=int, default=16384, metavar="TOKENS",
                   help="KV cache budget in tokens, shared by every conversation (default 16384)")
    g.add_argument("-c", "--ctx-size", type=int, default=0, metavar="TOKENS",
                   help="max tokens per conversation (default: the model's training context, at most --kv-size)")
    g.add_argument("--max-running", type=int, default=8, help="sequences generating at once (default 8)")
    g.add_argument("--batch-tokens", type=int, default=512, metavar="N",
                   help="most tokens per decode call: prompt reading speed vs memory (default 512)")
    g.add_argument("--prefill-chunk", type=int, default=128, metavar="N",
                   help="prompt tokens read per step while other replies stream: lower keeps them smoother, "
                        "higher reads long prompts sooner (default 128)")
    g.add_argument("--kv-idle-cells", type=int, default=2048, metavar="TOKENS",
                   help="while anyone is generating, idle conversations beyond this many KV cells move to the RAM "
                        "tier, because every decode attends over every cell in the context (default 2048; -1 = "
                        "keep them all)")
    g.add_argument("--ram-cache-mb", type=int, default=1024, help="host RAM for evicted KV states (default 1024)")
    g.add_argument("--disk-cache-mb", type=int, default=8192,
                   help="disk for KV states under $PARLEY_HOME/kv, kept across restarts (default 8192; 0 = off)")
    g.add_argument("--deterministic", action="store_true",
                   help="bit-identical results whatever else runs in the batch (prompts read ~25%% slower)")


def parley_kwargs(args: argparse.Namespace) -> dict:
    return {
        "chat_format": args.chat_format,
        "threads": args.threads,
        "kv_size": args.kv_size,
        "context_size": args.ctx_size,
        "max_running": args.max_running,
        "batch_tokens": args.batch_tokens,
        "prefill_chunk": args.prefill_chunk,
        "ram_cache_mb": args.ram_cache_mb,
        "idle_kv_cells": args.kv_idle_cells,
        "disk_cache_mb": args.disk_cache_mb,
        "cache_dir": None if args.disk_cache_mb > 0 else False,
        "deterministic": args.deterministic,
    }


def add_sampling_options(p: argparse.ArgumentParser) -> None:
    d = SamplingParams()
    g = p.add_argument_group("sampling")
    g.add_argument("--temperature", "--temp", type=float, default=d.temperature,
                   help=f"0 = greedy (default {d.temperature})")
    g.add_argument("--top-p", type=float, default=d.top_p, help=f"default {d.top_p}")
    g.add_argument("--top-k", type=int, default=d.top_k, help=f"0 = off (default {d.top_k})")
    g.add_argument("--min-p", type=float, default=d.min_p, help=f"default {d.min_p}")
    g.add_argument("--repeat-penalty", type=float, default=d.repeat_penalty, help=f"1 = off (default {d.repeat_penalty})")
    g.add_argument("--presence-penalty", type=float, default=d.presence_penalty)
    g.add_argument("--frequency-penalty", type=float, default=d.frequency_penalty)
    g.add_argument("--seed", type=int, default=None, help="for reproducible sampling (default: random)")
    g.add_argument("-n", "--max-tokens", type=int, default=d.max_tokens, help=f"default {d.max_tokens}")
    g.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="stop when the reply would contain TEXT (repeatable; TEXT is never printed)")
    g.add_argument("--ignore-eos", action="store_true",
                   help="do not end at the model's end-of-turn token (only --max-tokens or --stop end a reply)")


def sampling_kwargs(args: argparse.Namespace) -> dict:
    return {
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "min_p": args.min_p,
        "repeat_penalty": args.repeat_penalty,
        "presence_penalty": args.presence_penalty,
        "frequency_penalty": args.frequency_penalty,
        "seed": args.seed,
        "max_tokens": args.max_tokens,
        "stop": tuple(args.stop),
        "ignore_eos": args.ignore_eos,
    }
