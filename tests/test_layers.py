"""The one door: the edges (cli/, server/, web/) import parley.api and a few leaf modules, never the stages below
it (chat, store, scheduler, engine, text, documents), and reach nothing below the facade through its attributes
(`parley.store`, `.scheduler`, `.engine`, ...). Read from the source, so a new reach-through fails here."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "parley"
EDGES = ("cli", "server", "web")
LEAVES = {"parley", "parley.config", "parley.errors", "parley.sampling", "parley.settings"}
ALSO = {"cli": {"parley.server", "parley.bench"}, "server": {"parley.web"}, "web": set()}  # an edge may start another
# what the facade keeps below its door: the parts it is made of, and its private attributes
BELOW = {"store", "scheduler", "engine", "builder", "template", "prefix_cache", "sessions", "turns", "request"}
PRIVATE = ("_core", "_convs", "_turns", "_docs", "_reg", "_store", "_guard", "_limits")   # the services' insides
EXEMPT = {"cli/bench.py"}   # `parley bench` starts the benchmarks (parley.bench), which measure the parts


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m == "parley" or m.startswith("parley.")}


def allowed(module: str, edge: str) -> bool:
    if module in LEAVES or module.startswith(f"parley.{edge}") or module == "parley.api" \
            or module.startswith("parley.api."):
        return True
    return any(module == other or module.startswith(other + ".") for other in ALSO[edge])


def _tail(node) -> str | None:
    """The last name of an expression like `state.parley` or `parley` (None for anything else)."""
    if isinstance(node, ast.Name):
        return node.id
    return node.attr if isinstance(node, ast.Attribute) else None


def reach_throughs(path: Path) -> list[str]:
    """Attribute reads that go below the facade: a name in BELOW on anything (a Stream's `.request` is the
    scheduler's), a service's private parts, a private attribute of the door itself (`parley._x`,
    `state.parley._x`), and the same spelled as getattr(x, "name")."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):  # (ast.walk's order is not the source order)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr" \
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) \
                and (node.args[1].value in BELOW or node.args[1].value in PRIVATE):
            out.append(f"line {node.lineno}: getattr(..., {node.args[1].value!r})")
        if not isinstance(node, ast.Attribute):
            continue
        if node.attr in BELOW or node.attr in PRIVATE:
            out.append(f"line {node.lineno}: .{node.attr}")
        elif node.attr.startswith("_") and not node.attr.startswith("__") and _tail(node.value) in ("parley", "p"):
            out.append(f"line {node.lineno}: {_tail(node.value)}.{node.attr}")
    return out


def edge_files():
    for edge in EDGES:
        for path in sorted((SRC / edge).glob("*.py")) if (SRC / edge).is_dir() else []:
            yield edge, path


def test_edges_call_only_the_facade():
    bad = []
    for edge, path in edge_files():
        bad += [f"{path.relative_to(SRC)} imports {m}" for m in sorted(imports(path)) if not allowed(m, edge)]
    assert not bad, "\n".join(bad)


def test_edges_reach_nothing_below_the_facade():
    bad = []
    for _edge, path in edge_files():
        rel = str(path.relative_to(SRC))
        if rel not in EXEMPT:
            bad += [f"{rel} {r}" for r in reach_throughs(path)]
    assert not bad, "\n".join(bad)


def test_the_check_sees_a_reach_through(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from parley.scheduler.scheduler import Scheduler\nfrom parley.api import Parley\n"
                     "n = state.parley.conversations.store.count_conversations()\n"
                     "s = parley.scheduler.stats()\nc = parley._core.turns\n"
                     "e = getattr(state.parley, 'engine')\nx = state.parley._secret\nr = stream.request\n")
    assert [m for m in imports(probe) if not allowed(m, "server")] == ["parley.scheduler.scheduler"]
    assert sorted(reach_throughs(probe)) == ["line 3: .store", "line 4: .scheduler", "line 5: ._core",
                                             "line 5: .turns", "line 6: getattr(..., 'engine')",
                                             "line 7: parley._secret", "line 8: .request"]
