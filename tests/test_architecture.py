"""The import rules of ARCHITECTURE.md, read from the source with `ast` (nothing is imported).

A "unit" is a subpackage of `powerflow` (`control`, `api`, ...) or a top-level module
(`hostrun`, `cli`, ...); `pfproto` and `pfnode` are units of their own. Imports inside a
function count as much as those at the top: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import graphlib
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOST = ROOT / "host" / "powerflow"
NODE_PACKAGES = {"pfproto": ROOT / "protocol" / "pfproto", "pfnode": ROOT / "firmware" / "pfnode"}

# what a unit may import of PowerFlow, for the units that must stay at the bottom
ALLOWED = {
    "model": {"tomlfile"},
    "tomlfile": set(),
    "forecast": {"model", "tomlfile"},  # the array types; file errors in one wording
    "grid": {"model", "tomlfile"},
    # control: the rack description, the predictor it feeds the allocator from, and the
    # protocol's numbers (modes, fault bits); nothing of the rack's I/O
    "control": {"model", "forecast", "pfproto"},
    "protocol": {"pfproto"},
    "link": {"protocol", "pfproto"},
    "pfproto": set(),
    "pfnode": {"pfproto"},
}
API_IMPORTERS = {"hostrun"}  # the host's entry point builds the app; nothing else sees api


def _unit(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] in NODE_PACKAGES:
        return parts[0]
    if parts[0] == "powerflow" and len(parts) > 1:
        return parts[1]
    return None


def _modules() -> dict[str, Path]:
    out = {}
    for f in HOST.rglob("*.py"):
        out[".".join(("powerflow",) + f.relative_to(HOST).with_suffix("").parts)] = f
    for name, base in NODE_PACKAGES.items():
        for f in base.rglob("*.py"):
            out[".".join((name,) + f.relative_to(base).with_suffix("").parts)] = f
    return {m.removesuffix(".__init__"): f for m, f in out.items()}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from powerflow import api` imports the unit `api`
            found.update(f"{node.module}.{a.name}" for a in node.names if node.module == "powerflow")
    return found


def unit_graph() -> dict[str, dict[str, set[str]]]:
    """unit -> {imported unit -> the modules of `unit` that import it}."""
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for module, path in _modules().items():
        src = _unit(module)
        if src is None:
            continue
        graph[src]  # a unit that imports nothing is still in the graph
        for name in _imports(path):
            dst = _unit(name)
            if dst is not None and dst != src:
                graph[src][dst].add(module)
    return graph


def test_the_graph_is_read() -> None:
    """The walk sees what is plainly there (so the rules below are not vacuous)."""
    g = unit_graph()
    assert "model" in g["control"] and "api" in g["hostrun"] and "pfproto" in g["protocol"]
    assert {"control", "api", "emulator", "adapters", "scenario", "model"} <= set(g)


def test_bottom_units_import_only_what_they_may() -> None:
    g = unit_graph()
    wrong = {(src, dst, tuple(sorted(mods))) for src, allowed in ALLOWED.items()
             for dst, mods in g.get(src, {}).items() if dst not in allowed}
    assert not wrong, f"imports against ARCHITECTURE.md (unit, imports, from): {sorted(wrong)}"


def test_nothing_imports_api_but_the_entry_point() -> None:
    g = unit_graph()
    wrong = {src: sorted(deps["api"]) for src, deps in g.items()
             if "api" in deps and src not in API_IMPORTERS}
    assert not wrong, wrong


def test_the_runtime_does_not_import_developer_tools() -> None:
    g = unit_graph()
    wrong = {src: sorted(deps["tools"]) for src, deps in g.items() if "tools" in deps}
    assert not wrong, wrong


def test_no_import_cycles_between_units() -> None:
    g = unit_graph()
    sorter = graphlib.TopologicalSorter({src: set(deps) for src, deps in g.items()})
    try:
        sorter.prepare()
    except graphlib.CycleError as e:
        raise AssertionError(f"import cycle between units: {' -> '.join(e.args[1])}") from None


def test_no_code_finds_files_by_climbing_the_checkout() -> None:
    """Installed, there is no checkout above the package: files are package data."""
    wrong = [str(p.relative_to(ROOT)) for p in HOST.rglob("*.py") if "parents[" in p.read_text()]
    assert not wrong, wrong
