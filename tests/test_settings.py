"""Settings assembled from the layers' sections: flat names routed to the section that declares them, one
declaration per flag, and the machinery (parley.config) a leaf that the layers import without a cycle."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from parley.config import add_flags, build, from_args, leaves, section, setting
from parley.documents.settings import DocumentSettings
from parley.engine.settings import EngineSettings
from parley.errors import InvalidRequest
from parley.scheduler.settings import SchedulerSettings
from parley.settings import NAMES, Settings
from tests.test_layers import SRC, imports


def test_flat_names_reach_their_sections():
    s = Settings.from_env(kv_size=4096, deterministic=True, max_running=2, chat_format="chatml", docs_max_mb=10)
    assert s.engine == EngineSettings(kv_size=4096, deterministic=True)
    assert s.scheduler == SchedulerSettings(max_running=2)
    assert s.template.chat_format == "chatml"
    assert s.documents.limits.max_total_bytes == 10 << 20 and s.documents.limits.max_file_bytes == 10 << 20
    t = s.replace(threads=1, prefill_chunk=64)
    assert (t.engine.threads, t.engine.kv_size, t.scheduler.prefill_chunk, t.scheduler.max_running) == (1, 4096, 64, 2)
    assert s.engine.threads == 0  # frozen: replace made a copy
    assert s.replace(engine=EngineSettings(threads=3)).engine.threads == 3  # a section given whole


def test_an_unknown_name_is_refused_listing_the_known_ones():
    with pytest.raises(TypeError, match=r"unknown setting .kv_sise.; known: model, .*threads, .*kv_size"):
        Settings().replace(kv_sise=1)
    with pytest.raises(TypeError, match="kv_sise"):
        Settings.from_env(kv_sise=1)


def test_checks_name_the_flag_and_live_with_both_fields():
    with pytest.raises(InvalidRequest, match=r"kv_size \(--kv-size\) must be at least 64"):
        Settings().replace(kv_size=32)
    with pytest.raises(InvalidRequest, match=r"batch_tokens \(--batch-tokens\) must be at least max_running"):
        SchedulerSettings(batch_tokens=4, max_running=8)
    with pytest.raises(InvalidRequest, match=r"docs_max_files \(--docs-max-files\) must be an integer >= 1"):
        DocumentSettings(docs_max_files=0)
    with pytest.raises(InvalidRequest, match="known: model, chatml"):
        Settings().replace(chat_format="nope")
    with pytest.raises(TypeError, match="Settings.engine must be of type EngineSettings"):
        Settings(engine=SchedulerSettings())


def test_names_are_unique_across_sections():
    assert len(NAMES) == len(set(NAMES)) and "kv_size" in NAMES and "home" in NAMES

    @dataclasses.dataclass(frozen=True)
    class Other:
        threads: int = setting(1, "--other-threads", help="a second 'threads'")

    @dataclasses.dataclass(frozen=True)
    class Clash:
        engine: EngineSettings = section(EngineSettings)
        other: Other = section(Other)

    with pytest.raises(TypeError, match="twice: threads"):
        leaves(Clash)


def test_flags_walk_the_sections():
    p = argparse.ArgumentParser()
    add_flags(p, Settings)
    args = p.parse_args(["--kv-size", "1024", "--max-running", "3", "--docs-max-files", "7", "--home", "/tmp/h"])
    s = from_args(args, Settings)
    assert (s.engine.kv_size, s.scheduler.max_running, s.documents.docs_max_files, s.home) == (1024, 3, 7, "/tmp/h")
    assert build(Settings, ctx_size=100).scheduler.ctx_size == 100
    only = argparse.ArgumentParser()
    add_flags(only, Settings, only=("home",))
    assert [a.dest for a in only._actions if a.dest != "help"] == ["home"]


def test_home_is_declared_once_and_each_subcommand_shows_its_help(tmp_path, capsys):
    from parley.cli.main import build_parser, main

    [home] = [f for _, f in leaves(Settings) if f.name == "home"]
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("conversations", "personas", "skills"):
        [action] = [a for a in sub.choices[name]._actions if "--home" in a.option_strings]
        assert action.help == home.metadata["help"] and action.metavar == "DIR"
    assert sub.choices["conversations"].parse_args(["list"]).home is None  # $PARLEY_HOME, in the store's owner
    assert main(["conversations", "--home", str(tmp_path / "h"), "list"]) == 0
    assert "no conversations yet" in capsys.readouterr().out
    assert (tmp_path / "h" / "parley.db").exists()


def test_the_layers_do_not_import_the_assembled_settings():
    """settings.py sits above the layers (it imports their sections); config.py is a leaf."""
    below = [p for d in ("engine", "scheduler", "documents", "text", "chat", "store", "models", "upstream")
             for p in (SRC / d).glob("*.py")]
    bad = [str(p.relative_to(SRC)) for p in below if "parley.settings" in imports(p)]
    assert not bad, bad
    assert imports(SRC / "config.py") == {"parley.errors"}
    assert imports(SRC / "settings.py") == {"parley", "parley.config", "parley.paths", "parley.engine.settings",
                                            "parley.scheduler.settings", "parley.documents.settings",
                                            "parley.text.settings", "parley.models.settings",
                                            "parley.upstream.settings", "parley.cluster.settings"}  # no server/
