"""A node's safe output (its failsafe, the host's safe allocation, the take-over after either):
droop-centred, as high above nominal as an unloaded bus allows (a +3 % band's top, with the
1.6 % a soft-start may run over its reference). At plain nominal, the small rack carrying 1.7 kW sat at 11.55 V in failsafe and in
safe mode, under its 11.64-V band (measured; tests/chaos/test_chaos_standby.py's rack)."""

from __future__ import annotations

import dataclasses

import pytest

from powerflow.model.rack import load_rack
from tests.conftest import ROOT

RACKS = sorted((ROOT / "examples" / "racks").glob("*.toml"))


@pytest.mark.parametrize("path", RACKS, ids=[p.stem for p in RACKS])
def test_in_band_at_no_load_and_higher_than_nominal_under_load(path) -> None:
    rack = load_rack(path)
    nom = rack.bus_voltage
    for n in rack.nodes:
        v0 = n.safe_vout(nom)
        # at no load, even with the 1/64 a soft-start may run over its reference
        assert v0 * (1 + 1 / 64) <= 1.03 * nom + 1e-9, (n.id, v0)
        # under load, the droop line above plain nominal's (never lower)
        assert v0 >= min(nom, n.vout_max)
        # without a droop configured (a board that has none) it is plain nominal
        assert n.safe_vout(nom, droop=False) == min(nom, n.vout_max)
    # the small rack carrying 1.7 kW on its four converters, in band (11.55 V at nominal)
    if path.stem == "small":
        i = 1700.0 / 4 / nom
        assert all(n.safe_vout(nom) - n.r_out * i >= 0.97 * nom for n in rack.nodes)


def test_the_rise_is_bounded_and_never_above_the_rating() -> None:
    n = load_rack(ROOT / "examples" / "racks" / "small.toml").nodes[0]
    steep = dataclasses.replace(n, r_out=0.1)  # 5 V of droop over its rating
    assert steep.safe_vout(12.0) == pytest.approx(12.0 * 1.014)
    low = dataclasses.replace(n, vout_max=12.1)
    assert low.safe_vout(12.0) == pytest.approx(12.1)
    gentle = dataclasses.replace(n, r_out=0.004)  # 0.1 V over its rating
    assert gentle.safe_vout(12.0) == pytest.approx(12.0 + 0.5 * 0.004 * n.iout_max)
