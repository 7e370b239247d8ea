"""The allocator: strict priority caps, loss-minimal shares (against an independent SciPy
solve), phase shedding and rotation, reconfiguration around a lost converter, the
load-flow check and the safe fallback."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from scipy.optimize import minimize

from powerflow.control.allocate import (BATTERY_PLAN_RATE, Allocator, BatteryView, DeviceView,
                                        Memory, NodeView, RackView, loss_w)
from powerflow.control.dcnet import flow
from powerflow.control.policy import Policy
from powerflow.model.rack import load_rack, parse_rack
from tests.conftest import ROOT

SMALL = load_rack(ROOT / "examples" / "racks" / "small.toml")


def view(rack, scale=1.0, t=0.0, temp=30.0, down=(), demand=None, battery=None):
    nodes = [NodeView(n.id, n.id not in down, True, n.iout_max * rack.bus_voltage, temp,
                      why="unavailable: test" if n.id in down else "") for n in rack.nodes]
    devs = []
    for d in rack.devices:
        m = (demand or {}).get(d.id, d.p_nom_w * scale)
        devs.append(DeviceView(d.id, m, m * 1.05))
    return RackView(t, nodes, devs, battery)


def test_strict_priority_no_device_throttled_while_a_lower_one_is_above_its_floor() -> None:
    rng = np.random.default_rng(7)
    for trial in range(25):
        rack = copy.deepcopy(SMALL)
        demand = {d.id: float(rng.uniform(d.p_min_w, d.p_max_w)) for d in rack.devices}
        pol = Policy(max_load_frac=float(rng.uniform(0.3, 0.9)))  # supply short of demand
        a = Allocator(rack).allocate(view(rack, demand=demand), pol, Memory())
        prio = {d.id: d.priority for d in rack.devices}
        pmin = {d.id: d.p_min_w for d in rack.devices}
        want = {d: a.devices[d]["p95_w"] for d in a.devices}
        capped = {d for d, dv in a.devices.items()
                  if dv["cap_w"] is not None and dv["cap_w"] < want[d] - 1e-6}
        for d in capped:
            for other, dv in a.devices.items():
                if prio[other] > prio[d]:  # less important than a throttled device
                    cap = dv["cap_w"]
                    assert cap is not None and cap <= pmin[other] + 1e-6, (trial, d, other)
        # the caps fit the supply the allocator computed
        total = sum(min(want[d], dv["cap_w"] if dv["cap_w"] is not None else 1e9)
                    for d, dv in a.devices.items())
        assert total <= a.predicted["supply_w"] + 1e-6


def test_shares_minimise_loss_as_an_independent_solver_finds() -> None:
    al = Allocator(SMALL)
    net = al.net
    closed = al.normal.copy()
    load = np.array([310.0, 120.0, 480.0, 90.0])
    plim = np.full(4, 540.0)
    on = np.array([True, True, True, True])
    p = al._shares(closed, on, load, plim)
    v = SMALL.bus_voltage
    g = net.conductance(closed)
    gplus = np.linalg.pinv(g)

    def cost(x: np.ndarray) -> float:  # the same model: quadratic conversion + mesh loss
        inj = np.zeros(4)
        np.add.at(inj, net.conv_seg, x)
        dv = gplus @ ((inj - load) / v)
        return float(np.sum(al.qb * x + al.qc * x * x) + dv @ g @ dv)

    ref = minimize(cost, np.full(4, load.sum() / 4), method="SLSQP", bounds=[(0, 540)] * 4,
                   constraints=[{"type": "eq", "fun": lambda x: x.sum() - load.sum()}],
                   options={"ftol": 1e-12, "maxiter": 500})
    assert ref.success
    assert cost(p) == pytest.approx(ref.fun, rel=1e-6, abs=1e-6)
    assert p.sum() == pytest.approx(load.sum(), rel=1e-6)


def test_the_allocation_is_what_the_exact_load_flow_says() -> None:
    al = Allocator(SMALL)
    a = al.allocate(view(SMALL, 1.1), Policy(), Memory())
    assert a.ok and not a.fallback
    vref = np.array([np.nan if a.vref[n.id] is None else a.vref[n.id] for n in SMALL.nodes])
    load = np.zeros(4)
    mean = np.array([min(d.p_nom_w * 1.1, d.p_max_w) for d in SMALL.devices])
    np.add.at(load, al.dev_seg, mean)
    fl = flow(al.net, np.array(a.closed), vref, load)
    assert fl.converged
    pol = Policy()
    assert pol.v_min_pu * 12 <= fl.v.min() and fl.v.max() <= pol.v_max_pu * 12 + 1e-9
    assert max(fl.v) == pytest.approx(pol.v_target_pu * 12, abs=2e-3)  # the highest at target
    shares = np.array([a.nodes[n.id]["share_w"] for n in SMALL.nodes])
    assert np.allclose(fl.p_conv, shares, atol=0.02)


def test_light_load_sheds_converters_and_heavy_load_runs_them_all() -> None:
    al = Allocator(SMALL)
    light = al.allocate(view(SMALL, 0.25), Policy(), Memory())
    heavy = al.allocate(view(SMALL, 1.2), Policy(), Memory())
    n_light = sum(v is not None for v in light.vref.values())
    assert 1 <= n_light < 4 and all(v is not None for v in heavy.vref.values())
    # the shed ones are held ready: they start on their own at their safe output when the
    # bus falls under the band
    shed = {i for i, v in light.vref.items() if v is None}
    nodes = {n.id: n for n in SMALL.nodes}
    wake = 0.97 * SMALL.bus_voltage
    assert light.standby == {i: (nodes[i].safe_vout(SMALL.bus_voltage), pytest.approx(wake))
                             for i in shed}
    assert all(light.nodes[i]["wake_below_v"] == pytest.approx(wake) for i in shed)
    assert heavy.standby == {}
    # shedding pays: predicted conversion loss below the all-on, even-share alternative
    total = sum(min(d.p_nom_w * 0.25, d.p_max_w) for d in SMALL.devices)
    ex, ey = al.eff[0]
    even = 4 * float(loss_w(ex, ey, 600.0, total / 4))
    assert light.predicted["loss_conversion_w"] < even
    off = Allocator(SMALL).allocate(view(SMALL, 0.25), Policy(power_saving=False), Memory())
    assert all(v is not None for v in off.vref.values())


def test_rotation_swaps_the_longest_running_converter_for_a_rested_one() -> None:
    al = Allocator(SMALL)
    mem = Memory()
    pol = Policy(rotation_period_s=3600.0, step_reserve=False)
    v0 = view(SMALL, 0.25, t=10.0)
    first = al.allocate(v0, pol, mem)
    on0 = {i for i, v in first.vref.items() if v is not None}
    later = view(SMALL, 0.25, t=4000.0)
    for nv in later.nodes:  # the running ones have run for hours, the others not
        nv.run_s = 3990.0 if nv.id in on0 else 0.0
    second = al.allocate(later, pol, mem)
    on1 = {i for i, v in second.vref.items() if v is not None}
    assert len(on1) == len(on0) and on1 != on0


def test_a_segment_cut_off_from_every_running_converter_gets_its_tie_closed() -> None:
    raw = {"rack": {"name": "pair", "bus_voltage": 12.0}, "feed": {"voltage": 48.0,
           "breaker_limit_w": 2000.0}, "segment": [{"id": "A"}, {"id": "B"}],
           "node": [{"id": 1, "segment": "A", "rating_w": 600.0, "vout_max": 14.0,
                     "iout_max": 50.0}, {"id": 2, "segment": "B", "rating_w": 600.0,
                                         "vout_max": 14.0, "iout_max": 50.0}],
           "branch": [{"id": "A-B", "from": "A", "to": "B", "r": 0.001, "switch": "tie",
                       "closed": False, "port": [1, 0]}],
           "device": [{"id": "a", "segment": "A", "priority": 1, "p_min_w": 10.0,
                       "p_max_w": 200.0, "p_nom_w": 150.0},
                      {"id": "b", "segment": "B", "priority": 1, "p_min_w": 10.0,
                       "p_max_w": 200.0, "p_nom_w": 150.0}]}
    rack = parse_rack(raw)
    normal = Allocator(rack).allocate(view(rack), Policy(), Memory())
    assert normal.closed == [False]
    a = Allocator(rack).allocate(view(rack, down=(2,)), Policy(), Memory())
    assert a.closed == [True] and "A-B" in a.reason
    assert a.vref[2] is None and a.vref[1] is not None and a.ok
    assert a.nodes[2]["why"] == "unavailable: test"


def test_caps_are_released_only_as_far_as_supply_takes_the_released_at_their_ceilings() -> None:
    """A capped device draws its cap, so its P95 says nothing of what it will draw once
    free: caps come off (two a period at most) only while supply can take each released
    device rising to its ceiling (small-pod, no battery, three CPUs held at 40 W)."""
    rack = load_rack(ROOT / "examples" / "racks" / "small-pod.toml")

    def release(gpu_w: float) -> set[str]:
        dem = {"gpu0": gpu_w, "gpu1": gpu_w, "gpu2": gpu_w, "gpu3": gpu_w, "cpu0": 100.0,
               "cpu1": 40.0, "cpu2": 40.0, "cpu3": 40.0}
        mem = Memory()
        mem.capped = {"cpu1": 40.0, "cpu2": 40.0, "cpu3": 40.0}
        a = Allocator(rack).allocate(view(rack, demand=dem), Policy(), mem)
        freed = {d for d in ("cpu1", "cpu2", "cpu3") if a.devices[d]["cap_w"] is None}
        assert freed.isdisjoint(mem.capped)
        return freed

    assert len(release(150.0)) == 2  # room for two rising 110 W: the staggered two
    assert len(release(200.0)) == 1  # room for one only (two went at once before)


def test_late_optimiser_sends_the_safe_allocation() -> None:
    a = Allocator(SMALL).allocate(view(SMALL), Policy(optimise_deadline_ms=1.0), Memory())
    # the QP and the load flows take longer than a millisecond on any machine here
    assert a.fallback and "late" in a.reason
    # each converter at its droop-centred safe output (Node.safe_vout), above nominal
    nodes = {n.id: n for n in SMALL.nodes}
    assert all(v == pytest.approx(nodes[i].safe_vout(SMALL.bus_voltage))
               and SMALL.bus_voltage < v <= 1.03 * SMALL.bus_voltage for i, v in a.vref.items())
    assert a.ok  # the safe allocation itself passed the check


def test_battery_shaves_the_peak_above_the_feed_limit() -> None:
    rack = load_rack(ROOT / "examples" / "racks" / "small-bbu.toml")
    bat = BatteryView(0.9, 150.0, 250.0, 700.0)
    a = Allocator(rack).allocate(view(rack, 1.3, battery=bat), Policy(), Memory())
    # the feed binds: the unit's own loop meets the measured excess (nothing commanded, so
    # no energy spent on a peak the forecast expected and that does not come) ...
    assert a.battery_w == 0.0 and a.battery_shave_above_w == pytest.approx(0.95 * 1400.0)
    assert all(dv["cap_w"] is None for dv in a.devices.values())  # ... and nobody capped
    # the converters bind (two of four out): the feed's loop would not see that peak, so
    # the discharge is commanded
    c = Allocator(rack).allocate(view(rack, 1.3, down=(1, 2), battery=bat), Policy(), Memory())
    assert c.battery_w > 0
    empty = BatteryView(0.1, 150.0, 250.0, 700.0)  # below the floor: it keeps its charge
    b = Allocator(rack).allocate(view(rack, 1.3, battery=empty), Policy(), Memory())
    assert b.battery_w <= 0 and b.battery_shave_above_w is None
    assert any(dv["cap_w"] is not None for dv in b.devices.values())  # caps instead
    quiet = Allocator(rack).allocate(view(rack, 0.4, battery=empty), Policy(), Memory())
    assert quiet.battery_w < 0  # recharges in the valley


def test_with_a_hinted_end_ahead_the_battery_counts_only_as_far_as_its_energy_lasts() -> None:
    """A hinted job's end ahead (RackView.battery_last_s): the caps count on the battery's
    full rate while its energy would last, less as it runs short, and never on more than
    with no plan; the unit's own shaving is unchanged."""
    rack = load_rack(ROOT / "examples" / "racks" / "small-bbu.toml")
    low = BatteryView(0.25, 150.0, 250.0, 700.0)  # 0.05 of 150 Wh above the 0.20 floor
    usable_j = 0.05 * 150.0 * 3600.0

    def plan(last_s):
        v = view(rack, 1.3, battery=low)
        v.battery_last_s = last_s
        return Allocator(rack).allocate(v, Policy(), Memory())

    free, near, far = plan(None), plan(60.0), plan(3000.0)
    # near the end the energy lasts at full rate: as with no plan
    assert near.predicted["supply_w"] == pytest.approx(free.predicted["supply_w"])
    assert near.caps == free.caps
    # far from it, the battery counts for BATTERY_PLAN_RATE x its energy spread to the end
    allowance = BATTERY_PLAN_RATE * usable_j / 3000.0
    assert allowance < 700.0
    assert far.predicted["supply_w"] == pytest.approx(
        free.predicted["supply_w"] - 700.0 + allowance, abs=0.01)
    assert all(dv["cap_w"] is None for dv in free.devices.values())
    assert any(dv["cap_w"] is not None for dv in far.devices.values())  # lower classes capped
    assert far.battery_shave_above_w == free.battery_shave_above_w  # its loop still shaves
    # a battery at its floor counts for nothing, plan or not
    empty = BatteryView(0.2, 150.0, 250.0, 700.0)
    v = view(rack, 1.3, battery=empty)
    v.battery_last_s = 60.0
    a = Allocator(rack).allocate(v, Policy(), Memory())
    b = Allocator(rack).allocate(view(rack, 1.3, battery=empty), Policy(), Memory())
    assert a.predicted["supply_w"] == b.predicted["supply_w"]


