"""The one dispatcher, as a pure function of an allocation, the previous one and what each
node holds: make before break, the setpoint dead band, leases left to renewal, ports from
what the node reports, unreachable nodes left alone."""

from __future__ import annotations

from powerflow.control.allocate import Allocation
from powerflow.control.dispatch import SETPOINT_DEADBAND_V, Dispatcher
from powerflow.control.rackio import Commanded
from powerflow.model.rack import load_rack
from tests.conftest import ROOT

RACK = load_rack(ROOT / "examples" / "racks" / "small.toml")
TIES = [k for k, b in enumerate(RACK.branches) if b.port is not None]


def plan(vref: dict[int, float | None], closed: list[bool] | None = None) -> Allocation:
    return Allocation(t=0.0, vref=vref, closed=closed or [b.closed for b in RACK.branches],
                      caps={"gpu0": 300.0}, battery_w=0.0, battery_shave_above_w=None,
                      ok=True, fallback=False, reason="test", predicted={}, nodes={},
                      devices={})


def holding(vout: dict[int, float | None], off: set[int] = frozenset(), ports: int = 0,
            offline: set[int] = frozenset()) -> dict[int, Commanded]:
    return {n.id: Commanded(online=n.id not in offline, vout=vout.get(n.id),
                            off_leased=n.id in off, port_state=ports, vout_max=n.vout_max)
            for n in RACK.nodes}


def test_a_converter_goes_off_only_when_two_plans_agree() -> None:
    dsp = Dispatcher(RACK)
    on = {n.id: 12.2 for n in RACK.nodes}
    assert dsp.commands(plan(on), holding(on)).setpoints == {}  # nothing changes
    shed = {**on, 4: None}
    assert 4 not in dsp.commands(plan(shed), holding(on)).setpoints  # held on
    assert dsp.commands(plan(shed), holding(on)).setpoints == {4: None}  # agreed: off
    # an off already leased is the lease renewal's to keep
    assert dsp.commands(plan(shed), holding({**on, 4: None}, off={4})).setpoints == {}


def test_a_shed_converter_goes_into_standby_and_its_standby_is_kept_by_renewal() -> None:
    """A converter the plan sheds with a standby goes off held ready (Commands.standby);
    one already off in that standby is left to the lease renewal; a plain off the plan now
    wants ready, or a standby at another wake level, is sent again."""
    dsp = Dispatcher(RACK)
    on = {n.id: 12.2 for n in RACK.nodes}
    shed = plan({**on, 4: None})
    shed.standby = {4: (12.0, 11.64)}
    dsp.commands(shed, holding(on))  # the first plan that sheds it: held on
    cmds = dsp.commands(shed, holding(on))
    assert cmds.setpoints == {4: None} and cmds.standby == {4: (12.0, 11.64)}

    def held(sb: tuple[float, float] | None) -> dict[int, Commanded]:
        h = holding({**on, 4: None}, off={4})
        h[4] = Commanded(online=True, vout=None, off_leased=True, port_state=0,
                         vout_max=h[4].vout_max, standby=sb)
        return h

    assert dsp.commands(shed, held((12.0, 11.64))).setpoints == {}
    again = dsp.commands(shed, held(None))
    assert again.setpoints == {4: None} and again.standby == {4: (12.0, 11.64)}
    moved = dsp.commands(shed, held((12.0, 11.5)))
    assert moved.standby == {4: (12.0, 11.64)}
    plain = plan({**on, 4: None})  # off for another reason: plainly off
    cmds = dsp.commands(plain, held((12.0, 11.64)))
    assert cmds.setpoints == {4: None} and cmds.standby == {}


def test_small_changes_are_not_sent_and_setpoints_are_capped() -> None:
    dsp = Dispatcher(RACK)
    on = {n.id: 12.2 for n in RACK.nodes}
    small = {**on, 1: 12.2 + SETPOINT_DEADBAND_V / 2, 2: 12.25, 3: 99.0}
    sp = dsp.commands(plan(small), holding(on)).setpoints
    assert sp == {2: 12.25, 3: RACK.nodes[2].vout_max}


def test_unreachable_nodes_get_nothing_and_ports_follow_what_nodes_report() -> None:
    dsp = Dispatcher(RACK)
    on = {n.id: 12.2 for n in RACK.nodes}
    closed = [b.closed for b in RACK.branches]
    for k in TIES:
        closed[k] = True
    cmds = dsp.commands(plan({**on, 2: 12.3}, closed), holding(on, ports=0, offline={2}))
    assert 2 not in cmds.setpoints
    want = {RACK.branches[k].port for k in TIES if RACK.branches[k].port[0] != 2}
    assert want
    assert set(cmds.ports) == want and all(cmds.ports.values())
    # the nodes report them closed already: nothing to send
    again = dsp.commands(plan(on, closed), holding(on, ports=0xFF))
    assert again.ports == {} and again.caps == {"gpu0": 300.0}


def test_power_smoothing_in_the_policy_is_commanded_to_every_device() -> None:
    from powerflow.control.controller import RackController

    rack = load_rack(ROOT / "examples" / "racks" / "small.toml")
    ctrl = RackController(rack)
    ctrl.set_policy({"smoothing_up_w_per_s": 100.0, "smoothing_down_w_per_s": 60.0})
    a = ctrl.preview(0.0, {}, None, 0.0)
    cmds = Dispatcher(rack).commands(a, {})
    assert cmds.ramps == {dv.id: (100.0, 60.0) for dv in rack.devices}
    ctrl.set_policy({"smoothing_up_w_per_s": 0.0, "smoothing_down_w_per_s": 0.0})
    assert Dispatcher(rack).commands(ctrl.preview(0.0, {}, None, 0.0), {}).ramps == {}
