"""A node's safe output (its failsafe, the host's safe allocation, the take-over after either):
droop-centred, so that the bus stays in a +-3 % band at any current within the converter's
rating. At plain nominal, the small rack carrying 1.7 kW sat at 11.55 V in failsafe and in
safe mode, under its 11.64-V band (measured; tests/chaos/test_chaos_standby.py's rack)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from powerflow.model.rack import load_rack
from tests.conftest import ROOT

RACKS = sorted((ROOT / "examples" / "racks").glob("*.toml"))


@pytest.mark.parametrize("path", RACKS, ids=[p.stem for p in RACKS])
def test_the_bus_stays_in_band_from_no_load_to_full_current(path) -> None:
    rack = load_rack(path)
    nom = rack.bus_voltage
    for n in rack.nodes:
        v0 = n.safe_vout(nom)
        bus = v0 - n.r_out * np.linspace(0.0, n.iout_max, 51)  # its droop line
        if n.r_out * n.iout_max <= 0.06 * nom:  # a droop the band can hold at all
            assert bus.min() >= 0.97 * nom - 1e-9 and bus.max() <= 1.03 * nom + 1e-9, (n.id, v0)
        # without a droop configured (a board that has none) it is plain nominal
        assert n.safe_vout(nom, droop=False) == min(nom, n.vout_max)


def test_the_rise_is_bounded_and_never_above_the_rating() -> None:
    n = load_rack(ROOT / "examples" / "racks" / "small.toml").nodes[0]
    steep = dataclasses.replace(n, r_out=0.1)  # 5 V of droop over its rating
    assert steep.safe_vout(12.0) == pytest.approx(12.0 * 1.025)
    low = dataclasses.replace(n, vout_max=12.1)
    assert low.safe_vout(12.0) == pytest.approx(12.1)
    assert n.safe_vout(12.0) == pytest.approx(12.0 + 0.5 * n.r_out * n.iout_max)