def test_an_operator_pin_fixes_a_converter_and_the_others_share_the_rest() -> None:
    al = Allocator(SMALL)
    pol = Policy().changed({"node_output_w": {"2": 150.0, "4": 0.0}}, None, None,
                           {str(n.id): n.rating_w for n in SMALL.nodes})
    a = al.allocate(view(SMALL, 1.0), pol, Memory())
    assert a.ok and not a.fallback
    assert a.nodes[2]["share_w"] == pytest.approx(150.0, abs=0.5)
    assert a.vref[4] is None and "pinned" in a.nodes[4]["why"]
    total = sum(n["share_w"] for n in a.nodes.values())
    assert total == pytest.approx(sum(d.p_nom_w for d in SMALL.devices) * 1.0
                                  + a.predicted["loss_distribution_w"], rel=1e-3)
    assert [f["id"] for f in a.flows] == ["A-B", "B-C", "C-D", "D-A"]
    assert a.flows[3]["current_a"] == 0.0 and not a.flows[3]["closed"]


def test_the_largest_joint_jump_is_remembered_for_its_memory_and_kept_in_reserve() -> None:
    """Devices that jump together (a synchronous job) are covered after the first time: the
    controller keeps the largest one-period rise of the devices' total for jump_memory_s and
    the allocator keeps converters on for it; after the memory it is forgotten."""
    from powerflow.control.controller import DeviceObs, RackController

    rack = load_rack(ROOT / "examples" / "racks" / "small.toml")
    ctrl = RackController(rack)
    ctrl.set_policy({"jump_memory_s": 100.0})
    ids = [dv.id for dv in rack.devices]
    low = {d: DeviceObs(90.0, 0.1) for d in ids}
    high = {d: DeviceObs(290.0 if d.startswith("gpu") else 90.0, 0.9) for d in ids}
    t = 0.0
    for obs in [low] * 5 + [high] * 3 + [low] * 3 + [high] + [low] * 2:
        ctrl._forecast(t, obs)
        t += 1.0
    assert ctrl.jump_w() == pytest.approx(800.0)  # four GPUs, +200 W each, in one period
    for _ in range(120):
        ctrl._forecast(t, low)
        t += 1.0
    assert ctrl.jump_w() == 0.0  # forgotten after its memory


