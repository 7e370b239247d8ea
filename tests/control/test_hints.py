"""Job hints (control/hints.py): what is refused, what is stored, and how a hint moves the
forecasts and what the allocator prepares — only ever upward, and only until it expires."""

from __future__ import annotations

import pytest

from powerflow.control.controller import HORIZONS, DeviceObs, RackController
from powerflow.control.hints import (HINT_HORIZON_S, HINT_LEAD_S, MAX_HINTS, HintBook,
                                     HintError)
from powerflow.model.rack import load_rack
from tests.conftest import ROOT

DEVS = {"gpu0": (80.0, 300.0), "gpu1": (80.0, 300.0), "cpu0": (40.0, 150.0)}


@pytest.mark.parametrize("kw,msg", [
    ({"devices": ["gpu9"]}, "no device 'gpu9'"),
    ({"devices": []}, "at least one device"),
    ({"devices": ["gpu0", "gpu0"]}, "named twice"),
    ({"at": 1000.0 - 60.0}, "60.0 s in the past"),
    ({"at": 1000.0 + HINT_HORIZON_S + 1}, "beyond the 3600 s horizon"),
    ({"at": float("nan")}, "finite time"),
    ({"watts": 301.0}, "0 to 300 W"),
    ({"watts": 200.0, "devices": ["gpu0", "cpu0"]}, "0 to 150 W"),
    ({"watts": -1.0}, "field 'watts'"),
    ({"duration_s": 0.0}, "field 'duration_s'"),
    ({"duration_s": float("inf")}, "field 'duration_s'"),
    ({"job": "a b"}, "field 'job'"),
])
def test_bad_hints_are_refused_and_nothing_is_stored(kw: dict, msg: str) -> None:
    book = HintBook(DEVS)
    book.start(1000.0, "kept", ["cpu0"], 1010.0, 100.0, 60.0)
    args = {"job": "j1", "devices": ["gpu0", "gpu1"], "at": 1030.0, "watts": 280.0,
            "duration_s": 600.0, **kw}
    with pytest.raises(HintError) as e:
        book.start(1000.0, args["job"], args["devices"], args["at"], args["watts"],
                   args["duration_s"])
    assert msg in str(e.value)
    assert [h.job for h in book.listing(1000.0)] == ["kept"]
    with pytest.raises(HintError, match="no hinted job 'j9'"):
        book.end(1000.0, "j9", 1000.0)
    assert [h.job for h in book.listing(1000.0)] == ["kept"]


def test_hints_expire_end_early_replace_and_are_bounded() -> None:
    book = HintBook(DEVS)
    h = book.start(1000.0, "j1", ["gpu0"], 1002.0, 250.0, 100.0)  # a start 2 s late is "now"
    assert (h.start_t, h.end_t) == (1002.0, 1102.0)
    assert book.start(1000.0, "j1", ["gpu1"], 1000.0 - 3, 250.0, 100.0).start_t == 1000.0
    assert [x.devices for x in book.listing(1000.0)] == [("gpu1",)]  # replaced, not added
    book.end(1000.0, "j1", 1050.0)
    assert book.listing(1049.0)[0].end_t == 1050.0 and book.listing(1050.0) == []
    for k in range(MAX_HINTS):
        book.start(2000.0, f"j{k}", ["cpu0"], 2000.0, 10.0, 10.0)
    with pytest.raises(HintError, match="1000 hints are held"):
        book.start(2000.0, "one-more", ["cpu0"], 2000.0, 10.0, 10.0)
    book.start(2000.0, "j5", ["gpu0"], 2000.0, 10.0, 10.0)  # replacing one is fine
    assert book.listing(2010.0) == []  # every one expired at its end


def test_a_hint_raises_the_forecast_and_readies_supply_before_the_start_only() -> None:
    rack = load_rack(ROOT / "examples" / "racks" / "small.toml")
    ctrl = RackController(rack)
    obs = {dv.id: DeviceObs(100.0, 0.3) for dv in rack.devices}
    for k in range(40):  # a flat history: the forecaster says 100 W
        ctrl._forecast(float(k), obs)
    t = 40.0
    ctrl.hints.start(t, "train", ["gpu0", "gpu1"], t + 5.0, 290.0, 120.0)
    views = {v.id: v for v in ctrl._forecast(t, obs)}
    f = ctrl.forecasts["gpu0"]
    assert f.mean_w[1] == pytest.approx(100.0, abs=1.0)  # the start is 5 s away
    assert f.mean_w[10] == 290.0 and f.upper_w[10] >= 290.0  # within 10 s: the job's power
    assert ctrl.forecasts["gpu2"].mean_w[10] == pytest.approx(100.0, abs=1.0)  # not hinted
    # supply is made ready for it, but the forecast the caps follow is still the measured one
    assert views["gpu0"].ready_w == 290.0 and views["gpu0"].upper_w < 150.0
    assert views["gpu0"].mean_w < 110.0
    assert views["gpu2"].upper_w < 150.0 and views["gpu2"].ready_w == 0.0
    # an end hint ends the hint's influence: the forecast is the forecaster's again
    ctrl.hints.end(t, "train", t + 3.0)
    ctrl._forecast(t + 1.0, obs)
    g = ctrl.forecasts["gpu0"]
    assert g.mean_w[10] == pytest.approx(100.0, abs=1.0)
    # a hint below what is measured lowers nothing, forecast or bound
    before = {v.id: v for v in ctrl._forecast(t + 2.0, obs)}
    ctrl.hints.start(t + 2.0, "small", ["gpu3"], t + 3.0, 10.0, 60.0)
    after = {v.id: v for v in ctrl._forecast(t + 3.0, obs)}
    h = ctrl.forecasts["gpu3"]
    assert h.mean_w[10] == pytest.approx(100.0, abs=1.0) and h.upper_w[10] >= 100.0
    assert after["gpu3"].upper_w >= before["gpu3"].upper_w - 1.0
    assert after["gpu3"].mean_w == pytest.approx(before["gpu3"].mean_w, abs=1.0)
    # a hint without watts readies each device's p_max_w
    ctrl.hints.start(t + 3.0, "full", ["cpu0"], t + 10.0, None, 60.0)
    views = {v.id: v for v in ctrl._forecast(t + 4.0, obs)}
    assert views["cpu0"].ready_w == 150.0
    # long after its start the hint no longer holds the allocator's bound up
    ctrl.hints.start(t + 4.0, "later", ["gpu1"], t + 5.0, 290.0, 600.0)
    for k in range(int(HINT_LEAD_S) + 2):
        views = {v.id: v for v in ctrl._forecast(t + 5.0 + k, obs)}
    assert views["gpu1"].upper_w < 200.0 and views["gpu1"].ready_w == 0.0
    assert set(HORIZONS) == set(g.mean_w)
    book = HintBook({f"d{k}": (0.0, 100.0) for k in range(20)})
    for k in range(10000 // 20):  # the device entries of all hints held are bounded
        book.start(0.0, f"j{k}", [f"d{i}" for i in range(20)], 0.0, 1.0, 60.0)
    with pytest.raises(HintError, match="at most 10000 in all"):
        book.start(0.0, "more", ["d0"], 0.0, 1.0, 60.0)
