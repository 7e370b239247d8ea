"""The host's one service: what the native API, Redfish, the metrics and the dashboard read and
change, over the node manager, the telemetry store and the control loop.

Every change an operator can make goes through here, once: the policy (validated, and a pin
kept only if the allocation it leads to passes the allocator's check, else nothing changes),
manual setpoints (only while the control loop is paused), fault clearing (which re-admits a
quarantined node), the control loop on/off (with its alarm), fault injection into an emulated
rack, and agent samples. Errors are `ServiceError`s by kind; each API words them its own way.
Units: W, V, s (Unix time for instants).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pfproto.names import fault_bits
from powerflow.adapters.devices import AgentDevices
from powerflow.control.alarms import Alarm
from powerflow.control.allocate import Allocation
from powerflow.control.hints import HintError
from powerflow.control.loop import ControlLoop
from powerflow.control.policy import Policy, PolicyError
from powerflow.control.supervisor import Measured
from powerflow.emulator.faults import EmulatedRackFaults, Fault, apply_fault
from powerflow.link.session import CommandError
from powerflow.manager import NodeManager, NodeState, NodeUnavailable
from powerflow.model.rack import Device, Rack
from powerflow.store import TelemetryStore


class ServiceError(Exception):
    """A request the service refuses; the subclass says why, the message what."""


class NotFound(ServiceError):
    """No such node, device, metric or allocation."""


class Conflict(ServiceError):
    """Not possible in the present state (no control loop, the loop owns setpoints, ...)."""


class Invalid(ServiceError):
    """The values asked for are not acceptable (out of range, unknown policy field, ...)."""


class NodeTimeout(ServiceError):
    """The node did not answer the command in time."""


class HostService:
    """One rack's host: its nodes, telemetry, control loop and (when emulated) the emulator."""

    def __init__(self, manager: NodeManager, store: TelemetryStore,
                 control: ControlLoop | None = None, emulator: EmulatedRackFaults | None = None,
                 agents: AgentDevices | None = None) -> None:
        self.manager = manager
        self.store = store
        self.control = control
        self.emulator = emulator
        self.agents = agents

    @property
    def rack(self) -> Rack:
        return self.manager.rack

    # ---- the control loop ----------------------------------------------------------------
    def loop(self) -> ControlLoop:
        """The control loop; Conflict when the host runs without one."""
        if self.control is None:
            raise Conflict("this host runs without its control loop (powerflow run --no-control)")
        return self.control

    @property
    def has_control(self) -> bool:
        return self.control is not None

    @property
    def period_s(self) -> float:
        """The control period (s), or 1 s without a control loop."""
        return self.control.ctrl.policy.period_s if self.control is not None else 1.0

    def control_state(self) -> dict[str, Any]:
        c = self.loop()
        cyc = c.ctrl.cycle_ms[-300:]
        sup = c.ctrl.supervisor
        return {"enabled": c.enabled, "periods": c.periods, "period_s": c.ctrl.policy.period_s,
                "dispatch_errors": c.dispatch_errors, "safe_mode": sup.safe,
                "safe_mode_why": sup.why if sup.safe else None, "safe_mode_trips": sup.trips,
                "late_periods": c.ctrl.late_periods, "max_late_s": round(c.max_late_s, 3),
                "verdicts": c.ctrl.health.verdicts,
                "cycle_ms_last": cyc[-1] if cyc else None,
                "cycle_ms_max_recent": max(cyc) if cyc else None}

    def set_control(self, enabled: bool) -> dict[str, Any]:
        """Pause (the setpoints become the operator's, with an alarm) or resume the loop."""
        c = self.loop()
        if c.enabled and not enabled:
            c.ctrl.alarms.set(time.time(), "control_paused", "warning",
                              "the control loop is paused: setpoints are the operator's")
        elif enabled and not c.enabled:
            c.ctrl.alarms.clear(time.time(), "control_paused", "the control loop resumed")
        c.enabled = enabled
        return self.control_state()

    def measured(self) -> Measured | None:
        """The bus as the nodes measured it at the last period (fresh readings only)."""
        return self.control.ctrl.measured if self.control is not None else None

    def safe_mode(self) -> bool:
        return self.control is not None and self.control.ctrl.supervisor.safe

    def allocation(self) -> Allocation | None:
        """The allocation of the last period, or None (no loop, or no period yet)."""
        return self.control.ctrl.last if self.control is not None else None

    def last_allocation(self) -> Allocation:
        a = self.loop().ctrl.last
        if a is None:
            raise NotFound("no allocation yet: the loop has not run a period")
        return a

    def preview(self) -> Allocation:
        """The next allocation from the present forecasts, not applied (pure)."""
        return self.loop().preview()

    def forecasts(self) -> dict[str, dict[str, Any]]:
        """Per device: mean (W) and P95 (W, None where unbounded) per horizon (s), the model
        chosen per horizon, and whether its input is stale."""
        c = self.loop()
        return {dev: {"mean_w": dict(f.mean_w),
                      "p95_w": {h: (v if v != float("inf") else None)
                                for h, v in f.upper_w.items()},
                      "model": dict(f.model), "stale": f.stale}
                for dev, f in c.ctrl.forecasts.items()}

    def hints(self) -> list[dict[str, Any]]:
        """The job hints in force (expired ones dropped), by start."""
        return [h.as_dict() for h in self.loop().ctrl.hints.listing(time.time())]

    def add_hint(self, kind: str, job: str, devices: list[str] | None, at: float | None,
                 in_s: float | None, watts: float | None, duration_s: float | None
                 ) -> dict[str, Any]:
        """A scheduler's hint (see `control.hints`): Invalid says why one is refused, and
        then nothing is stored."""
        book = self.loop().ctrl.hints
        now = time.time()
        if at is not None and in_s is not None:
            raise Invalid("hint: give the time as at (Unix time) or in_s (from now), not both")
        when = at if at is not None else now + (in_s or 0.0)
        # what each kind of hint takes: the fields it needs, and those it must not have
        needs = {"start": ("devices", "duration_s"), "end": (),
                 "pause": ("watts", "duration_s")}[kind]
        refuses = {"start": (), "end": ("devices", "watts", "duration_s"),
                   "pause": ("devices",)}[kind]
        given = {"devices": devices, "watts": watts, "duration_s": duration_s}
        for name in needs:
            if given[name] is None:
                raise Invalid(f"hint: field '{name}': a {kind} hint needs it")
        for name in refuses:
            if given[name] is not None:
                raise Invalid(f"hint: field '{name}': a {kind} hint names the job, not this")
        try:
            if kind == "end":
                return book.end(now, job, when).as_dict()
            assert duration_s is not None
            if kind == "pause":
                assert watts is not None
                return book.pause(now, job, when, duration_s, watts).as_dict()
            assert devices is not None
            return book.start(now, job, devices, when, watts, duration_s).as_dict()
        except HintError as e:
            raise Invalid(str(e)) from None

    def alarms(self) -> list[Alarm]:
        """The active alarms, most severe first (none without a control loop)."""
        return self.control.ctrl.alarms.listing() if self.control is not None else []

    def node_verdict(self, node_id: int) -> tuple[str, str] | None:
        """The health judge's (state, why) for a node: state is ok, suspect or quarantined."""
        if self.control is None:
            return None
        h = self.control.ctrl.health.nodes[node_id]
        return h.state, h.why

    # ---- policy ------------------------------------------------------------------------
    def policy(self) -> Policy:
        return self.loop().ctrl.policy

    def profiles(self) -> list[str]:
        return sorted(self.loop().ctrl.profiles)

    def set_policy(self, changes: dict[str, Any]) -> Policy:
        """Change policy fields (or `{"profile": NAME}`); Invalid leaves it as it was."""
        if not changes:
            raise Invalid("give the policy fields to change, or {\"profile\": NAME}")
        try:
            return self.loop().ctrl.set_policy(changes)
        except PolicyError as e:
            raise Invalid(str(e)) from None

    def pin_node_output(self, node_id: int, watts: float | None) -> Policy:
        """Pin a converter's output (W), or hand it back to the allocator (None). The pin is
        kept only if the allocation it leads to passes the allocator's load-flow check;
        otherwise Conflict and the policy is as it was."""
        self.node_state(node_id)
        pins = dict(self.loop().ctrl.policy.node_output_w)
        if watts is None:
            pins.pop(str(node_id), None)
        else:
            pins[str(node_id)] = watts
        return self._adopt_checked({"node_output_w": pins})

    def pin_tie(self, branch: str, closed: bool | None) -> Policy:
        """Pin a tie switch closed or open (None: hand it back to the allocator), kept only if
        the allocation it leads to passes the load-flow check (Conflict otherwise)."""
        ties = dict(self.loop().ctrl.policy.tie_override)
        if closed is None:
            ties.pop(branch, None)
        else:
            ties[branch] = closed
        return self._adopt_checked({"tie_override": ties})

    def _adopt_checked(self, changes: dict[str, Any]) -> Policy:
        """A policy change adopted only if the allocation it leads to passes the check."""
        c = self.loop()
        try:
            candidate = c.ctrl.candidate_policy(changes)
        except PolicyError as e:
            raise Invalid(str(e)) from None
        trial = c.preview(candidate)
        if not trial.ok or trial.fallback:
            raise Conflict(f"the allocator's check refuses it: {trial.reason}")
        c.ctrl.adopt_policy(candidate)
        return candidate

    def set_device_limit(self, device: str, watts: float | None) -> Policy:
        """An operator's power limit for a device (W, within its range), or None to lift it."""
        dev = self.device(device)
        if watts is not None and not dev.p_min_w <= watts <= dev.p_max_w:
            raise Invalid(f"{watts!r} W is outside {device}'s {dev.p_min_w}..{dev.p_max_w} W")
        limits = dict(self.loop().ctrl.policy.p_max_w)
        if watts is None:
            limits.pop(device, None)
        else:
            limits[device] = float(watts)
        return self.set_policy({"p_max_w": limits})

    def device_limit(self, device: str) -> float | None:
        """The operator's limit for a device (W), None when it has none."""
        return self.control.ctrl.policy.p_max_w.get(device) if self.control is not None else None

    def node_output_pin(self, node_id: int) -> float | None:
        if self.control is None:
            return None
        return self.control.ctrl.policy.node_output_w.get(str(node_id))

    def device_cap(self, device: str) -> float | None:
        """The power cap in force for a device (W): the allocator's or the operator's limit,
        whichever is lower; None when uncapped."""
        if self.control is None:
            return None
        a = self.allocation()
        vals = [v for v in ((a.caps.get(device) if a is not None else None),
                            self.device_limit(device)) if v is not None]
        return min(vals) if vals else None

    # ---- the rack ------------------------------------------------------------------------
    def device(self, device: str) -> Device:
        for dv in self.rack.devices:
            if dv.id == device:
                return dv
        raise NotFound(f"no device {device!r} in rack {self.rack.name}")

    def node_state(self, node_id: int) -> NodeState:
        ns = self.manager.nodes.get(node_id)
        if ns is None:
            raise NotFound(f"node {node_id} is not in rack {self.rack.name}")
        return ns

    def node_states(self) -> list[NodeState]:
        """Every node's link state, HELLO and latest telemetry, in rack order."""
        return list(self.manager.nodes.values())

    def exclusion(self, node_id: int) -> dict[str, Any]:
        """Whether the control loop has the node out of the plan, why, since when."""
        if self.control is None:
            return {"excluded": False, "excluded_why": None, "excluded_since": None}
        return self.control.ctrl.exclusion(node_id)

    def status(self) -> dict[str, Any]:
        m = self.manager
        return {"rack": m.rack.name, "uptime_s": time.time() - m.started,
                "nodes": len(m.nodes),
                "online": sum(1 for n in m.nodes.values() if n.state == "online"),
                "stored_rows": self.store.acked, "emulated": self.emulator is not None}

    def nodes(self) -> list[dict[str, Any]]:
        """Every node's row (link state, measurements) with its exclusion."""
        return [{**row, **self.exclusion(row["id"])} for row in self.manager.snapshot()]

    def node(self, node_id: int) -> dict[str, Any]:
        ns = self.node_state(node_id)
        return {**ns.summary(), **self.exclusion(node_id), "telemetry": ns.telemetry,
                "hello": ns.hello, "events": ns.events[-20:]}

    def faults(self) -> list[dict[str, Any]]:
        """Nodes with latched faults, warnings, a lost link, or taken out of the plan."""
        a = self.allocation()
        out = []
        for nid, ns in self.manager.nodes.items():
            t = ns.telemetry
            latched = fault_bits(int(t.get("FAULTS") or 0))
            warns = fault_bits(int(t.get("WARNINGS") or 0))
            why = a.nodes.get(nid, {}).get("why", "") if a is not None else ""
            if latched or warns or ns.state != "online" or why.startswith("unavailable"):
                out.append({"node": nid, "state": ns.state, "latched": latched,
                            "warnings": warns, "allocator": why,
                            "status_word": t.get("STATUS_WORD")})
        return out

    def node_mode(self, node_id: int) -> int | None:
        mode = self.node_state(node_id).telemetry.get("MODE")
        return mode if isinstance(mode, int) else None

    def node_faults(self, node_id: int) -> int:
        """The node's latched FAULT_* bits (0 when none or not reported)."""
        return int(self.node_state(node_id).telemetry.get("FAULTS") or 0)

    # ---- history -------------------------------------------------------------------------
    def history(self, node: int, metric: str, since: float, until: float | None
                ) -> list[tuple[float, float]]:
        """(t, value) of one node's metric between two instants (s)."""
        self.node_state(node)
        self.store.flush()
        known = self.store.metrics(node)
        if metric not in known:
            raise NotFound(f"no metric {metric!r} for node {node}; known: "
                           f"{', '.join(sorted(known)) or 'none yet'}")
        return [(p.t, p.value) for p in self.store.query(node, metric, since, until)]

    def series(self, since: float, until: float | None, max_points: int
               ) -> dict[str, Any]:
        """What the control loop measured and predicted each period, per device and for the
        rack, between two instants (s), at most `max_points` per series."""
        if until is not None and until <= since:
            raise Invalid(f"until ({until}) must be after since ({since})")
        self.store.flush()
        until_ = time.time() if until is None else until
        step, sources = self.store.query_series(since, until_, max_points)
        return {"since": since, "until": until_, "bucket_s": step, "sources": sources}

    def events(self, since: float) -> list[dict[str, Any]]:
        self.store.flush()
        return [{"t": t, "node": n, "kind": k, "detail": dt}
                for t, n, k, dt in self.store.recent_events(since)]

    def audit(self, since: float) -> list[dict[str, Any]]:
        return [{"t": t, "who": w, "role": r, "method": m, "path": p, "body": b, "status": st}
                for t, w, r, m, p, b, st in self.store.audit_log(since)]

    def record_audit(self, who: str, role: str, method: str, path: str, body: str,
                     status: int) -> None:
        self.store.audit(time.time(), who, role, method, path, body, status)

    def record_event(self, kind: str, detail: str, node: int | None = None) -> None:
        self.store.event(time.time(), node, kind, detail)

    # ---- node commands -------------------------------------------------------------------
    def _manual_allowed(self) -> None:
        if self.control is not None and self.control.enabled:
            raise Conflict("the control loop owns the setpoints while it runs: pause it first "
                           "(`powerflow control pause`, or PUT /api/v1/control "
                           "{\"enabled\": false})")

    async def _node_call(self, call: Callable[[], Any]) -> dict[str, Any]:
        try:
            return await call()  # type: ignore[no-any-return]
        except NodeUnavailable as e:
            raise (NotFound if "not in rack" in str(e) else Conflict)(str(e)) from None
        except ValueError as e:
            raise Invalid(str(e)) from None
        except CommandError as e:
            raise (Conflict if e.result is not None else NodeTimeout)(f"node: {e}") from None

    async def set_output(self, node_id: int, vout: float | None, on: bool | None
                         ) -> dict[str, Any]:
        """A manual setpoint (V) or output on/off, only while the control loop is paused."""
        self.node_state(node_id)  # an unknown node is 404 whatever the loop does
        if vout is None and on is None:
            raise Invalid("give vout, on, or both")
        self._manual_allowed()
        return await self._node_call(lambda: self.manager.set_output(node_id, vout, on))

    async def set_port(self, node_id: int, port: int, close: bool) -> dict[str, Any]:
        """Open or close a node's mesh port. While the control loop runs, a port that is a
        tie's switch is pinned through the policy instead (`tie_override`, checked by the
        allocator, which then switches it make-before-break); other ports need a pause."""
        self.node_state(node_id)
        tie = next((b.id for b in self.rack.branches if b.port == (node_id, port)), None)
        if self.control is not None and self.control.enabled and tie is not None:
            self.pin_tie(tie, close)
            return {"node": node_id, "port": port, "closed": close, "pinned_tie": tie}
        self._manual_allowed()
        return await self._node_call(lambda: self.manager.set_port(node_id, port, close))

    async def clear_faults(self, node_id: int) -> dict[str, Any]:
        """Clear a node's latched faults; the operator vouches for it, so the allocator may
        use it again (one node a period)."""
        out = await self._node_call(lambda: self.manager.clear_faults(node_id))
        if self.control is not None:
            self.control.ctrl.release_quarantine(node_id)
        return out

    # ---- the emulator and agents ---------------------------------------------------------
    def inject_fault(self, fault: Fault) -> dict[str, Any]:
        if self.emulator is None:
            raise Conflict("fault injection needs an emulated rack (powerflow run --emulate)")
        try:
            return apply_fault(self.emulator, fault, [dv.id for dv in self.rack.devices])
        except (KeyError, ValueError) as e:
            raise Invalid(str(e)) from None

    def agent_sample(self, device: str, power_w: float | None, utilisation: float | None
                     ) -> tuple[float | None, tuple[float | None, float | None]]:
        """A server agent's report of its device; returns the cap to apply (W) or None, and
        the power smoothing to apply ((up, down) W/s, None where none)."""
        self.loop()  # nothing would act on the samples without a control loop
        if self.agents is None:
            raise Conflict("no agent source: the host runs without its control loop")
        try:
            return self.agents.push(device, power_w, utilisation), self.agents.ramp(device)
        except ValueError as e:
            raise NotFound(str(e)) from None