def test_shedding_keeps_supply_for_every_paused_device_coming_back_at_once() -> None:
    """Devices kept room for a pause (a hint's or a learnt one) come back together when it
    ends: the converters kept on carry all of them rising to their ceilings, not only the
    largest one's jump. Before, four paused GPUs on small-pod left two converters on (1,200 W)
    for a return to 1,527 W; with the host late, two converters at their current limit let
    the bus fall far under the band, where with no controller all four would run."""
    rack = load_rack(ROOT / "examples" / "racks" / "small-pod.toml")
    rating = {n.id: n.rating_w for n in rack.nodes}

    def pod(paused: bool) -> RackView:
        v = view(rack, 0.3)
        for dv, d in zip(v.devices, rack.devices, strict=True):
            if d.id.startswith("gpu"):
                dv.mean_w, dv.upper_w = 113.0, 118.0
                dv.room_w = 128.0 if paused else None
            else:
                dv.mean_w = d.p_min_w + 0.3 * (d.p_max_w - d.p_min_w)
                dv.upper_w = dv.mean_w * 1.05
        return v

    def carried(a) -> float:
        return sum(rating[i] for i, v in a.vref.items() if v is not None)

    v = pod(paused=True)
    back = sum(d.p_max_w - 113.0 for d in rack.devices if d.id.startswith("gpu"))
    a = Allocator(rack).allocate(v, Policy(), Memory())
    assert carried(a) >= sum(dv.upper_w for dv in v.devices) + back
    # no pause known: one device's jump is the reserve, and light load sheds further
    b = Allocator(rack).allocate(pod(paused=False), Policy(), Memory())
    assert carried(b) < carried(a)


