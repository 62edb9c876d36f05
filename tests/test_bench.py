"""`parley bench`: the --quick --json output is one well-formed document (sizes patched down to a few tokens).
No timing is asserted anywhere: speeds belong to the benchmark's own report."""

from __future__ import annotations

import json

import pytest

from parley.bench import decode
from parley.bench.common import Row
from parley.cli.main import main


def test_targets_are_ratios_oriented_so_that_higher_is_better():
    assert Row("tok/s", "tok/s", 95.0, "b", 100.0, target=0.95).met is True
    assert Row("ttft", "s", 0.5, "b", 4.0, False, target=10).met is False  # 8x faster, 10x wanted
    assert Row("ttft", "s", 1.02, "b", 1.0, False, target=1, slack=0.05).met is True
    assert Row("agg", "tok/s", 1.0, "b", None, target=1, strict=True).met is False
    assert Row("info", "s", 1.0, "b", 2.0, False).met is None


@pytest.mark.model
def test_decode_quick_json_is_well_formed(monkeypatch, capsys):
    monkeypatch.setattr(decode, "QUICK", decode.Sizes(prompt=16, gen=4, reps=1))
    assert main(["bench", "decode", "--quick", "--json", "--threads", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {"command", "machine", "model", "scenarios", "summary"} <= doc.keys()
    assert doc["command"] == "parley bench decode --quick --json --threads 1"
    assert doc["machine"]["threads"] == 1
    res = doc["scenarios"]["decode"]
    assert res["error"] is None and res["config"]["prompt_tokens"] == 16
    for row in res["rows"]:
        assert {"metric", "parley", "baseline", "baseline_value", "ratio", "target", "met"} <= row.keys()
    assert {r["metric"] for r in res["rows"] if r["target"]} == {"decode tok/s, engine loop", "decode tok/s, scheduler"}
    assert doc["summary"]["targets"] == 2


@pytest.mark.model
def test_resume_quick_json_is_well_formed(monkeypatch, capsys):
    from parley.bench import resume

    # the worker processes get their sizes through the spec file, so patching QUICK here reaches them
    monkeypatch.setattr(resume, "QUICK", resume.Sizes(conversations=2, turns=2, persona=40, max_tokens=2,
                                                      store_turns=3))
    assert main(["bench", "resume", "--quick", "--json", "--threads", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    res = doc["scenarios"]["resume"]
    assert res["error"] is None and res["config"]["conversations"] == 2
    assert len(res["data"]["turns"]) == 2
    for turn in res["data"]["turns"]:
        assert {"parley", "naive", "prompt_tokens", "tokens_identical", "held_identical"} <= turn.keys()
        assert turn["naive"]["cached_tokens"] == 0
    assert {"cache_sources", "cached_tokens", "prompt_tokens"} <= res["data"]["resumed"].keys()
    store = res["data"]["store"]
    assert store["turns_each"] == 3
    assert all({"median_ms", "p95_ms", "median_ms_by_call"} <= store[way].keys() for way in ("opened", "kept_open"))
    assert [r["target"] is not None for r in res["rows"]] == [True, False, True, False, False, False]
    assert doc["summary"]["targets"] == 2


@pytest.mark.model
def test_docqa_quick_json_is_well_formed(monkeypatch, capsys):
    from parley.bench import docqa

    # the worker processes get their sizes through the spec file, so patching QUICK here reaches them
    monkeypatch.setattr(docqa, "QUICK", docqa.Sizes(doc_tokens=120, questions=2, side_by_side=2, max_tokens=2,
                                                    reps=1, naive_first=False))
    assert main(["bench", "docqa", "--quick", "--json", "--threads", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    res = doc["scenarios"]["docqa"]
    assert res["error"] is None and res["config"]["doc_tokens"] == 120
    data = res["data"]
    assert [q["number"] for q in data["questions"]] == [1, 2, 3, 4]
    for q in data["questions"]:
        assert {"parley", "llama", "prompt_tokens", "prefix_tokens", "answer"} <= q.keys()
        assert q["parley"]["generated"] == 2
    assert all(q["naive"]["cached_tokens"] == 0 for q in data["questions"][1:])
    assert {"cache_source", "cached_tokens", "prefilled_tokens"} <= data["warm_after_restart"].keys()
    assert len(data["side_by_side"]["sequential"]) == len(data["side_by_side"]["side_by_side"]) == 1
    assert {"cells_before", "cells_peak", "prefix_tokens", "expected_shared"} <= data["kv"].keys()
    assert [r["target"] is not None for r in res["rows"]] == [False, True, False, True, False, True, False, True,
                                                              True, False]
    assert doc["summary"]["targets"] == 5


@pytest.mark.model
def test_constrained_quick_json_is_well_formed(monkeypatch, capsys):
    from parley.bench import constrained

    monkeypatch.setattr(constrained, "QUICK", constrained.Sizes(schemas=2, reps=1, max_json=24, n_prompt=40,
                                                                n_gen=3, n_reps=1, rounds=2))
    assert main(["bench", "constrained", "--quick", "--json", "--threads", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    res = doc["scenarios"]["constrained"]
    assert res["error"] is None and res["config"]["tool_rounds"] == 2
    data = res["data"]
    for s in data["schemas"]:   # the plain side generates exactly the constrained reply's tokens
        assert [t["generated"] for t in s["plain"]] == [t["generated"] for t in s["constrained"]] == [s["tokens"]]
    assert {"first_s", "new_schema_s"} <= data["compile"].keys()
    assert set(data["n4"]["runs"]) == {"samples", "sequential", "rereading", "concurrent"}
    for runs in data["n4"]["runs"].values():
        assert runs[0]["tokens"] == 12 and runs[0]["prompt_tokens"] == 40
    assert sum(data["n4"]["runs"]["rereading"][0]["prefilled_tokens"]) == 4 * 40
    rounds = data["tool_loop"]["rounds"]
    assert [r["round"] for r in rounds] == [1, 2] and all(r["call"]["name"] == "get_weather" for r in rounds)
    assert rounds[1]["cached_tokens"] > 0
    assert [r["target"] is not None for r in res["rows"]] == [True, False, False, True, True, False, True, False]
    assert doc["summary"]["targets"] == 4


def test_llama_server_is_built_per_version_and_cpu_flags(monkeypatch, tmp_path):
    from parley.bench import llama_server_build as B

    monkeypatch.setenv("PARLEY_LLAMA_SERVER_DIR", str(tmp_path))
    flags = B.cpu_flags()
    assert flags[0] == "-DGGML_NATIVE=OFF" and not any(f.startswith("-DLLAVA") for f in flags)
    here = B.build_dir(flags)
    assert here.parent == tmp_path and here.name.startswith(B.version() + "-")
    assert B.build_dir([*flags, "-DGGML_CUDA=ON"]) != here             # another flag set: another build
    assert B.binary() is None                                           # nothing built in this directory
    here.mkdir()
    (here / "llama-server").write_text("#!/bin/sh\n")
    assert B.binary() is None                                           # not executable: not a build
    (here / "llama-server").chmod(0o755)
    assert B.binary() == here / "llama-server"


@pytest.mark.model
def test_peer_quick_json_is_well_formed(monkeypatch, capsys):
    """Against the real llama-server when it is built here (`python -m parley.bench.llama_server_build`)."""
    from parley.bench import llama_server_build, peer

    if llama_server_build.binary() is None:
        pytest.skip("llama-server is not built on this machine: python -m parley.bench.llama_server_build")
    monkeypatch.setattr(peer, "QUICK", peer.Sizes(stream_tokens=8, stream_reps=1, cold_tokens=60, cold_reps=1,
                                                  turns=2, reply_tokens=4, conversations=2, rounds=2,
                                                  persona_tokens=40, clients=2, client_tokens=4, burst_reps=1,
                                                  many_clients=3, many_tokens=2, doc_tokens=60, doc_questions=2,
                                                  card_tokens=40, card_turns=2))
    assert main(["bench", "peer", "--quick", "--json", "--threads", "1"]) == 0
    res = json.loads(capsys.readouterr().out)["scenarios"]["peer"]
    assert res["error"] is None and res["config"]["llama_server_flags"].startswith("-np 4")
    for side in ("parley", "llama_server"):
        data = res["data"][side]
        assert len(data["returning conversation"]) == 2 and data["after a restart"][0]["tokens"] > 0
        assert all(x["tokens"] > 0 for x in data["one stream, fresh"] + data["one stream, after"])
        assert len(data["document, later questions"]) == 1 and len(data["persona chat"]) == 1
    assert [r["baseline"] for r in res["rows"]] == ["llama-server"] * 11
    assert [r["metric"] for r in res["rows"] if not r["target"]] == ["aggregate decode tok/s, 32 clients"]


@pytest.mark.model
def test_speculate_quick_json_is_well_formed(monkeypatch, capsys):
    from parley.bench import speculate

    monkeypatch.setattr(speculate, "QUICK", speculate.Sizes(gen=8, reps=1, models=("Q4_1",)))
    assert main(["bench", "speculate", "--quick", "--json", "--threads", "1"]) == 0
    res = json.loads(capsys.readouterr().out)["scenarios"]["speculate"]
    assert res["error"] is None
    assert [r["metric"] for r in res["rows"]] == [
        f"decode tok/s, {t}, drafts from the context (Q4_1)" for t in ("refactor", "quote", "story", "chat")]
    assert set(res["data"]["same_tokens"]) == {f"Q4_1/{t}" for t in ("refactor", "quote", "story", "chat")}
    assert {"drafted_tokens", "accepted_tokens"} <= res["data"]["drafts"]["Q4_1"].keys()
