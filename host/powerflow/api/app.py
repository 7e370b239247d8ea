"""The host's local HTTP JSON API (FastAPI). OpenAPI document at /openapi.json."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from powerflow import __version__
from powerflow.api.access import Access, Throttled
from powerflow.api.auth import Tokens
from powerflow.api.errors import COMMON_ERRORS, error_response, errors, install_errors
from powerflow.api.limits import MAX_BODY_BYTES, BodyLimit
from powerflow.api.sessions import DEFAULT_MAX_SESSIONS, DEFAULT_TIMEOUT_S, SessionStore
from powerflow.api.throttle import Lockout
from powerflow.adapters.devices import AgentDevices
from powerflow.control.loop import ControlLoop
from powerflow.emulator.faults import Fault, apply_fault
from powerflow.link.session import CommandError
from powerflow.manager import NodeManager, NodeUnavailable
from powerflow.store import TelemetryStore

PREFIX = "/api/v1"


class Strict(BaseModel):
    """A request body: a field the API does not know is refused (422), not ignored."""

    model_config = ConfigDict(extra="forbid", strict=True)


class SetpointRequest(Strict):
    vout: float | None = Field(None, gt=0, le=60, description="output voltage, V")
    on: bool | None = Field(None, description="output on (true) or off (false)")


class PortRequest(Strict):
    port: int = Field(ge=0, le=7)
    close: bool


class PolicyChange(BaseModel):
    """Policy fields to change (see GET /policy), or {"profile": NAME} to switch profile."""

    model_config = {"extra": "allow"}


class ControlState(Strict):
    enabled: bool = Field(description="false pauses the control loop (leases keep the last "
                                      "allocation until the operator takes over)")


class AgentSample(Strict):
    device: str
    power_w: float | None = Field(None, ge=0, le=1e6, description="device power now, W")
    utilisation: float | None = Field(None, ge=0, le=1, description="CPU/GPU utilisation, 0..1")


def create_app(manager: NodeManager, store: TelemetryStore, emulator: Any = None,
               control: ControlLoop | None = None, tokens: Tokens | None = None,
               agents: AgentDevices | None = None,
               session_timeout_s: float = DEFAULT_TIMEOUT_S,
               max_sessions: int = DEFAULT_MAX_SESSIONS,
               max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    app = FastAPI(title="PowerFlow host", version=__version__,
                  description="Rack controller API: nodes, commands, telemetry history, "
                              "forecasts, allocation and policy. Bearer tokens with a read "
                              "or operator role when the host runs with --tokens; every "
                              "write is audited. Failed authentications are throttled "
                              "(429 with Retry-After); request bodies are limited to "
                              f"{max_body_bytes} bytes (413).",
                  responses=COMMON_ERRORS)
    tokens = tokens or Tokens()

    def lockout(lk: Lockout) -> None:
        kind, value = lk.key
        store.event(time.time(), None, "auth_lockout",
                    f"{'client' if kind == 'addr' else 'user'} {value}: {lk.failures} failed "
                    f"authentications, locked out for {lk.seconds:.0f} s")

    access = Access(tokens, SessionStore(session_timeout_s, max_sessions),
                    on_lockout=lockout)
    app.state.access = access
    install_errors(app)

    @app.middleware("http")
    async def authorise(request: Request, call_next: Any) -> Response:
        path = request.url.path
        redfish = path.startswith("/redfish")
        write = request.method not in ("GET", "HEAD", "OPTIONS")
        if not (path.startswith(PREFIX) or path == "/metrics" or (redfish and write)):
            return await call_next(request)  # the dashboard's page, the OpenAPI document,
            #                                  Redfish reads (which authenticate themselves)
        # read before anything else (bounded by BodyLimit) so the handler can still read it
        raw = await request.body() if write else b""
        who = None
        if redfish:  # Redfish writes authenticate in their handlers; audited here
            resp = await call_next(request)
            who = getattr(request.state, "principal", None)
        else:
            try:
                who = access.authenticate(request)
            except Throttled as e:
                resp = error_response(429, str(e), {"Retry-After": str(e.retry_after)})
            else:
                if who is None:
                    resp = error_response(401, "a valid bearer token is needed "
                                               "(Authorization: Bearer SECRET)",
                                          {"WWW-Authenticate": "Bearer"})
                elif write and not who.may_write:
                    resp = error_response(403, f"token '{who.name}' is read-only: changes "
                                               "need an operator token")
                else:
                    request.state.principal = who
                    resp = await call_next(request)
        if write:
            # the body is stored only for an authenticated caller, as data, capped; a
            # handler may replace it (the Redfish login keeps the user name, never the
            # password)
            body = getattr(request.state, "audit_body", None)
            if body is None:
                body = raw.decode("utf-8", "replace") if who is not None else ""
            store.audit(time.time(), who.name if who else "-", who.role if who else "-",
                        request.method, path, body, resp.status_code)
        return resp

    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)

    from powerflow.api.redfish import install

    install(app, manager, store, access, control)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        from powerflow.api.metrics import exposition

        return Response(exposition(manager, control),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get(PREFIX + "/audit")
    def audit(since: float = 0.0) -> list[dict[str, Any]]:
        """Every write to this API: who, what, when, and the answer's status."""
        return [{"t": t, "who": w, "role": r, "method": m, "path": p, "body": b, "status": st}
                for t, w, r, m, p, b, st in store.audit_log(since)]

    @app.get(PREFIX + "/stream", response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "server-sent events, one `state` a period"}})
    async def stream(request: Request) -> StreamingResponse:
        """Server-sent events: `state` (nodes and the allocation) every period, `event` for
        each new node event."""

        async def gen() -> Any:
            since = time.time()
            while not await request.is_disconnected():
                a = control.ctrl.last.as_dict() if control and control.ctrl.last else None
                state = {"t": time.time(), "nodes": nodes(), "allocation": a,
                         "alarms": alarms(), "forecasts": _forecasts() if control else None}
                yield f"event: state\ndata: {json.dumps(state)}\n\n"
                store.flush()
                for t, n, k, dt in store.recent_events(since):
                    since = max(since, t + 1e-6)
                    yield f"event: event\ndata: {json.dumps({'t': t, 'node': n, 'kind': k, 'detail': dt})}\n\n"
                await asyncio.sleep(control.ctrl.policy.period_s if control else 1.0)

        return StreamingResponse(gen(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    def _forecasts() -> dict[str, Any]:
        assert control is not None
        return {d: {"mean_w": f.mean_w, "p95_w": {h: (v if v != float("inf") else None)
                                                  for h, v in f.upper_w.items()},
                    "model": f.model, "stale": f.stale}
                for d, f in control.ctrl.forecasts.items()}

    @app.get("/", include_in_schema=False)
    def dashboard() -> HTMLResponse:
        return HTMLResponse((Path(__file__).with_name("dashboard.html")).read_text())

    def loop() -> ControlLoop:
        if control is None:
            raise HTTPException(409, "this host runs without its control loop "
                                     "(powerflow run --no-control)")
        return control

    def manual_allowed() -> None:
        if control is not None and control.enabled:
            raise HTTPException(409, "the control loop owns the setpoints: pause it first "
                                     "(PUT /api/v1/control {\"enabled\": false})")

    def node_call_errors(e: Exception) -> HTTPException:
        if isinstance(e, NodeUnavailable):
            return HTTPException(404 if "not in rack" in str(e) else 409, str(e))
        if isinstance(e, ValueError):
            return HTTPException(422, str(e))
        if isinstance(e, CommandError):
            return HTTPException(409 if e.result is not None else 504, f"node: {e}")
        raise e

    @app.get(PREFIX + "/status")
    def status() -> dict[str, Any]:
        return {"rack": manager.rack.name, "uptime_s": time.time() - manager.started,
                "nodes": len(manager.nodes),
                "online": sum(1 for n in manager.nodes.values() if n.state == "online"),
                "stored_rows": store.acked, "emulated": emulator is not None}

    @app.get(PREFIX + "/rack")
    def rack() -> dict[str, Any]:
        """The rack's description: segments, nodes, tie switches, devices."""
        r = manager.rack
        return {"name": r.name, "bus_voltage": r.bus_voltage, "breaker_limit_w": r.breaker_limit_w,
                "segments": list(r.segments),
                "nodes": [{"id": n.id, "segment": n.segment, "rating_w": n.rating_w,
                           "position": list(n.position)} for n in r.nodes],
                "branches": [{"id": b.id, "from": b.from_, "to": b.to, "switch": b.switch,
                              "normally_closed": b.closed, "port": b.port} for b in r.branches],
                "devices": [{"id": d.id, "segment": d.segment, "priority": d.priority,
                             "p_min_w": d.p_min_w, "p_max_w": d.p_max_w} for d in r.devices]}

    def with_exclusion(row: dict[str, Any]) -> dict[str, Any]:
        """A node's row with whether the control loop has it out of the plan, and why."""
        if control is None:
            return {**row, "excluded": False, "excluded_why": None, "excluded_since": None}
        return {**row, **control.ctrl.exclusion(row["id"])}

    @app.get(PREFIX + "/nodes")
    def nodes() -> list[dict[str, Any]]:
        """Every node: link state, measurements, and `excluded` / `excluded_why` /
        `excluded_since` (out of the plan) and `telemetry_age_s`."""
        return [with_exclusion(row) for row in manager.snapshot()]

    @app.get(PREFIX + "/alarms")
    def alarms() -> list[dict[str, Any]]:
        """The active alarms, most severe first: kind, severity (critical, major, minor,
        warning), node (null for the rack), since (Unix time), detail."""
        if control is None:
            return []
        return [a.as_dict() for a in control.ctrl.alarms.listing()]

    @app.get(PREFIX + "/faults")
    def faults() -> list[dict[str, Any]]:
        """Nodes with latched faults, warnings, a lost link, or taken out of the plan."""
        from pfproto.names import fault_bits

        out = []
        for nid, ns in manager.nodes.items():
            t = ns.telemetry
            latched = fault_bits(int(t.get("FAULTS") or 0))
            warns = fault_bits(int(t.get("WARNINGS") or 0))
            plan = (control.ctrl.last.nodes.get(nid, {}) if control and control.ctrl.last
                    else {})
            why = plan.get("why", "")
            if latched or warns or ns.state != "online" or why.startswith("unavailable"):
                out.append({"node": nid, "state": ns.state, "latched": latched,
                            "warnings": warns, "allocator": why,
                            "status_word": t.get("STATUS_WORD")})
        return out

    @app.get(PREFIX + "/nodes/{node_id}", responses=errors(404))
    def node(node_id: int) -> dict[str, Any]:
        ns = manager.nodes.get(node_id)
        if ns is None:
            raise HTTPException(404, f"node {node_id} is not in rack {manager.rack.name}")
        return {**with_exclusion(ns.summary()), "telemetry": ns.telemetry, "hello": ns.hello,
                "events": ns.events[-20:]}

    @app.post(PREFIX + "/nodes/{node_id}/setpoint", responses=errors(404, 409, 504))
    async def setpoint(node_id: int, req: SetpointRequest) -> dict[str, Any]:
        if req.vout is None and req.on is None:
            raise HTTPException(422, "give vout, on, or both")
        manual_allowed()
        try:
            return await manager.set_output(node_id, req.vout, req.on)
        except (NodeUnavailable, ValueError, CommandError) as e:
            raise node_call_errors(e) from None

    @app.post(PREFIX + "/nodes/{node_id}/port", responses=errors(404, 409, 504))
    async def port(node_id: int, req: PortRequest) -> dict[str, Any]:
        manual_allowed()
        try:
            return await manager.set_port(node_id, req.port, req.close)
        except (NodeUnavailable, ValueError, CommandError) as e:
            raise node_call_errors(e) from None

    @app.post(PREFIX + "/nodes/{node_id}/clear-faults", responses=errors(404, 409, 504))
    async def clear(node_id: int) -> dict[str, Any]:
        try:
            out = await manager.clear_faults(node_id)
            if control is not None:  # the operator vouches for it: the allocator may use it
                control.ctrl.release_quarantine(node_id)
            return out
        except (NodeUnavailable, ValueError, CommandError) as e:
            raise node_call_errors(e) from None

    @app.get(PREFIX + "/history", responses=errors(404))
    def history(node: int, metric: str, since: float, until: float | None = None
                ) -> dict[str, Any]:
        if node not in manager.nodes:
            raise HTTPException(404, f"node {node} is not in rack {manager.rack.name}")
        store.flush()
        known = store.metrics(node)
        if metric not in known:
            raise HTTPException(404, f"no metric {metric!r} for node {node}; known: "
                                     f"{', '.join(sorted(known)) or 'none yet'}")
        pts = store.query(node, metric, since, until)
        return {"node": node, "metric": metric, "points": [[p.t, p.value] for p in pts]}

    @app.get(PREFIX + "/events")
    def events(since: float = 0.0) -> list[dict[str, Any]]:
        store.flush()
        return [{"t": t, "node": n, "kind": k, "detail": dt} for t, n, k, dt in
                store.recent_events(since)]

    # async: node processes restarted here must be children of the event-loop thread, which
    # lives as long as the host (they are set to die with the thread that started them)
    @app.post(PREFIX + "/emulator/faults", responses=errors(409))
    async def inject(req: Fault) -> dict[str, Any]:
        if emulator is None:
            raise HTTPException(409, "fault injection needs an emulated rack (powerflow run --emulate)")
        try:
            return apply_fault(emulator, req, [dv.id for dv in manager.rack.devices])
        except (KeyError, ValueError) as e:
            raise HTTPException(422, str(e)) from None

    @app.get(PREFIX + "/control", responses=errors(409))
    def control_state() -> dict[str, Any]:
        c = loop()
        cyc = c.ctrl.cycle_ms[-300:]
        sup = c.ctrl.supervisor
        return {"enabled": c.enabled, "periods": c.periods, "period_s": c.ctrl.policy.period_s,
                "dispatch_errors": c.dispatch_errors, "safe_mode": sup.safe,
                "safe_mode_why": sup.why if sup.safe else None, "safe_mode_trips": sup.trips,
                "late_periods": c.ctrl.late_periods, "max_late_s": round(c.max_late_s, 3),
                "verdicts": c.ctrl.health.verdicts,
                "cycle_ms_last": cyc[-1] if cyc else None,
                "cycle_ms_max_recent": max(cyc) if cyc else None}

    @app.put(PREFIX + "/control", responses=errors(409))
    def set_control(req: ControlState) -> dict[str, Any]:
        c = loop()
        if c.enabled and not req.enabled:
            c.ctrl.alarms.set(time.time(), "control_paused", "warning",
                              "the control loop is paused: setpoints are the operator's")
        elif req.enabled and not c.enabled:
            c.ctrl.alarms.clear(time.time(), "control_paused", "the control loop resumed")
        c.enabled = req.enabled
        return control_state()

    @app.get(PREFIX + "/allocation", responses=errors(404, 409))
    def allocation() -> dict[str, Any]:
        c = loop()
        if c.ctrl.last is None:
            raise HTTPException(404, "no allocation yet: the loop has not run a period")
        return c.ctrl.last.as_dict()

    @app.get(PREFIX + "/plan", responses=errors(409))
    async def plan() -> dict[str, Any]:
        """The next allocation from the present forecasts, not applied."""
        # on the event loop's thread, as the control loop: a preview never runs beside a
        # period (and is pure: it works on copies and writes no controller state)
        return loop().preview().as_dict()

    @app.get(PREFIX + "/forecasts", responses=errors(409))
    def forecasts() -> dict[str, Any]:
        loop()
        return _forecasts()

    @app.get(PREFIX + "/policy", responses=errors(409))
    def policy() -> dict[str, Any]:
        c = loop()
        return {"policy": c.ctrl.policy.as_dict(), "profiles": sorted(c.ctrl.profiles)}

    @app.put(PREFIX + "/policy", responses=errors(409))
    def set_policy(req: PolicyChange) -> dict[str, Any]:
        from powerflow.control.policy import PolicyError

        changes = req.model_extra or {}
        if not changes:
            raise HTTPException(422, "give the policy fields to change, or {\"profile\": NAME}")
        try:
            loop().ctrl.set_policy(changes)
        except PolicyError as e:
            raise HTTPException(422, str(e)) from None
        return policy()

    @app.post(PREFIX + "/agent/samples", responses=errors(404, 409))
    def agent_sample(req: AgentSample) -> dict[str, Any]:
        """A server's agent reports its device; the answer carries the cap to apply (W)."""
        loop()  # 409 without a control loop: nothing would act on the samples
        if agents is None:
            raise HTTPException(409, "no agent source: the host runs without its control loop")
        try:
            cap = agents.push(req.device, req.power_w, req.utilisation)
        except ValueError as e:
            raise HTTPException(404, str(e)) from None
        return {"device": req.device, "cap_w": cap}

    return app