def test_supply_readied_for_a_hinted_start_turns_converters_on_but_caps_nothing() -> None:
    """A job hinted to start soon (DeviceView.ready_w) is carried by the converters kept on,
    but nothing is capped for it before it draws: caps follow the forecast. Before, the
    readied watts were folded into the forecast bound, and lower classes were capped for
    the half-minute before each hinted start (bench/RESULTS.md, what prediction buys)."""
    rack = load_rack(ROOT / "examples" / "racks" / "small-pod.toml")
    gpus = [d.id for d in rack.devices if d.id.startswith("gpu")]

    def pod(ready: bool, as_forecast: bool) -> RackView:
        v = view(rack, 0.8)
        for dv in v.devices:
            if dv.id in gpus and ready:
                if as_forecast:
                    dv.upper_w = 300.0
                else:
                    dv.ready_w = 300.0
        return v

    def running(a) -> int:
        return sum(v is not None for v in a.vref.values())

    def capped(a) -> list[str]:
        return [d for d, dv in a.devices.items() if dv["cap_w"] is not None]

    quiet = Allocator(rack).allocate(pod(False, False), Policy(), Memory())
    ready = Allocator(rack).allocate(pod(True, False), Policy(), Memory())
    folded = Allocator(rack).allocate(pod(True, True), Policy(), Memory())
    assert capped(quiet) == [] and capped(ready) == []
    assert capped(folded)  # what folding the readiness into the bound did
    assert running(ready) > running(quiet)
    # the converters on can carry the readied start
    on = [n for n in rack.nodes if ready.vref[n.id] is not None]
    need = sum(dv.upper_w for dv in pod(False, False).devices if dv.id not in gpus) + 300.0 * 4
    assert sum(n.rating_w for n in on) >= need


