"""The rack physics on its own: energy balance, droop sharing, limits, battery."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from powerflow.emulator.physics import RackPhysics, utilisation
from powerflow.model.rack import Battery, load_rack
from tests.conftest import ROOT

RACKS = ROOT / "examples" / "racks"


def settle(ph: RackPhysics, seconds: float = 1.0) -> None:
    for _ in range(int(seconds / 0.005)):
        ph.step(0.005)


@pytest.mark.parametrize("name", ["small", "orv3", "large"])
def test_energy_balance(name: str) -> None:
    ph = RackPhysics(load_rack(RACKS / f"{name}.toml"))
    for nid in ph.conv:
        ph.set_actuators(nid, ph.rack.bus_voltage, True, 0xFF)
    settle(ph)
    ph._update_devices = lambda dt: None  # hold the demand still: no bus capacitor current left
    settle(ph, 0.5)
    assert ph.converged
    bat = ph.battery.p_out if ph.battery else 0.0
    supplied = sum(c.i_out * ph.v[c.seg] for c in ph.conv.values()) + bat
    assert supplied == pytest.approx(ph.served.sum() + ph.loss_w()["distribution"], rel=1e-6)
    assert ph.feed_power_w() == pytest.approx(
        sum(c.i_out * ph.v[c.seg] + c.p_loss for c in ph.conv.values()), rel=1e-9)


def test_equal_converters_share_by_droop() -> None:
    rack = load_rack(RACKS / "small.toml")
    ph = RackPhysics(rack)
    for nid in ph.conv:
        ph.set_actuators(nid, 12.0, True, 1)
    settle(ph)
    cur = [c.i_out for c in ph.conv.values()]
    assert max(cur) - min(cur) < 0.05 * max(cur)  # segments nearly equal, droop shares
    # a converter set 0.1 V higher takes about 0.1 V / r_out more than the others
    ph.set_actuators(1, 12.1, True, 1)
    settle(ph)
    gap = ph.conv[1].i_out - np.mean([ph.conv[i].i_out for i in (2, 3, 4)])
    assert 0.5 * 0.1 / 0.012 < gap < 0.1 / 0.012


def test_hardware_current_limit_and_dark_islands() -> None:
    ph = RackPhysics(load_rack(RACKS / "small.toml"))
    ph.dev_cap[:] = 1e6
    ph.dev_p[:] = 2000.0  # far beyond the rack: every converter at its limit
    for nid in ph.conv:
        ph.set_actuators(nid, 12.0, True, 1)
    ph.step(0.005)
    assert all(c.i_out == pytest.approx(c.i_hw) for c in ph.conv.values())
    ph2 = RackPhysics(load_rack(RACKS / "small.toml"))
    for nid in ph2.conv:
        ph2.set_actuators(nid, 12.0, nid != 1, 0)  # node 1 off, every tie open
    settle(ph2, 2.0)
    assert ph2.v[0] < 0.5 and np.all(ph2.v[1:] > 11.0)  # segment A is dark, the rest live


def test_battery_holds_the_bus_when_every_converter_fails() -> None:
    rack = load_rack(RACKS / "small.toml")
    rack = dataclasses.replace(rack, battery=Battery("B", 500.0, 300.0, 3000.0, 0.95, 0.5))
    ph = RackPhysics(rack)
    for nid in ph.conv:
        ph.set_actuators(nid, 12.0, True, 1)
    settle(ph)
    assert ph.battery.p_out < 0  # healthy bus: recharging
    soc = ph.battery.soc
    for c in ph.conv.values():
        c.failed = True
    settle(ph, 2.0)
    assert ph.battery.p_out > 0.9 * ph.served.sum()  # the battery carries the rack
    assert np.all(ph.v > 0.9 * rack.bus_voltage) and ph.battery.soc < soc


def test_a_battery_commanded_to_discharge_never_drives_the_bus_above_the_band() -> None:
    """small-pod as `run --emulate` boots it: the host commands the battery to shave before
    segment B's converter is on; the unit delivers at most that power, and no more than
    holds its bus at the band's top (as a constant-power source into a light load it drove
    the bus to 22.8 V, and nodes 2 and 3 latched an overvoltage fault at boot)."""
    from powerflow.emulator.physics import BBU_CLAMP_V_PU

    rack = load_rack(RACKS / "small-pod.toml")
    ph = RackPhysics(rack)
    for nid in ph.conv:  # no converter on yet, every tie open: segment B has its battery only
        ph.set_actuators(nid, 12.0, False, 0)
    settle(ph, 0.5)
    ph.apply_devices({"gpu1": 60.0, "cpu1": 40.0}, 300.0, None)  # B draws 100 W, is sent 300
    top = 0.0
    for _ in range(400):
        ph.step(0.005)
        top = max(top, float(np.max(ph.v)))
    assert top <= BBU_CLAMP_V_PU * rack.bus_voltage + 0.05, top
    assert 0.0 <= ph.battery.p_out <= 100.5  # what the segment draws, no more
    ph.apply_devices({}, 300.0, None)  # where the segment draws more, it delivers its 300 W
    settle(ph, 1.0)
    assert ph.battery.p_out == pytest.approx(300.0, rel=1e-3)


def test_the_battery_loop_holds_the_feed_at_its_threshold() -> None:
    """Where the feed binds, the host commands no discharge and leaves the peak to the
    unit's own loop (battery_shave_above_w): it must meet the feed's measured excess
    within a period, and spend nothing while the feed is under the threshold."""
    rack = load_rack(RACKS / "small-pod.toml")
    ph = RackPhysics(rack)
    for nid in ph.conv:
        ph.set_actuators(nid, rack.bus_voltage, True, 0xFF)
    ph._update_devices = lambda dt: None  # demand held still, ~190 W above the threshold
    ph.dev_p[:] = 0.75 * ph.dev_cap
    settle(ph, 0.5)
    unshaved = ph.feed_power_w()
    threshold = 0.95 * rack.breaker_limit_w
    assert unshaved > rack.breaker_limit_w  # the peak is real
    ph.apply_devices({}, 0.0, threshold)
    settle(ph, 1.0)
    assert ph.feed_power_w() == pytest.approx(threshold, abs=2.0)
    assert ph.battery.p_out == pytest.approx(unshaved - threshold, rel=0.15)
    ph.dev_p[:] = 0.3 * ph.dev_cap  # the peak gone: the loop lets go, no energy spent
    settle(ph, 1.0)
    assert ph.feed_power_w() < threshold and ph.battery.p_out == pytest.approx(0.0, abs=1.0)


def test_traces_are_deterministic_and_bounded() -> None:
    for kind in ("steady", "diurnal", "training", "inference", "spikes"):
        a = [utilisation(kind, t * 0.37, 5) for t in range(3000)]
        assert a == [utilisation(kind, t * 0.37, 5) for t in range(3000)]
        assert 0.0 <= min(a) and max(a) <= 1.0
    with pytest.raises(ValueError, match="unknown trace"):
        utilisation("lunar", 0.0, 1)


def test_power_smoothing_limits_how_fast_a_device_moves_both_ways() -> None:
    """A device under a training job steps between its dip and its compute power; with ramp
    limits its power moves at most that many W/s each way, without them within ~0.2 s."""
    from powerflow.emulator.workloads import Job, Workload

    rack = load_rack(RACKS / "small.toml")
    k = [d.id for d in rack.devices].index("gpu0")
    slopes = {}
    for ramps in ({}, {"gpu0": (40.0, 25.0)}):
        ph = RackPhysics(rack)
        ph.workload = Workload(len(rack.devices), (Job("training", (k,), {
            "init_s": 0.0, "iteration_s": 8.0, "dip_frac": 0.5, "noise": 0.0,
            "checkpoint_every_s": 0.0}),))
        ph.apply_devices({}, None, None, ramps)
        p = []
        for _ in range(2000):
            ph.step(0.01)
            p.append(ph.dev_p[k])
        d = np.diff(p) / 0.01
        slopes[bool(ramps)] = (d.max(), d.min())
    assert slopes[True][0] <= 40.0 + 1e-6 and slopes[True][1] >= -25.0 - 1e-6
    assert slopes[True][0] > 39.0 and slopes[True][1] < -24.0  # the limits are what bind
    assert slopes[False][0] > 500.0 and slopes[False][1] < -500.0  # unsmoothed: a step
