"""Finding a case by name: a built-in, a MATPOWER file, a rack file, or a pandapower net
(`pandapower:NAME` from `pandapower.networks`, or a pandapower JSON file)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from powerflow.grid.case import Case, CaseError, FlexBus
from powerflow.grid.matpower import load_matpower

if TYPE_CHECKING:
    from powerflow.grid.pandapower_io import NetMap

DATA = Path(__file__).resolve().parent / "data"

# The seed paper's IEEE-33 flexible buses: bus -> allowed change, % of base P and Q
IEEE33_FLEX = {9: 35.0, 5: 50.0, 17: 15.0, 21: 20.0, 25: 32.0}


def with_flex(case: Case, spec: dict[int, float], costs: dict[int, float] | None = None) -> Case:
    """Add flexible buses: {bus number: +-percent of its base P and Q}, with optional
    per-bus cost weights {bus number: weight} (default 1)."""
    flex = []
    costs = costs or {}
    for bus, pct in spec.items():
        if not 0 <= pct <= 100:
            raise CaseError(f"{case.name}: flexible bus {bus}: {pct} % is outside 0..100")
        i = case.index_of(bus)
        p, q = case.p_load[i], case.q_load[i]
        k = pct / 100.0
        flex.append(FlexBus(i, min(p * (1 - k), p * (1 + k)), max(p * (1 - k), p * (1 + k)),
                            min(q * (1 - k), q * (1 + k)), max(q * (1 - k), q * (1 + k)), p, q,
                            costs.get(bus, 1.0)))
    return replace(case, flex=tuple(flex)).validate()


def builtin(name: str) -> Case:
    if name == "ieee33":
        return replace(with_flex(load_matpower(DATA / "case33bw.m"), IEEE33_FLEX), name="ieee33")
    raise CaseError(f"unknown built-in case {name!r} (built-ins: ieee33)")


BUILTINS = ("ieee33",)


@dataclass(frozen=True)
class NetSource:
    """A case read from a pandapower net: the net, and where each branch comes from."""

    net: Any
    map: NetMap


def load_case_and_source(spec: str) -> tuple[Case, NetSource | None]:
    """`load_case`, and for a pandapower net the net and its branch map (to report
    pandapower's indices and to write the net back)."""
    if spec.startswith("pandapower:") or Path(spec).suffix == ".json":
        from powerflow.grid.pandapower_io import from_pandapower, load_net

        net = load_net(spec)
        name = spec.split(":", 1)[1] if spec.startswith("pandapower:") else Path(spec).stem
        case, nmap = from_pandapower(net, name)
        return case, NetSource(net, nmap)
    return load_case(spec), None


def load(spec: str) -> tuple[Case, NetSource | None]:
    """A case by name (see `load_case`), and the pandapower net it came from if any."""
    return load_case_and_source(spec)


def load_case(spec: str) -> Case:
    """`spec` is a built-in name, a path to a MATPOWER `.m` file or a rack `.toml` file, or
    a pandapower net (`pandapower:NAME` or a `.json` file)."""
    if spec.startswith("pandapower:") or Path(spec).suffix == ".json":
        return load_case_and_source(spec)[0]
    if spec in BUILTINS:
        return builtin(spec)
    p = Path(spec)
    if p.suffix == ".m":
        if not p.exists():
            raise CaseError(f"{spec}: no such file")
        return load_matpower(p)
    if p.suffix == ".toml":
        from powerflow.grid.rackcase import load_rack_case

        return load_rack_case(p)
    raise CaseError(f"{spec}: not a built-in case ({', '.join(BUILTINS)}), pandapower:NAME, "
                    "nor a .m, .toml or pandapower .json file")