def test_room_a_hint_frees_goes_to_lower_classes_and_never_caps_the_device_itself() -> None:
    """DeviceView.room_w (HintBook.room): while lower classes are capped, a device a hint
    says stays low is kept only that room, and the rest goes to the classes below; the
    device itself is not capped, so a hint that proves wrong does not hold its job back."""
    rack = load_rack(ROOT / "examples" / "racks" / "small-pod.toml")
    prio = {d.id: d.priority for d in rack.devices}
    p1 = [d for d in prio if prio[d] == 1]
    demand = {d.id: d.p_max_w * 0.9 for d in rack.devices}
    for d in p1:
        demand[d] = 110.0  # the job's GPUs in a checkpoint

    def plan(room: float | None):
        v = view(rack, demand=demand)
        for dv in v.devices:
            dv.upper_w = dv.mean_w
            if dv.id in p1:
                dv.room_w = room
        return Allocator(rack).allocate(v, Policy(), Memory())

    kept, freed = plan(None), plan(125.0)
    below = [d for d in prio if prio[d] > 1]
    capped = [d for d in below if kept.devices[d]["cap_w"] is not None]
    assert capped  # the feed is short: lower classes are capped in both
    for d in p1:
        assert kept.devices[d]["cap_w"] is None and freed.devices[d]["cap_w"] is None
    # the 2 x (300 - 125) W the pause frees is given below, and no lower cap is lower
    given = sum(freed.devices[d]["cap_w"] or prio_max(rack, d) for d in below)
    before = sum(kept.devices[d]["cap_w"] or prio_max(rack, d) for d in below)
    assert given == pytest.approx(before + 2 * (300.0 - 125.0), rel=0.02)
    for d in below:
        assert (freed.devices[d]["cap_w"] or 1e9) >= (kept.devices[d]["cap_w"] or 1e9) - 1e-6


def prio_max(rack, device: str) -> float:
    return next(d.p_max_w for d in rack.devices if d.id == device)
