"""The health judge and the supervisor, driven through their public calls with readings
as the node manager would hand them over (no I/O): verdicts need evidence, the back-biased
converter of the field report is never condemned, probes decide, quarantine backs off,
and the supervisor trips and recovers on measurements."""

from __future__ import annotations

from pfproto import defs as d
from powerflow.control.alarms import AlarmBook
from powerflow.control.controller import NodeObs, RackController
from powerflow.control.health import BACKOFF_MAX_S, BACKOFF_S, HealthJudge
from powerflow.control.readings import CONNECT_GRACE_S, START_GRACE_S, StartUp, reading
from powerflow.control.supervisor import Supervisor, measure
from powerflow.model.rack import load_rack
from tests.conftest import ROOT

RACK = load_rack(ROOT / "examples" / "racks" / "small.toml")
PERIOD = 1.0


def obs(cmd: float, vout: float, iout: float, mode: int = d.MODE_CV, age: float = 0.1,
        online: bool = True, faults: int = 0) -> NodeObs:
    return NodeObs(online, {"MODE": mode, "VOUT_COMMAND": cmd, "READ_VOUT": vout,
                            "READ_IOUT": iout, "FAULTS": faults}, age)


def healthy(v: float = 12.2) -> NodeObs:
    return obs(12.5, v, 25.0)


class Rig:
    """A judge with every node dispatched at `vref` since t = 0."""

    def __init__(self) -> None:
        self.alarms = AlarmBook()
        self.judge = HealthJudge(RACK, self.alarms)
        self.startup = StartUp(RACK)
        self.t = 100.0
        for n in RACK.nodes:
            self.judge.dispatched_vref(n.id, 12.5, 0.0)

    def period(self, nodes: dict[int, NodeObs], late: bool = False, safe: bool = False) -> None:
        self.t += PERIOD
        rd = self.startup.mark(self.t, {i: reading(o, self.t, PERIOD) for i, o in nodes.items()})
        self.judge.judge(self.t, rd, late, safe, PERIOD)
        for i, h in self.judge.nodes.items():  # what the loop would dispatch
            vref = h.probe_vref if h.probing else 12.5
            self.judge.dispatched_vref(i, vref, self.t)


def four(node3: NodeObs) -> dict[int, NodeObs]:
    return {1: healthy(), 2: healthy(), 3: node3, 4: healthy()}


def test_a_back_biased_converter_is_never_condemned() -> None:
    # the field report: reference a little under the bus, ORing blocking, no current
    r = Rig()
    for _ in range(20):
        r.period(four(obs(12.20, 12.24, 0.0)))
    assert r.judge.nodes[3].state == "ok" and not r.judge.nodes[3].why
    assert r.judge.verdicts == 0 and not r.alarms.active


def test_a_dead_stage_is_probed_then_quarantined() -> None:
    r = Rig()
    r.period(four(obs(12.5, 12.2, 0.0)))  # regulating 0.3 V under its command, no current
    h = r.judge.nodes[3]
    assert h.state == "suspect" and h.probing and h.why.startswith("suspect")
    assert h.probe_vref is not None and abs(h.probe_vref - (12.2 + 0.12)) < 1e-6
    # the reading at the probe (settled: sampled well after it went out) still shows nothing
    r.t += 1.0
    r.period(four(obs(h.probe_vref, 12.2, 0.0)))
    assert h.state == "quarantined" and "not delivering" in h.why
    assert r.alarms.is_active("node_excluded", 3) and r.judge.verdicts == 1
    assert [e.kind for e in r.alarms.drain()].count("probe") == 2  # suspicion, verdict


def test_a_probe_that_draws_current_clears_the_suspicion() -> None:
    r = Rig()
    r.period(four(obs(12.5, 12.2, 0.0)))
    h = r.judge.nodes[3]
    r.t += 1.0
    r.period(four(obs(h.probe_vref, 12.2, 8.0)))  # a step above its bus, it sources
    assert h.state == "ok" and not h.why and r.judge.verdicts == 0


def test_no_verdict_on_stale_or_unsettled_telemetry_or_in_a_late_period() -> None:
    for kwargs, nodes in (({"late": True}, four(obs(12.5, 12.2, 0.0))),
                          ({}, four(obs(12.5, 12.2, 0.0, age=1.5))),  # older than a period
                          ({}, four(obs(12.9, 12.2, 0.0)))):  # reports a command not yet ours
        r = Rig()
        for _ in range(5):
            r.period(nodes, **kwargs)
        assert r.judge.nodes[3].state == "ok", kwargs
        assert r.judge.verdicts == 0


