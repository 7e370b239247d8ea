"""Which converters the allocator may use, judged on evidence, never on an absence.

A converter that sources no current is not failed by that alone: a healthy one whose
reference sits under the bus (its ORing stage blocking) sources nothing either. The
evidence of a dead power stage is a converter *regulating* (CV) with its output clearly
under its own command and still no current: it is trying and cannot. Even that is only
judged on telemetry that is fresh (no older than a period), sampled after the command it
reports had time to act, and never while the host's own loop runs late.

States of one node:
- ok: in the plan;
- suspect: the evidence was seen once; out of the plan's shares, and *probed*: its
  reference is set a step above its measured bus, where a healthy converter must source
  current. Current flows -> ok again; the evidence again at the probe -> quarantined;
  no conclusive reading within PROBE_PERIODS -> ok (no verdict without evidence);
- quarantined: failed by that verdict; probed again after a backoff (BACKOFF_S, doubling
  up to BACKOFF_MAX_S) and re-admitted when the probe passes, or by the operator's
  clear-faults (re-admissions are staggered, one a period: make before break).

Apart from verdicts, a node is unavailable while its link is lost, it reports a latched
protection fault, or its telemetry is stale. Units: V, A, s.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from pfproto import defs as d
from powerflow.control.alarms import AlarmBook
from powerflow.control.readings import CONNECT_GRACE_S, Reading
from powerflow.model.rack import Node, Rack

EVIDENCE_PU = 0.01  # output under its own command by this (per unit of the bus) ...
I_MIN_FRAC = 0.02  # ... with less than this fraction of rated current: no delivery
PROBE_STEP_PU = 0.01  # a probe sets the reference this far above the measured bus ...
PROBE_MARGIN_PU = 0.25 * PROBE_STEP_PU  # ... and fails if it sources nothing this far above
SETTLE_S = 0.2  # a reading counts for a command sent at least this long before it ...
CMD_TOL_PU = 0.0025  # ... and within this of the one it reports (per unit of the bus)
PROBE_PERIODS = 3  # inconclusive probes before the suspicion is dropped
BACKOFF_S = 30.0  # first re-admission probe of a quarantined converter after this
BACKOFF_MAX_S = 480.0
STALE_PERIODS = 3  # telemetry older than this many periods: the node is unavailable


@dataclass
class NodeHealth:
    state: str = "ok"  # ok | suspect | quarantined
    why: str = ""  # why it is out of the plan ('' when it is in)
    since: float | None = None  # s (Unix time) since it has been out of the plan
    probes: int = 0  # probe periods of the present suspicion or re-admission probe
    backoff_s: float = BACKOFF_S
    retry_at: float = 0.0  # s: next re-admission probe of a quarantined node
    probing: bool = False  # a probe is out this period
    probe_vref: float | None = None  # V
    verdict: str = ""  # why it was quarantined
    lost_seen: int = 0  # link losses already alarmed


class HealthJudge:
    def __init__(self, rack: Rack, alarms: AlarmBook) -> None:
        self.rack = rack
        self.alarms = alarms
        self.nodes = {n.id: NodeHealth() for n in rack.nodes}
        self.dispatched: dict[int, tuple[float | None, float]] = {}  # node -> (vref, since)
        self.release_queue: deque[int] = deque()  # operator re-admissions, one per period
        self.verdicts = 0  # converters quarantined since start

    # ---- inputs from the loop ------------------------------------------------------------
    def dispatched_vref(self, node_id: int, vref: float | None, t: float) -> None:
        """Record what went out to a node (V, None = off), to know when readings settle.
        Trims smaller than CMD_TOL_PU keep the reading valid: the evidence is far larger."""
        prev = self.dispatched.get(node_id)
        tol = CMD_TOL_PU * self.rack.bus_voltage
        if prev is None or prev[0] is None or vref is None or abs(prev[0] - vref) > tol:
            self.dispatched[node_id] = (vref, t)
        else:
            self.dispatched[node_id] = (vref, prev[1])

    def operator_release(self, node_id: int) -> None:
        """clear-faults: the operator vouches for the node; re-admitted in turn."""
        if node_id not in self.release_queue:
            self.release_queue.append(node_id)

    # ---- the verdicts ----------------------------------------------------------------------
    def _settled(self, n: Node, r: Reading) -> bool:
        sent = self.dispatched.get(n.id)
        return (sent is not None and sent[0] is not None and r.cmd is not None
                and abs(r.cmd - sent[0]) <= CMD_TOL_PU * self.rack.bus_voltage
                and r.sampled_t >= sent[1] + SETTLE_S)

    def _no_delivery(self, n: Node, r: Reading, margin_pu: float = EVIDENCE_PU) -> bool:
        """The evidence: regulating, output clearly (`margin_pu`) under its command, and no
        current."""
        assert r.cmd is not None and r.vout is not None
        return (r.mode == d.MODE_CV and r.cmd - r.vout >= margin_pu * self.rack.bus_voltage
                and r.iout < I_MIN_FRAC * n.iout_max)

    def judge(self, t: float, readings: dict[int, Reading], late: bool, safe: bool,
              period_s: float) -> None:
        """One period's verdicts (updates each node's state, alarms and events)."""
        release = self.release_queue.popleft() if self.release_queue else None
        for n in self.rack.nodes:
            h = self.nodes[n.id]
            r = readings[n.id]
            h.probing = False
            if release == n.id and h.state != "ok":
                self._readmit(t, n.id, h, "the operator cleared its faults")
            verdict_ok = r.fresh and not late and r.vout is not None and self._settled(n, r)
            if h.state == "ok" and verdict_ok and self._no_delivery(n, r):
                h.state, h.probes = "suspect", 0
                self.alarms.event(t, "probe", f"regulating {r.cmd:.3f} V with its output at "
                                  f"{r.vout:.3f} V and {r.iout:.2f} A: out of the shares and "
                                  "probed", n.id)
                self._set_probe(h, r, safe)
            elif h.state in ("suspect", "quarantined") and (h.state == "suspect"
                                                            or t >= h.retry_at):
                self._probe(t, n, h, r, verdict_ok, safe)
        self._availability(t, readings, period_s)

    def _probe(self, t: float, n: Node, h: NodeHealth, r: Reading, verdict_ok: bool,
               safe: bool) -> None:
        # in safe mode the safe reference (the bus voltage) is the probe
        at_probe = verdict_ok and (safe or (h.probe_vref is not None and r.cmd is not None
                                            and abs(r.cmd - h.probe_vref) < 0.005))
        if at_probe and r.iout >= I_MIN_FRAC * n.iout_max:
            self.alarms.event(t, "probe", f"passed: {r.iout:.2f} A at {r.cmd:.3f} V", n.id)
            self._readmit(t, n.id, h, f"probe passed ({r.iout:.2f} A)")
            return
        if at_probe and self._no_delivery(n, r, PROBE_MARGIN_PU):
            h.backoff_s = (BACKOFF_S if h.state == "suspect"
                           else min(2 * h.backoff_s, BACKOFF_MAX_S))
            h.state, h.probes, h.probe_vref = "quarantined", 0, None
            h.retry_at = t + h.backoff_s
            self.verdicts += 1
            h.verdict = (f"unavailable: not delivering (no current at {r.cmd:.3f} V over a "
                     f"{r.vout:.3f} V bus); probed again in {h.backoff_s:.0f} s")
            self.alarms.event(t, "probe", f"failed: {r.iout:.2f} A at {r.cmd:.3f} V", n.id)
            return
        h.probes += 1
        if at_probe and r.vout is not None and h.probe_vref is not None:
            h.probe_vref = None  # the bus rose to the probe: probe again a step above it
        if h.state == "suspect" and h.probes > PROBE_PERIODS:
            self.alarms.event(t, "probe", "inconclusive: no verdict, back in the plan", n.id)
            self._readmit(t, n.id, h, "no evidence")
            return
        if h.state == "quarantined" and h.probes > PROBE_PERIODS:
            h.probes, h.probe_vref, h.retry_at = 0, None, t + h.backoff_s  # try again later
            return
        self._set_probe(h, r, safe)

    def _set_probe(self, h: NodeHealth, r: Reading, safe: bool) -> None:
        """A step above the bus it measures: a healthy converter must source current there.
        (In safe mode the safe reference, Node.safe_vout, is the probe.)"""
        if r.vout is None or safe:
            return
        if h.probe_vref is not None:  # one reference for the whole probe, so readings settle
            h.probing = True
            return
        vmax = 1.03 * self.rack.bus_voltage
        h.probe_vref = round(min(r.vout + PROBE_STEP_PU * self.rack.bus_voltage, vmax), 4)
        if h.probe_vref - r.vout < 0.5 * PROBE_STEP_PU * self.rack.bus_voltage:
            h.probe_vref = None  # the bus is at the top of the band: no room to probe
        h.probing = h.probe_vref is not None

    def _readmit(self, t: float, node_id: int, h: NodeHealth, how: str) -> None:
        if h.state == "quarantined":
            self.alarms.clear(t, "node_excluded", f"re-admitted: {how}", node_id)
        h.state, h.probes, h.probe_vref, h.backoff_s = "ok", 0, None, BACKOFF_S

    def _availability(self, t: float, readings: dict[int, Reading], period_s: float) -> None:
        """Why each node is out of the plan now (or ''), with its alarms."""
        for n in self.rack.nodes:
            h, r = self.nodes[n.id], readings[n.id]
            why, kind, sev = "", "", "major"
            if not r.online and r.connecting:
                # not lost: never yet heard, its link still opening (no alarm for it)
                why = "unavailable: connecting"
            elif not r.online and not r.heard:
                why, kind = (f"unavailable: never connected ({CONNECT_GRACE_S:.0f} s since "
                             "the host started)"), "link_lost"
            elif not r.online:
                why, kind = "unavailable: link lost", "link_lost"
            elif r.faults:
                why, kind = f"unavailable: latched fault {r.faults:#x}", "latched_fault"
            elif h.state == "quarantined":
                why, kind = h.verdict, "node_excluded"
            elif r.age_s > STALE_PERIODS * max(period_s, 1.0):
                why, kind, sev = "unavailable: telemetry stale", "stale_telemetry", "minor"
            elif h.state == "suspect":
                why = "suspect: probed" if h.probing else "suspect: awaiting a fresh reading"
            if not kind and r.lost_count > h.lost_seen:
                # lost and back between two periods: still an alarm, for one period
                kind, sev = "link_lost", "major"
                self.alarms.set(t, kind, sev, f"link lost and re-established "
                                              f"({r.lost_count} time(s) since start)", n.id)
            h.lost_seen = r.lost_count
            if r.online and r.mode == d.MODE_FAILSAFE:
                self.alarms.set(t, "failsafe", "major", "the node runs its failsafe (it lost "
                                "its lease or this host), not the plan", n.id)
            else:
                self.alarms.clear(t, "failsafe", "the node follows the plan again", n.id)
            for k in ("link_lost", "latched_fault", "node_excluded", "stale_telemetry"):
                if k != kind:
                    self.alarms.clear(t, k, node=n.id)
            if kind and not self.alarms.is_active(kind, n.id):
                self.alarms.set(t, kind, sev, why, n.id)
            if why and h.since is None:
                h.since = t
            elif not why:
                h.since = None
            h.why = why

    def excluded(self, node_id: int) -> tuple[bool, str, float | None]:
        """(out of the plan, why, since when) for the API."""
        h = self.nodes[node_id]
        return bool(h.why), h.why, h.since

    def proven_failed(self, node_id: int) -> bool:
        return self.nodes[node_id].state == "quarantined"
