"""Command-line options shared by the subcommands: which model and how to run it, the data directory, and
sampling flags."""

from __future__ import annotations

import argparse

from parley.config import add_flags, from_args
from parley.sampling import CHAT_PRESET, SamplingParams, describe
from parley.settings import Settings


def add_model_options(p: argparse.ArgumentParser) -> None:
    """The model and engine flags, generated from parley.settings.Settings and its sections (one name, one
    default, one help)."""
    add_flags(p, Settings, "model")


def add_home_option(p: argparse.ArgumentParser) -> None:
    """--home alone, for the subcommands that load no model: the Settings field's flag and help (declared once
    there). Not given, `args.home` is None and the store's owner falls back to $PARLEY_HOME."""
    add_flags(p, Settings, only=("home",))
    p.set_defaults(home=None)


def add_store_options(p: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    """--home and --db-url, for the subcommands that read the store without a model; a verb's subparser takes
    them with defaults=False, so a flag given before the verb is not overwritten by the verb's default."""
    add_flags(p, Settings, only=("home", "db_url"))
    if defaults:
        p.set_defaults(home=None, db_url=None)


def load_settings(args: argparse.Namespace) -> Settings:
    """Settings from the flags given (the others: $PARLEY_MODEL / $PARLEY_HOME, then the defaults)."""
    return from_args(args, Settings)


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