def test_quarantine_backs_off_doubling_and_readmits_by_probe() -> None:
    r = Rig()
    r.period(four(obs(12.5, 12.2, 0.0)))
    h = r.judge.nodes[3]
    r.t += 1.0
    r.period(four(obs(h.probe_vref, 12.2, 0.0)))
    assert h.state == "quarantined" and h.backoff_s == BACKOFF_S
    backoffs = []
    for _ in range(6):  # each re-admission probe fails: the wait doubles, up to its cap
        r.t = h.retry_at
        r.period(four(obs(12.5, 12.2, 0.0)))  # due: a probe goes out
        assert h.probing
        r.t += 1.0
        r.period(four(obs(h.probe_vref, 12.2, 0.0)))
        backoffs.append(h.backoff_s)
    assert backoffs == [min(BACKOFF_S * 2 ** k, BACKOFF_MAX_S) for k in range(1, 7)]
    r.t = h.retry_at  # repaired: the next probe passes
    r.period(four(obs(12.5, 12.2, 0.0)))
    r.t += 1.0
    r.period(four(obs(h.probe_vref, 12.2, 9.0)))
    assert h.state == "ok" and not r.alarms.is_active("node_excluded", 3)


def test_operator_releases_are_one_a_period() -> None:
    r = Rig()
    for nid in (1, 2):
        r.judge.nodes[nid].state = "quarantined"
        r.judge.nodes[nid].retry_at = 1e12
        r.judge.nodes[nid].verdict = "unavailable: not delivering"
        r.judge.operator_release(nid)
    r.period({i: healthy() for i in (1, 2, 3, 4)})
    assert [r.judge.nodes[i].state for i in (1, 2)] == ["ok", "quarantined"]
    r.period({i: healthy() for i in (1, 2, 3, 4)})
    assert r.judge.nodes[2].state == "ok"


def test_supervisor_trips_on_a_measured_sag_and_recovers_on_agreement() -> None:
    book = AlarmBook()
    sup = Supervisor(RACK, book)
    t = 0.0

    def m(v: float, mode: int = d.MODE_CV):
        nodes = {i: obs(12.0, v, 20.0, mode) for i in (1, 2, 3, 4)}
        return measure({i: reading(o, t, PERIOD) for i, o in nodes.items()})

    assert not sup.tick(t, m(12.2))
    t += 0.25
    assert not sup.tick(t, m(7.0)), "one reading is not enough"
    assert book.is_active("bus_sag")
    t += 0.25
    assert sup.tick(t, m(7.0)) and sup.safe and book.is_active("safe_mode")
    for k in range(3):
        t += 1.0
        sup.tick(t, m(11.9))
        sup.period(t, m(11.9), 0.97, 1.03)
        assert sup.safe == (k < 2)
    assert not book.is_active("safe_mode") and not book.is_active("bus_sag")


def test_a_sag_between_two_looks_is_still_seen() -> None:
    """The latest reading is back in band, but a sample that arrived since the last look was
    under the brownout level (a short sag, or a host starved of CPU that looks late): the
    supervisor reports it, and the measured maximum is still the latest reading."""
    book = AlarmBook()
    sup = Supervisor(RACK, book)
    nodes = {i: obs(12.0, 12.1, 20.0) for i in (1, 2, 3, 4)}
    nodes[3].vout_low = 6.5
    m = measure({i: reading(o, 0.0, PERIOD) for i, o in nodes.items()})
    assert m.vmin == 6.5 and m.vmin_node == 3 and m.vmax == 12.1
    sup.tick(0.0, m)
    assert book.is_active("bus_sag")


def test_the_live_rack_hands_every_sample_to_one_look(tmp_path) -> None:
    """observe_nodes gives each look the lowest sample that arrived since the previous one,
    and a sample once looked at is not looked at again."""
    from powerflow.adapters.boards import BoardsIO
    from powerflow.link.transport import LinkAddress
    from powerflow.manager import NodeManager
    from powerflow.store import TelemetryStore

    addr = {n.id: LinkAddress.parse(f"tcp:127.0.0.1:{n.id}") for n in RACK.nodes}
    manager = NodeManager(RACK, addr, TelemetryStore(tmp_path / "t.sqlite3"))
    loop = BoardsIO(manager)
    ns = manager.nodes[1]
    ns.state, ns.telemetry, ns.telemetry_t = "online", {"READ_VOUT": 12.1}, 3.0
    ns.vout_samples.extend([(1.0, 12.0), (2.0, 6.0), (3.0, 12.1)])
    assert loop.observe_nodes()[1].vout_low == 6.0
    assert loop.observe_nodes()[1].vout_low is None  # nothing new
    ns.vout_samples.append((4.0, 11.0))
    assert loop.observe_nodes()[1].vout_low == 11.0


