"""Finding a case by name: a built-in, a MATPOWER file, or (later) a rack file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from powerflow.grid.case import Case, CaseError, FlexBus
from powerflow.grid.matpower import load_matpower

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


def load_case(spec: str) -> Case:
    """`spec` is a built-in name, or a path to a MATPOWER `.m` file."""
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
    raise CaseError(f"{spec}: not a built-in case ({', '.join(BUILTINS)}) nor a .m or .toml file")
