"""Rack files: the examples load, and every kind of mistake is named with its place."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest

from powerflow.grid.loadflow import solve
from powerflow.grid.rackcase import rack_case
from powerflow.model.rack import RackError, load_rack, parse_rack
from tests.conftest import ROOT

SMALL = ROOT / "examples" / "racks" / "small.toml"


def test_small_rack_loads_and_solves() -> None:
    rack = load_rack(SMALL)
    assert len(rack.nodes) == 4 and len(rack.devices) == 8 and rack.bus_voltage == 12.0
    case = rack_case(rack)
    r = solve(case)
    assert r.converged and r.method == "newton"  # meshed through the converters
    # every watt the devices draw plus the losses comes through the converters
    p_dev = sum(d.p_nom_w for d in rack.devices)
    src_w = r.s_from()[: len(rack.nodes)].real.sum() * case.base_mva * 1e6
    assert src_w == pytest.approx(p_dev + r.loss_kw * 1e3, rel=1e-9)
    # every converter drops its droop below the source: 12 mohm x ~24 A of 12 V is about 2.4 %
    assert np.all(r.vm[1:] < 1.0) and r.vmin_pu > 0.96


def mutate(edit):
    raw = tomllib.loads(SMALL.read_text())
    edit(raw)
    return raw


@pytest.mark.parametrize(("edit", "message"), [
    (lambda r: r["node"][1].update(segment="Z"),
     r"\[\[node\]\] #2: field 'segment': expected one of the segment ids A, B, C, D; got 'Z'"),
    (lambda r: r["node"][0].update(rating_w=-5), r"\[\[node\]\] #1: field 'rating_w': expected a number"),
    (lambda r: r["device"][3].pop("priority"), r"\[\[device\]\] #4: field 'priority' is missing"),
    (lambda r: r["device"][0].update(p_min_w=400.0), r"field 'p_min_w': expected at most p_max_w"),
    (lambda r: r["branch"][0].update(to="A"), r"\[\[branch\]\] #1: field 'to': expected a segment other"),
    (lambda r: r["branch"][0].update(switch="fuse"), r"field 'switch': expected one of none, tie"),
    (lambda r: r["node"][0].update(efficiency=[[0.5, 0.9], [0.1, 0.95]]), r"field 'efficiency'"),
    (lambda r: r["node"][2].update(id=1), r"\[\[node\]\] #3: field 'id': expected a node id not used"),
    (lambda r: r["feed"].pop("breaker_limit_w"), r"\[feed\]: field 'breaker_limit_w' is missing"),
    (lambda r: r["rack"].update(colour="red"), r"\[rack\]: unknown field 'colour'"),
    (lambda r: r.update(extras={}), r"unknown section \[extras\]"),
])
def test_mistakes_are_named(edit, message: str) -> None:
    with pytest.raises(RackError, match=message):
        parse_rack(mutate(edit), "small.toml")


def test_not_toml(tmp_path) -> None:
    p = tmp_path / "r.toml"
    p.write_text("[rack\nname=")
    with pytest.raises(RackError, match="not valid TOML"):
        load_rack(p)
