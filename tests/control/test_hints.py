"""Job hints (control/hints.py): what is refused, what is stored, and how a hint moves the
forecasts and what the allocator prepares — upward on its own, downward only where
measurement agrees, and only until it expires."""

from __future__ import annotations

import numpy as np
import pytest

from powerflow.control.controller import HORIZONS, DeviceObs, RackController
from powerflow.control.hints import (END_HOLD_S, HINT_HORIZON_S, HINT_LEAD_S, HINT_TOLERANCE,
                                     MAX_ALL_PAUSES, MAX_HINTS, MAX_PAUSES, START_HOLD_S,
                                     HintBook,
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


def test_the_battery_is_planned_to_the_first_end_of_a_job_running_now() -> None:
    book = HintBook(DEVS)
    assert book.next_end(1000.0) is None
    book.start(1000.0, "later", ["gpu0"], 1100.0, 250.0, 50.0)
    assert book.next_end(1000.0) is None  # not begun: nothing to last through yet
    book.start(1000.0, "long", ["gpu1"], 1000.0, 250.0, 900.0)
    assert book.next_end(1000.0) == 900.0
    assert book.next_end(1120.0) == 30.0  # "later" runs now and ends first
    book.end(1120.0, "long", 1125.0)  # an end hinted earlier moves the plan
    assert book.next_end(1120.0) == 5.0
    assert book.next_end(1150.0) is None  # both over


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


IDX = {"gpu0": 0, "gpu1": 1, "cpu0": 2}


def _fold(book: HintBook, now: float, mean: list[float], upper: list[float],
          measured: list[float] | None) -> tuple[dict, dict]:
    means = {h: np.array(mean) for h in (1, 10)}
    uppers = {h: np.array(upper) for h in (1, 10)}
    return book.fold(now, 1.0, IDX, means, uppers,
                     None if measured is None else np.array(measured))


def test_a_pause_lowers_the_forecast_only_while_measurement_agrees_and_the_return_is_raised(
        ) -> None:
    book = HintBook(DEVS)
    book.start(0.0, "j", ["gpu0", "gpu1"], 0.0, 290.0, 600.0)
    book.pause(0.0, "j", 100.0, 15.0, 110.0)  # a checkpoint from 100 s to 115 s
    tol = HINT_TOLERANCE * 300.0
    busy, dip = [280.0, 280.0, 100.0], [300.0, 300.0, 140.0]
    _fold(book, 1.0, busy, dip, [290.0, 290.0, 100.0])  # the job reached its watts long ago
    # before it, the devices busy: nothing lowered, not even the horizons inside the pause
    m, u = _fold(book, 95.0, busy, dip, [290.0, 290.0, 100.0])
    assert (m[10][0], u[10][0]) == (280.0, 300.0)
    # in it, gpu0 measured down: held at the pause's watts; gpu1 still at 290 W is left to
    # its forecast (measurement wins), cpu0 is not in the job; without measurement, nothing
    m, u = _fold(book, 101.0, busy, dip, [112.0, 290.0, 100.0])
    assert (m[1][0], u[1][0]) == (110.0, 110.0 + tol) and (m[10][0], u[10][0]) == (110.0,
                                                                                   110.0 + tol)
    assert (m[1][1], u[1][1]) == (280.0, 300.0) and (m[1][2], u[1][2]) == (100.0, 140.0)
    m, u = _fold(book, 101.0, busy, dip, None)
    assert (m[1][0], u[1][0]) == (280.0, 300.0)
    # the forecaster has learnt the dip; the horizons after the return get the job's watts
    low = [110.0, 110.0, 100.0]
    m, u = _fold(book, 106.0, low, [125.0, 125.0, 140.0], [111.0, 111.0, 100.0])
    assert m[1][0] == 110.0 and (m[10][0], u[10][0]) == (290.0, 290.0)
    m, u = _fold(book, 114.5, low, [125.0, 125.0, 140.0], [111.0, 111.0, 100.0])
    assert (m[1][0], u[1][0]) == (290.0, 290.0)  # the return falls in the next period
    m, u = _fold(book, 116.5, low, [125.0, 125.0, 140.0], [290.0, 290.0, 100.0])
    assert (m[1][0], u[1][0]) == (110.0, 125.0)  # a period after it: the forecaster's own
    # supply stays ready for the job through the pause, until HINT_LEAD_S after the return
    assert book.prepare(105.0) == {"gpu0": 290.0, "gpu1": 290.0}
    assert book.prepare(115.0 + HINT_LEAD_S - 0.5) == {"gpu0": 290.0, "gpu1": 290.0}
    assert book.prepare(115.0 + HINT_LEAD_S) == {}


def test_a_pause_frees_the_room_of_devices_measured_in_it_until_two_periods_before_the_return(
        ) -> None:
    """HintBook.room: what the caps need keep for a device that a hint says stays low. A
    pause frees the rest of its p_max_w only while the device is measured at the pause's
    watts and the return is more than two periods away; after a hinted end, an idle device
    is kept what it draws, for END_HOLD_S."""
    book = HintBook(DEVS)
    book.start(0.0, "j", ["gpu0", "gpu1"], 0.0, 290.0, 600.0)
    book.pause(0.0, "j", 100.0, 15.0, 110.0)  # a checkpoint from 100 s to 115 s
    tol = HINT_TOLERANCE * 300.0

    def room(now: float, measured: list[float]) -> dict[str, float]:
        return book.room(now, 1.0, IDX, np.array(measured))

    assert room(99.5, [290.0, 290.0, 100.0]) == {}  # not yet in the pause
    # in it: gpu0 measured down is kept the pause's watts; gpu1 still busy is kept its all
    assert room(101.0, [112.0, 290.0, 100.0]) == {"gpu0": 110.0 + tol}
    assert room(112.9, [112.0, 112.0, 100.0]) == {"gpu0": 110.0 + tol, "gpu1": 110.0 + tol}
    assert room(113.0, [112.0, 112.0, 100.0]) == {}  # the return two periods away: all back
    # after the job's end, an idle device is kept what it draws; a busy one its all
    book.end(200.0, "j", 300.0)
    assert room(301.0, [90.0, 280.0, 100.0]) == {"gpu0": 90.0 + tol}
    assert room(300.0 + END_HOLD_S - 2.0, [90.0, 90.0, 100.0]) == {}
    # the controller hands it to the allocator with each period's views (DeviceView.room_w)
    rack = load_rack(ROOT / "examples" / "racks" / "small.toml")
    ctrl = RackController(rack)
    ctrl.hints.start(0.0, "j", ["gpu0", "gpu1"], 0.0, 290.0, 600.0)
    ctrl.hints.pause(0.0, "j", 100.0, 15.0, 110.0)
    busy = {dv.id: DeviceObs(290.0 if dv.id in ("gpu0", "gpu1") else 100.0, 0.5)
            for dv in rack.devices}
    for k in range(100):
        views = {v.id: v for v in ctrl._forecast(float(k), busy)}
    assert all(v.room_w is None for v in views.values())
    paused = {**busy, "gpu0": DeviceObs(111.0, 0.2), "gpu1": DeviceObs(111.0, 0.2)}
    views = {v.id: v for v in ctrl._forecast(101.0, paused)}
    assert views["gpu0"].room_w == views["gpu1"].room_w == 110.0 + tol
    assert views["gpu2"].room_w is None and ctrl.room == {"gpu0": 110.0 + tol,
                                                          "gpu1": 110.0 + tol}


def test_a_device_held_at_its_cap_is_not_taken_for_paused_or_idle() -> None:
    """A capped device draws its cap, whatever it would draw: at a pause's watts under a cap
    it is neither kept only the pause's room nor forecast at the pause's level (a capped GPU
    that came back early was taken for paused until the hint ran out, found by the chaos
    test of a wrong hint); below its cap by the tolerance, it is."""
    book = HintBook(DEVS)
    book.start(0.0, "j", ["gpu0", "gpu1"], 0.0, 290.0, 600.0)
    book.pause(0.0, "j", 100.0, 15.0, 110.0)
    tol = HINT_TOLERANCE * 300.0
    measured = np.array([80.0, 80.0, 100.0])
    caps = {"gpu0": 80.0, "gpu1": 200.0, "cpu0": None}  # gpu0 at its cap, gpu1 well below
    assert book.room(101.0, 1.0, IDX, measured, caps) == {"gpu1": 110.0 + tol}
    means = {1: np.array([200.0, 200.0, 100.0])}
    uppers = {1: np.array([300.0, 300.0, 140.0])}
    m, u = book.fold(101.0, 1.0, IDX, means, uppers, measured, caps)
    assert (m[1][0], u[1][0]) == (200.0, 300.0) and (m[1][1], u[1][1]) == (110.0, 110.0 + tol)
    # after the job's end likewise: an idle-looking device at its cap is kept its all
    book.end(200.0, "j", 300.0)
    assert book.room(301.0, 1.0, IDX, measured, caps) == {"gpu1": 80.0 + tol}


@pytest.mark.parametrize("args,msg", [
    (("nope", 200.0, 15.0, 110.0), "no hinted job 'nope'"),
    (("j", 590.0, 15.0, 110.0), "within its job"),
    (("j", 105.0, 15.0, 110.0), "overlaps"),
    (("j", 200.0, 15.0, 301.0), "0 to 300 W"),
    (("j", 200.0, 0.0, 110.0), "field 'duration_s'"),
    (("j", 200.0, float("nan"), 110.0), "field 'duration_s'"),
    (("j", 20.0, 15.0, 110.0), "in the past"),
])
def test_bad_pauses_are_refused_and_nothing_is_stored(args: tuple, msg: str) -> None:
    book = HintBook(DEVS)
    book.start(50.0, "j", ["gpu0", "gpu1"], 50.0, 290.0, 550.0)
    book.pause(50.0, "j", 100.0, 15.0, 110.0)
    before = book.listing(50.0)
    with pytest.raises(HintError, match=msg):
        book.pause(50.0, *args)
    assert book.listing(50.0) == before


def test_pauses_are_bounded_and_an_end_cuts_them() -> None:
    book = HintBook(DEVS)
    book.start(0.0, "j", ["gpu0"], 0.0, 290.0, 3000.0)
    for k in range(MAX_PAUSES):
        book.pause(0.0, "j", 10.0 + 10.0 * k, 5.0, 110.0)
    with pytest.raises(HintError, match=f"{MAX_PAUSES} pauses"):
        book.pause(0.0, "j", 2900.0, 5.0, 110.0)
    h = book.end(0.0, "j", 22.0)
    assert [(p.start_t, p.end_t) for p in h.pauses] == [(10.0, 15.0), (20.0, 22.0)]


def test_after_a_hinted_end_an_idle_device_is_held_at_what_it_draws_for_a_while() -> None:
    book = HintBook(DEVS)
    book.start(0.0, "j", ["gpu0", "gpu1"], 0.0, 290.0, 100.0)
    band = [150.0, 150.0, 100.0], [200.0, 200.0, 140.0]  # the job's errors still in the band
    tol = HINT_TOLERANCE * 300.0
    # gpu0 idles at 90 W: held there; gpu1 still draws near the job's watts: left alone
    m, u = _fold(book, 101.0, *band, [90.0, 280.0, 100.0])
    assert (m[1][0], u[1][0]) == (90.0, 90.0 + tol) and (m[1][1], u[1][1]) == (150.0, 200.0)
    assert (m[1][2], u[1][2]) == (100.0, 140.0)
    # another job hinted on gpu0 takes over from the hold
    book.start(102.0, "k", ["gpu0"], 150.0, 250.0, 60.0)
    m, u = _fold(book, 102.0, *band, [90.0, 90.0, 100.0])
    assert u[1][0] == 200.0 and u[1][1] == 90.0 + tol
    # END_HOLD_S after the end, the forecaster's own again
    m, u = _fold(book, 100.0 + END_HOLD_S, *band, [90.0, 90.0, 100.0])
    assert u[1][1] == 200.0 and "j" not in book.ended


def test_once_a_job_reaches_its_watts_its_bound_is_held_there_while_its_steps_are_learnt(
        ) -> None:
    book = HintBook(DEVS)
    book.start(0.0, "j", ["gpu0", "gpu1"], 10.0, 290.0, 600.0)
    fc = [200.0, 200.0, 100.0], [220.0, 220.0, 140.0]  # the forecaster reads a dip as level
    m, u = _fold(book, 12.0, *fc, [150.0, 150.0, 100.0])  # loading the model: below it
    assert u[1][0] == 220.0 and "j" not in book.ramped
    m, u = _fold(book, 20.0, *fc, [288.0, 150.0, 100.0])  # gpu0 first reaches the watts
    assert book.ramped == {"j": 20.0}
    assert (m[1][0], u[1][0], u[1][1], u[1][2]) == (200.0, 290.0, 290.0, 140.0)
    m, u = _fold(book, 20.0 + START_HOLD_S - 1.0, *fc, [160.0, 160.0, 100.0])  # in a dip
    assert u[1][0] == 290.0
    m, u = _fold(book, 20.0 + START_HOLD_S, *fc, [160.0, 160.0, 100.0])  # learnt by now
    assert u[1][0] == 220.0
    book.start(60.0, "j", ["gpu0"], 70.0, 290.0, 600.0)  # restarted: a ramp still to come
    assert "j" not in book.ramped


def test_the_training_loop_hook_announces_each_pause_for_as_long_as_the_last_took() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "pause_hints", ROOT / "examples" / "schedulers" / "training" / "pause_hints.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sent: list[tuple[str, float, float]] = []
    now = [0.0]
    hints = mod.PauseHints("slurm-9", send=lambda *a: sent.append(a) or True,
                           clock=lambda: now[0])
    for took in (12.0, 14.0):
        with hints.pause("checkpoint", watts=110.0):
            now[0] += took
    with hints.pause("eval", watts=200.0):
        now[0] += 25.0
    assert sent == [("slurm-9", 110.0, mod.FIRST_S), ("slurm-9", 110.0, 12.0),
                    ("slurm-9", 200.0, mod.FIRST_S)]
    assert hints.took == {"checkpoint": 14.0, "eval": 25.0}


def test_a_jobs_pauses_are_found_by_bisection_and_bounded_over_all_jobs() -> None:
    book = HintBook({f"d{k}": (0.0, 100.0) for k in range(50)})
    book.start(0.0, "j", ["d0"], 0.0, 90.0, 3000.0)
    for k in range(10):
        book.pause(0.0, "j", 100.0 + 100.0 * k, 10.0, 20.0)
    h = book.hints["j"]
    assert h.pause_at(50.0) == (None, 0.0)
    assert h.pause_at(105.0) == (h.pauses[0], 0.0)
    assert h.pause_at(150.0) == (None, 110.0) and h.pause_at(110.0) == (None, 110.0)
    assert h.pause_at(2000.0) == (None, 1010.0)
    for j in range(1, MAX_ALL_PAUSES // MAX_PAUSES + 2):
        book.start(0.0, f"j{j}", ["d1"], 0.0, 90.0, 3000.0)
        for k in range(MAX_PAUSES):
            try:
                book.pause(0.0, f"j{j}", 10.0 + 10.0 * k, 5.0, 20.0)
            except HintError as e:
                assert "in all" in str(e)
                assert sum(len(x.pauses) for x in book.hints.values()) == MAX_ALL_PAUSES
                return
    raise AssertionError("the pauses over all jobs were not bounded")