def test_the_controller_reports_measured_against_predicted_and_never_optimal_in_a_sag() -> None:
    ctrl = RackController(RACK)
    t = 1000.0
    sagging = {i: obs(12.0, 7.5, 50.0, d.MODE_CC) for i in (1, 2, 3, 4)}
    for _ in range(3):
        t += 1.0
        ctrl.supervise(t, sagging)
        a = ctrl.step(t, sagging, {})
    assert a.state == "safe" and a.fallback and a.measured["vmin"] == 7.5
    assert a.predicted["vmin"] > 11.0  # what the model predicts is not what is measured
    nodes = {n.id: n for n in RACK.nodes}  # each at its safe output (Node.safe_vout)
    assert all(a.nodes[i]["on"] and a.vref[i] == nodes[i].safe_vout(RACK.bus_voltage)
               for i in (1, 2, 3, 4))
    pinned = ctrl.set_policy({"node_output_w": {"2": 0}})
    assert pinned.node_output_w == {"2": 0.0}
    a = ctrl.step(t + 1.0, sagging, {})
    assert a.nodes[2]["on"] is False and "pinned out" in a.nodes[2]["why"]


def test_a_rack_not_yet_switched_on_is_not_a_sag_but_one_that_never_comes_up_is() -> None:
    """Start-up: nodes heard with their outputs still off (0 V, before the first command's
    soft-start) raise no bus_sag and no safe mode; once energised, a sag is judged at the
    next readings; a node still at 0 V after the grace is judged like any other."""
    off = obs(0.0, 0.0, 0.0, d.MODE_OFF)
    ctrl = RackController(RACK)
    t = 1000.0
    for _ in range(3):  # every node heard, none switched on yet
        t += 0.5
        assert not ctrl.supervise(t, {i: off for i in (1, 2, 3, 4)})
        a = ctrl.step(t, {i: off for i in (1, 2, 3, 4)}, {})
    assert not ctrl.alarms.is_active("bus_sag") and not ctrl.supervisor.safe
    # reported as measured (0 V), judged as not up yet: degraded, never optimal, no alarm
    assert a.state == "degraded" and a.measured["vmin"] == 0.0 and a.measured["readings"] == 4
    up = {i: healthy() for i in (1, 2, 3)} | {4: off}  # node 4 has not come up yet
    t += 0.5
    ctrl.supervise(t, up)
    a = ctrl.step(t, up, {})
    assert not ctrl.alarms.is_active("bus_sag") and a.measured["vmin"] == 0.0
    sag = {i: obs(12.0, 7.0, 20.0) for i in (1, 2, 3)} | {4: off}
    for _ in range(2):  # energised once: a sag now trips at once (debounced)
        t += 0.25
        ctrl.supervise(t, sag)
    assert ctrl.alarms.is_active("bus_sag") and ctrl.supervisor.safe

    ctrl = RackController(RACK)  # node 4 never comes up: judged once the grace is over
    t0 = t = 5000.0
    up = {i: healthy() for i in (1, 2, 3)} | {4: off}
    while t < t0 + START_GRACE_S - 0.5:
        t += 0.5
        ctrl.supervise(t, up)
    assert not ctrl.alarms.is_active("bus_sag")
    for _ in range(3):
        t += 0.5
        ctrl.supervise(t, up)
    assert ctrl.alarms.is_active("bus_sag") and "node 4" in ctrl.alarms.active[("bus_sag", None)].detail


def test_a_node_never_heard_is_connecting_then_never_connected_and_a_lost_one_is_lost() -> None:
    gone = NodeObs(False, {}, float("inf"))
    r = Rig()
    nodes = {1: healthy(), 2: healthy(), 3: gone, 4: healthy()}
    r.period(nodes)
    assert r.judge.nodes[3].why == "unavailable: connecting" and not r.alarms.active
    while r.t < r.startup.start_t + CONNECT_GRACE_S - PERIOD:
        r.period(nodes)
    assert not r.alarms.is_active("link_lost", 3)
    r.period(nodes)
    r.period(nodes)
    assert r.alarms.is_active("link_lost", 3) and "never connected" in r.judge.nodes[3].why

    r = Rig()  # heard once, then lost: at once, whatever the clock says
    r.period({i: healthy() for i in (1, 2, 3, 4)})
    r.period(nodes)
    assert r.alarms.is_active("link_lost", 3) and r.judge.nodes[3].why == "unavailable: link lost"
