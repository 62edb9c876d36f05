"""Command-line options shared by the subcommands: which model and how to run it, and sampling flags."""

from __future__ import annotations

import argparse

from parley.sampling import CHAT_PRESET, SamplingParams, describe
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
    g.add_argument("--gpu-layers", type=int, default=None, metavar="N",
                   help="model layers on the GPU (default: every layer when llama.cpp was built with a GPU "
                        "backend, else 0; on a CPU-only build the model runs on the CPU and says so)")
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
        "gpu_layers": args.gpu_layers,
    }


def add_sampling_defaults(g, base: SamplingParams) -> None:
    """The sampler flags whose defaults come from `base` (a preset of parley.sampling): `parley chat` adds them
    over the chat preset, `parley serve` over the HTTP APIs' neutral defaults."""
    g.add_argument("--temperature", "--temp", type=float, default=base.temperature,
                   help=f"0 = greedy (default {base.temperature:g})")
    g.add_argument("--top-p", type=float, default=base.top_p, help=f"1 = off (default {base.top_p:g})")
    g.add_argument("--top-k", type=int, default=base.top_k, help=f"0 = off (default {base.top_k})")
    g.add_argument("--min-p", type=float, default=base.min_p, help=f"0 = off (default {base.min_p:g})")
    g.add_argument("--repeat-penalty", type=float, default=base.repeat_penalty,
                   help=f"1 = off (default {base.repeat_penalty:g})")
    g.add_argument("--presence-penalty", type=float, default=base.presence_penalty,
                   help=f"0 = off (default {base.presence_penalty:g})")
    g.add_argument("--frequency-penalty", type=float, default=base.frequency_penalty,
                   help=f"0 = off (default {base.frequency_penalty:g})")


def sampling_defaults(args: argparse.Namespace) -> dict:
    return {
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "min_p": args.min_p,
        "repeat_penalty": args.repeat_penalty,
        "presence_penalty": args.presence_penalty,
        "frequency_penalty": args.frequency_penalty,
    }


def add_sampling_options(p: argparse.ArgumentParser) -> None:
    d = CHAT_PRESET
    g = p.add_argument_group("sampling", f"defaults: the {describe(d)}")
    add_sampling_defaults(g, d)
    g.add_argument("--seed", type=int, default=None, help="for reproducible sampling (default: random)")
    g.add_argument("-n", "--max-tokens", type=int, default=d.max_tokens, help=f"default {d.max_tokens}")
    g.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="stop when the reply would contain TEXT (repeatable; TEXT is never printed)")
    g.add_argument("--ignore-eos", action="store_true",
                   help="do not end at the model's end-of-turn token (only --max-tokens or --stop end a reply)")


def sampling_kwargs(args: argparse.Namespace) -> dict:
    return {
        **sampling_defaults(args),
        "seed": args.seed,
        "max_tokens": args.max_tokens,
        "stop": tuple(args.stop),
        "ignore_eos": args.ignore_eos,
    }
