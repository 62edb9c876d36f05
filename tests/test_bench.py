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
