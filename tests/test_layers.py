"""The one door: the edges (cli/, server/, web/) import parley.api and a few leaf modules, never the stages below
it (chat, store, scheduler, engine, text, documents). Read from the source, so a new reach-through fails here."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "parley"
EDGES = ("cli", "server", "web")
LEAVES = {"parley", "parley.api", "parley.config", "parley.errors", "parley.sampling", "parley.settings"}
ALSO = {"cli": {"parley.server", "parley.bench"}, "server": {"parley.web"}, "web": set()}  # an edge may start another


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m == "parley" or m.startswith("parley.")}


def allowed(module: str, edge: str) -> bool:
    if module in LEAVES or module.startswith(f"parley.{edge}"):
        return True
    return any(module == other or module.startswith(other + ".") for other in ALSO[edge])


def test_edges_call_only_the_facade():
    bad = []
    for edge in EDGES:
        for path in sorted((SRC / edge).glob("*.py")) if (SRC / edge).is_dir() else []:
            bad += [f"{path.relative_to(SRC)} imports {m}" for m in sorted(imports(path)) if not allowed(m, edge)]
    assert not bad, "\n".join(bad)


def test_the_check_sees_a_reach_through(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from parley.scheduler.scheduler import Scheduler\nfrom parley.api import Parley\n")
    assert [m for m in imports(probe) if not allowed(m, "server")] == ["parley.scheduler.scheduler"]
