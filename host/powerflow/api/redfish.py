"""A Redfish service for the rack (DMTF DSP0266), for rack-management software that speaks it.

    /redfish/v1/                         ServiceRoot
    /redfish/v1/$metadata, /odata        the CSDL references and the OData service document
    /redfish/v1/SessionService[/Sessions]  sessions (POST gives X-Auth-Token); basic auth too
    /redfish/v1/Chassis/Rack             the rack: PowerSubsystem (capacity, allocation,
                                         redundancy), PowerSupplies (one DC regulator per
                                         converter node, with EfficiencyRatings and Metrics),
                                         Sensors (with Thresholds), Controls, legacy Power
    /redfish/v1/Chassis/<device>         each device: EnvironmentMetrics (PowerWatts,
                                         PowerLimitWatts) and its PowerLimit Control
    /redfish/v1/PowerEquipment/ElectricalBuses/<segment>   the mesh: each bus segment a
                                         PowerDistribution (Bus), its converters as Mains
                                         circuits and its ties as Branch circuits (On = closed)

Writes (PATCH of a device's power limit) go through the allocator's policy checks; a refused
change answers with a Redfish error message and changes nothing. Credentials are the API's
tokens: user = token name, password = its secret (without a tokens file, anyone local).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse

from powerflow.api.access import Access, Throttled
from powerflow.api.auth import Principal
from powerflow.api.sessions import SessionsFull
from powerflow.control.policy import PolicyError
from powerflow.control.supervisor import BROWNOUT_V_PU
from powerflow.manager import NodeManager
from powerflow.model.mesh import port_closed
from powerflow.store import TelemetryStore

V1 = "/redfish/v1"
SCHEMAS = {  # namespace -> version used
    "ServiceRoot": "v1_20_0", "ChassisCollection": None, "Chassis": "v1_28_0",
    "PowerSubsystem": "v1_1_3", "PowerSupplyCollection": None, "PowerSupply": "v1_6_0",
    "PowerSupplyMetrics": "v1_2_0", "SensorCollection": None, "Sensor": "v1_12_0",
    "ControlCollection": None, "Control": "v1_7_0", "EnvironmentMetrics": "v1_5_0",
    "Power": "v1_7_3", "SessionService": "v1_2_0", "SessionCollection": None,
    "Session": "v1_8_0", "Resource": "v1_23_0", "Message": "v1_3_0",
    "PowerEquipment": "v1_2_3", "PowerDistributionCollection": None,
    "PowerDistribution": "v1_6_0", "CircuitCollection": None, "Circuit": "v1_9_0",
}
HEADERS = {"OData-Version": "4.0", "Cache-Control": "no-cache"}


def otype(name: str) -> str:
    v = SCHEMAS[name]
    return f"#{name}.{name}" if v is None else f"#{name}.{v}.{name}"


def ref(path: str) -> dict[str, str]:
    return {"@odata.id": path}


def error(status: int, message: str, msg_id: str = "Base.1.19.GeneralError",
          args: list[str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": msg_id, "message": message, "@Message.ExtendedInfo": [{
        "@odata.type": "#Message.v1_3_0.Message", "MessageId": msg_id, "Message": message,
        "MessageArgs": args or [], "Severity": "Critical" if status >= 500 else "Warning",
        "Resolution": "Correct the request and resubmit it."}]}}, status, headers=HEADERS)


class RedfishError(Exception):
    """Raised with the Redfish error response to send (see `install`)."""

    def __init__(self, response: JSONResponse) -> None:
        super().__init__(response.status_code)
        self.response = response


def install(app: FastAPI, manager: NodeManager, store: TelemetryStore, access: Access,
            control: Any = None) -> None:
    """Serve the Redfish tree from `app`."""

    async def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RedfishError)
        return exc.response

    app.add_exception_handler(RedfishError, handler)
    app.include_router(make_router(manager, store, access, control))


def metadata_xml() -> str:
    refs = []
    for ns, v in SCHEMAS.items():
        inc = f'<edmx:Include Namespace="{ns}"/>' + (f'<edmx:Include Namespace="{ns}.{v}"/>'
                                                     if v else "")
        refs.append(f'<edmx:Reference Uri="http://redfish.dmtf.org/schemas/v1/{ns}_v1.xml">'
                    f"{inc}</edmx:Reference>")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">'
            + "".join(refs) +
            '<edmx:DataServices><Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" '
            'Namespace="Service"><EntityContainer Name="Service" '
            f'Extends="ServiceRoot.{SCHEMAS["ServiceRoot"]}.ServiceContainer"/></Schema>'
            "</edmx:DataServices></edmx:Edmx>")


def make_router(manager: NodeManager, store: TelemetryStore, access: Access,
                control: Any = None) -> APIRouter:
    r = APIRouter(include_in_schema=False)  # open: service root, metadata, login; writes
    #                                          authenticate themselves (the app audits them)

    def authed(request: Request) -> Principal:
        p = who(request)
        if p is None:
            raise RedfishError(unauthorised())
        return p

    g = APIRouter(include_in_schema=False, dependencies=[Depends(authed)])
    sessions = access.sessions
    rack = manager.rack

    def throttled(e: Throttled) -> RedfishError:
        resp = error(429, str(e), "Base.1.19.ServiceTemporarilyUnavailable",
                     [str(e.retry_after)])
        resp.headers["Retry-After"] = str(e.retry_after)
        return RedfishError(resp)

    def who(request: Request) -> Principal | None:
        """The caller (basic auth or a session's X-Auth-Token), recorded for the audit."""
        try:
            p = access.authenticate(request)
        except Throttled as e:
            raise throttled(e) from None
        request.state.principal = p
        return p

    def ok(body: dict[str, Any], status: int = 200, extra: dict[str, str] | None = None
           ) -> JSONResponse:
        return JSONResponse(body, status, headers={**HEADERS, **(extra or {})})

    # ---- data --------------------------------------------------------------------------
    def alloc() -> Any:
        return control.ctrl.last if control is not None else None

    def node_status(ns: Any) -> dict[str, str]:
        """A converter's status from what is measured: its link, its own fault bits and
        mode, its output against the bus band, and the control loop's verdict."""
        t = ns.telemetry
        if ns.state != "online":
            return {"State": "UnavailableOffline", "Health": "Critical"}
        faults = int(t.get("FAULTS") or 0)
        mode = t.get("MODE")
        state = "Enabled" if mode in (1, 2, 3) else "StandbyOffline"
        health = "Critical" if faults & 0x0F else "Warning" if mode in (3, 4) else "OK"
        vout = t.get("READ_VOUT")
        if mode in (1, 2, 3) and isinstance(vout, int | float):
            if vout < BROWNOUT_V_PU * rack.bus_voltage:
                health = "Critical"
            elif vout < 0.97 * rack.bus_voltage and health == "OK":
                health = "Warning"
        if control is not None:
            h = control.ctrl.health.nodes[ns.node.id]
            if h.state == "quarantined":
                state, health = "UnavailableOffline", "Critical"
            elif h.state == "suspect":
                state = "InTest"
                health = "Warning" if health == "OK" else health
            elif h.why and health == "OK":  # e.g. telemetry stale
                health = "Warning"
        return {"State": state, "Health": health}

    def worst(healths: list[str]) -> str:
        return "Critical" if "Critical" in healths else "Warning" if "Warning" in healths else "OK"

    def rack_health() -> str:
        """The rack's health: its converters' and the active alarms'."""
        hs = [node_status(ns)["Health"] for ns in manager.nodes.values()]
        if control is not None:
            for al in control.ctrl.alarms.listing():
                hs.append("Critical" if al.severity == "critical" else "Warning")
        return worst(hs)

    def dev_cap(dev: str) -> float | None:
        if control is None:
            return None
        pol = control.ctrl.policy
        a = alloc()
        cap = a.caps.get(dev) if a is not None else None
        limit = pol.p_max_w.get(dev)
        vals = [v for v in (cap, limit) if v is not None]
        return min(vals) if vals else None

    def devices() -> dict[str, Any]:
        return {d.id: d for d in rack.devices}

    # ---- service root and OData --------------------------------------------------------
    @r.get("/redfish")
    def versions() -> JSONResponse:
        return ok({"v1": V1 + "/"})

    @r.get(V1)
    @r.get(V1 + "/")
    def root() -> JSONResponse:
        return ok({"@odata.id": V1 + "/", "@odata.type": otype("ServiceRoot"), "Id": "RootService",
                   "Name": f"PowerFlow rack {rack.name}", "RedfishVersion": "1.20.0",
                   "UUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"powerflow:rack:{rack.name}")),
                   "Chassis": ref(V1 + "/Chassis"), "SessionService": ref(V1 + "/SessionService"),
                   "PowerEquipment": ref(V1 + "/PowerEquipment"),
                   "Links": {"Sessions": ref(V1 + "/SessionService/Sessions")}})

    @r.get(V1 + "/$metadata")
    def metadata() -> Response:
        return Response(metadata_xml(), media_type="application/xml", headers=HEADERS)

    @r.get(V1 + "/odata")
    def odata() -> JSONResponse:
        return ok({"@odata.context": V1 + "/$metadata", "value": [
            {"name": "Service", "kind": "Singleton", "url": V1 + "/"},
            {"name": "Chassis", "kind": "Singleton", "url": V1 + "/Chassis"},
            {"name": "SessionService", "kind": "Singleton", "url": V1 + "/SessionService"},
            {"name": "PowerEquipment", "kind": "Singleton", "url": V1 + "/PowerEquipment"}]})

    # ---- sessions ----------------------------------------------------------------------
    @g.get(V1 + "/SessionService")
    def session_service() -> JSONResponse:
        return ok({"@odata.id": V1 + "/SessionService", "@odata.type": otype("SessionService"),
                   "Id": "SessionService", "Name": "Session Service", "ServiceEnabled": True,
                   "SessionTimeout": int(sessions.timeout_s), "Status": {"State": "Enabled", "Health": "OK"},
                   "Sessions": ref(V1 + "/SessionService/Sessions")})

    @g.get(V1 + "/SessionService/Sessions")
    def session_list() -> JSONResponse:
        members = [ref(f"{V1}/SessionService/Sessions/{s.id}") for s in sessions.listing()]
        return ok({"@odata.id": V1 + "/SessionService/Sessions",
                   "@odata.type": otype("SessionCollection"), "Name": "Sessions",
                   "Members": members, "Members@odata.count": len(members)})

    @r.post(V1 + "/SessionService/Sessions")
    async def session_new(request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body())
            user, pw = body["UserName"], body["Password"]
            if not isinstance(user, str) or not isinstance(pw, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return error(400, "give UserName and Password", "Base.1.19.PropertyMissing",
                         ["UserName"])
        # audited as data, the user name only (capped), never the password
        request.state.audit_body = json.dumps({"UserName": user[:200]})
        try:
            p = access.login(request, user, pw)
        except Throttled as e:
            return throttled(e).response
        request.state.principal = p
        if p is None:
            return error(401, "the user name and password do not match",
                         "Base.1.19.InsufficientPrivilege")
        try:
            tok, sess = sessions.create(p)
        except SessionsFull as e:
            resp = error(503, str(e), "Base.1.19.ServiceTemporarilyUnavailable",
                         [str(int(sessions.timeout_s))])
            resp.headers["Retry-After"] = "60"
            return resp
        loc = f"{V1}/SessionService/Sessions/{sess.id}"
        return ok(session_body(sess.id, p), 201, {"X-Auth-Token": tok, "Location": loc})

    def session_body(sid: str, p: Principal) -> dict[str, Any]:
        return {"@odata.id": f"{V1}/SessionService/Sessions/{sid}", "@odata.type": otype("Session"),
                "Id": sid, "Name": f"Session {sid}", "UserName": p.name}

    @g.get(V1 + "/SessionService/Sessions/{sid}")
    def session_get(sid: str) -> JSONResponse:
        sess = sessions.get(sid)
        if sess is None:
            return error(404, f"no session {sid}", "Base.1.19.ResourceNotFound", ["Session", sid])
        return ok(session_body(sess.id, sess.principal))

    @r.delete(V1 + "/SessionService/Sessions/{sid}")
    def session_end(sid: str, request: Request) -> Response:
        """Log out: one's own session, or any with the operator role."""
        p = who(request)
        if p is None:
            return unauthorised()
        sess = sessions.get(sid)
        if sess is None:
            return error(404, f"no session {sid}", "Base.1.19.ResourceNotFound", ["Session", sid])
        if sess.principal.name != p.name and not p.may_write:
            return error(403, f"'{p.name}' may end only its own sessions",
                         "Base.1.19.InsufficientPrivilege")
        sessions.remove(sid)
        return Response(status_code=204, headers=HEADERS)

    def unauthorised() -> JSONResponse:
        resp = error(401, "authentication needed: basic auth or a session's X-Auth-Token",
                     "Base.1.19.NoValidSession")
        resp.headers["WWW-Authenticate"] = 'Basic realm="PowerFlow"'
        return resp

    # ---- chassis -----------------------------------------------------------------------
    CH = V1 + "/Chassis"

    @g.get(CH)
    def chassis_list() -> JSONResponse:
        members = [ref(CH + "/Rack")] + [ref(f"{CH}/{d}") for d in devices()]
        return ok({"@odata.id": CH, "@odata.type": otype("ChassisCollection"),
                   "Name": "Chassis Collection", "Members": members,
                   "Members@odata.count": len(members)})

    @g.get(CH + "/Rack")
    def rack_chassis() -> JSONResponse:
        return ok({"@odata.id": CH + "/Rack", "@odata.type": otype("Chassis"), "Id": "Rack",
                   "Name": f"Rack {rack.name}", "ChassisType": "Rack",
                   "Status": {"State": "Enabled", "Health": rack_health()},
                   "PowerSubsystem": ref(CH + "/Rack/PowerSubsystem"),
                   "Sensors": ref(CH + "/Rack/Sensors"), "Controls": ref(CH + "/Rack/Controls"),
                   "Power": ref(CH + "/Rack/Power"),
                   "Links": {"Contains": [ref(f"{CH}/{d}") for d in devices()]}})

    @g.get(CH + "/Rack/PowerSubsystem")
    def power_subsystem() -> JSONResponse:
        a = alloc()
        requested = a.predicted["demand_p95_w"] if a else None
        allocated = (sum(n["share_w"] for n in a.nodes.values()) if a else None)
        supplies = [ref(f"{CH}/Rack/PowerSubsystem/PowerSupplies/Node{n.id}") for n in rack.nodes]
        need = 1
        if a:
            on = sum(1 for n in a.nodes.values() if n["on"])
            need = max(1, on)
        # redundancy from what runs: converters online, unfaulted and not out of the plan
        usable = sum(1 for ns in manager.nodes.values()
                     if node_status(ns)["State"] in ("Enabled", "StandbyOffline")
                     and node_status(ns)["Health"] != "Critical")
        red_health = "Critical" if usable < need else "Warning" if usable == need else "OK"
        if control is not None and control.ctrl.supervisor.safe:
            red_health = worst([red_health, "Warning"])
        return ok({"@odata.id": CH + "/Rack/PowerSubsystem", "@odata.type": otype("PowerSubsystem"),
                   "Id": "PowerSubsystem", "Name": "Rack power subsystem",
                   "CapacityWatts": sum(n.rating_w for n in rack.nodes),
                   "Allocation": {"RequestedWatts": requested, "AllocatedWatts": allocated},
                   "PowerSupplyRedundancy": [{"RedundancyType": "NPlusM",
                                              "MaxSupportedInGroup": len(rack.nodes),
                                              "MinNeededInGroup": need,
                                              "RedundancyGroup": supplies,
                                              "Status": {"State": "Enabled",
                                                         "Health": red_health}}],
                   "PowerSupplies": ref(CH + "/Rack/PowerSubsystem/PowerSupplies"),
                   "Status": {"State": "Enabled", "Health": worst([red_health, rack_health()])}})

    @g.get(CH + "/Rack/PowerSubsystem/PowerSupplies")
    def supplies() -> JSONResponse:
        members = [ref(f"{CH}/Rack/PowerSubsystem/PowerSupplies/Node{n.id}") for n in rack.nodes]
        return ok({"@odata.id": CH + "/Rack/PowerSubsystem/PowerSupplies",
                   "@odata.type": otype("PowerSupplyCollection"), "Name": "Converter nodes",
                   "Members": members, "Members@odata.count": len(members)})

    def node_of(nid: str) -> Any:
        if not nid.startswith("Node") or not nid[4:].isdigit():
            return None
        return manager.nodes.get(int(nid[4:]))

    def supply_of(nid: str) -> Any:
        ns = node_of(nid)
        if ns is None:
            raise RedfishError(error(404, f"no power supply {nid}", "Base.1.19.ResourceNotFound",
                                     ["PowerSupply", nid]))
        return ns

    def known_device(dev: str) -> None:
        if dev not in devices():
            raise RedfishError(error(404, f"no chassis {dev}", "Base.1.19.ResourceNotFound",
                                     ["Chassis", dev]))

    @g.get(CH + "/Rack/PowerSubsystem/PowerSupplies/{nid}")
    def supply(nid: str) -> JSONResponse:
        ns = supply_of(nid)
        n = ns.node
        path = f"{CH}/Rack/PowerSubsystem/PowerSupplies/{nid}"
        return ok({"@odata.id": path, "@odata.type": otype("PowerSupply"), "Id": nid,
                   "Name": f"Converter node {n.id} (segment {n.segment})",
                   "PowerSupplyType": "DCRegulator", "PowerCapacityWatts": n.rating_w,
                   "FirmwareVersion": str(ns.hello.get("FW_VERSION", "")),
                   "EfficiencyRatings": [{"LoadPercent": round(100 * x, 1),
                                          "EfficiencyPercent": round(100 * e, 2)}
                                         for x, e in n.efficiency],
                   "OutputRails": [{"NominalVoltage": rack.bus_voltage, "PhysicalContext": "DCBus"}],
                   "Location": {"PartLocation": {"ServiceLabel": f"node {n.id}",
                                                 "LocationType": "Slot",
                                                 "LocationOrdinalValue": n.position[0]}},
                   "Status": node_status(ns), "Metrics": ref(path + "/Metrics")})

    @g.get(CH + "/Rack/PowerSubsystem/PowerSupplies/{nid}/Metrics")
    def supply_metrics(nid: str) -> JSONResponse:
        ns = supply_of(nid)
        t = ns.telemetry
        path = f"{CH}/Rack/PowerSubsystem/PowerSupplies/{nid}/Metrics"

        def rd(k: str) -> dict[str, Any]:
            v = t.get(k)
            return {"Reading": float(v) if isinstance(v, int | float) else None}

        return ok({"@odata.id": path, "@odata.type": otype("PowerSupplyMetrics"), "Id": "Metrics",
                   "Name": f"Node {ns.node.id} metrics", "Status": node_status(ns),
                   "InputVoltage": rd("READ_VIN"), "InputCurrentAmps": rd("READ_IIN"),
                   "OutputPowerWatts": rd("READ_POUT"), "RailVoltage": [rd("READ_VOUT")],
                   "RailCurrentAmps": [rd("READ_IOUT")], "TemperatureCelsius": rd("READ_TEMPERATURE_1")})

    # ---- sensors -----------------------------------------------------------------------
    SENSORS = {  # suffix -> (telemetry, type, units, context, thresholds (caution, critical))
        "Vout": ("READ_VOUT", "Voltage", "V", "VoltageRegulator"),
        "Iout": ("READ_IOUT", "Current", "A", "VoltageRegulator"),
        "Temp": ("READ_TEMPERATURE_1", "Temperature", "Cel", "PowerSupply"),
        "Pout": ("READ_POUT", "Power", "W", "PowerSupply"),
    }

    def thresholds(kind: str, ns: Any) -> dict[str, Any]:
        n = ns.node
        if kind == "Vout":
            return {"UpperCaution": {"Reading": round(n.vout_max * 1.05, 3)},
                    "UpperCritical": {"Reading": round(n.vout_max * 1.10, 3)},
                    "LowerCaution": {"Reading": round(0.97 * rack.bus_voltage, 3)}}
        if kind == "Iout":
            return {"UpperCaution": {"Reading": round(n.iout_max * 1.05, 3)},
                    "UpperCritical": {"Reading": round(n.iout_max * 1.25, 3)}}
        if kind == "Temp":
            return {"UpperCaution": {"Reading": 100.0}, "UpperCritical": {"Reading": 115.0}}
        return {"UpperCaution": {"Reading": n.rating_w}}

    @g.get(CH + "/Rack/Sensors")
    def sensor_list() -> JSONResponse:
        members = [ref(f"{CH}/Rack/Sensors/Node{n.id}{k}") for n in rack.nodes for k in SENSORS]
        return ok({"@odata.id": CH + "/Rack/Sensors", "@odata.type": otype("SensorCollection"),
                   "Name": "Rack sensors", "Members": members, "Members@odata.count": len(members)})

    @g.get(CH + "/Rack/Sensors/{sid}")
    def sensor(sid: str) -> JSONResponse:
        kind = sid[-4:]
        ns = node_of(sid[:-4])
        if ns is None or kind not in SENSORS:
            return error(404, f"no sensor {sid}", "Base.1.19.ResourceNotFound", ["Sensor", sid])
        field, rtype, units, ctx = SENSORS[kind]
        v = ns.telemetry.get(field) if ns.state == "online" else None
        th = thresholds(kind, ns)
        return ok({"@odata.id": f"{CH}/Rack/Sensors/{sid}", "@odata.type": otype("Sensor"),
                   "Id": sid, "Name": f"Node {ns.node.id} {rtype.lower()}",
                   "Reading": float(v) if isinstance(v, int | float) else None,
                   "ReadingType": rtype, "ReadingUnits": units, "PhysicalContext": ctx,
                   "Thresholds": th, "Status": sensor_status(ns, kind, v, th)})

    def sensor_status(ns: Any, kind: str, v: Any, th: dict[str, Any]) -> dict[str, str]:
        """A sensor's health is its reading against its own thresholds (a Vout under its
        lower caution is a Warning, under the brownout level Critical)."""
        if ns.state != "online" or not isinstance(v, int | float):
            return {"State": "UnavailableOffline", "Health": "Critical"}
        on = ns.telemetry.get("MODE") in (1, 2, 3)
        health = "OK"
        if "UpperCritical" in th and v > th["UpperCritical"]["Reading"]:
            health = "Critical"
        elif "UpperCaution" in th and v > th["UpperCaution"]["Reading"]:
            health = "Warning"
        if kind == "Vout" and on:
            if v < BROWNOUT_V_PU * rack.bus_voltage:
                health = "Critical"
            elif v < th["LowerCaution"]["Reading"] and health == "OK":
                health = "Warning"
        return {"State": "Enabled", "Health": health}

    # ---- controls and device environment -----------------------------------------------
    def control_body(path: str, cid: str, name: str, setpoint: float | None, lo: float,
                     hi: float, mode: str) -> dict[str, Any]:
        return {"@odata.id": path, "@odata.type": otype("Control"), "Id": cid, "Name": name,
                "ControlType": "Power", "SetPoint": setpoint, "SetPointUnits": "W",
                "AllowableMin": lo, "AllowableMax": hi, "ControlMode": mode,
                "Status": {"State": "Enabled", "Health": "OK"}}

    @g.get(CH + "/Rack/Controls")
    def rack_controls() -> JSONResponse:
        members = [ref(f"{CH}/Rack/Controls/Node{n.id}Output") for n in rack.nodes]
        return ok({"@odata.id": CH + "/Rack/Controls", "@odata.type": otype("ControlCollection"),
                   "Name": "Converter output setpoints", "Members": members,
                   "Members@odata.count": len(members)})

    @g.get(CH + "/Rack/Controls/{cid}")
    def rack_control(cid: str) -> JSONResponse:
        ns = node_of(cid[:-6]) if cid.endswith("Output") else None
        if ns is None:
            return error(404, f"no control {cid}", "Base.1.19.ResourceNotFound", ["Control", cid])
        return ok(output_body(cid, ns))

    def output_body(cid: str, ns: Any) -> dict[str, Any]:
        a = alloc()
        pins = control.ctrl.policy.node_output_w if control is not None else {}
        pin = pins.get(str(ns.node.id))
        share = pin if pin is not None else (a.nodes[ns.node.id]["share_w"] if a else None)
        return control_body(f"{CH}/Rack/Controls/{cid}", cid,
                            f"Node {ns.node.id} output (planned by the allocator unless pinned)",
                            share, 0.0, ns.node.rating_w,
                            "Override" if pin is not None else "Automatic")

    @r.patch(CH + "/Rack/Controls/{cid}")
    async def rack_control_patch(cid: str, request: Request) -> JSONResponse:
        return await audited_write(request, lambda body: pin_output(cid, body))

    async def audited_write(request: Request, apply: Any) -> JSONResponse:
        """A PATCH: the writer's rights, the control loop and a JSON object of writable
        properties checked, then `apply(body)`; every answer, refusals included, audited."""
        raw = (await request.body()).decode("utf-8", "replace")
        try:
            p = who(request)
            if p is None:
                raise RedfishError(unauthorised())
            if not p.may_write:
                raise RedfishError(error(403, f"'{p.name}' is read-only",
                                         "Base.1.19.InsufficientPrivilege"))
            if control is None:
                raise RedfishError(error(409, "this host runs without its control loop",
                                         "Base.1.19.ActionNotSupported", ["PATCH"]))
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            if not isinstance(body, dict) or not body:
                raise RedfishError(error(400, "give SetPoint (W) or ControlMode",
                                         "Base.1.19.PropertyMissing", ["SetPoint"]))
            unknown = sorted(set(body) - {"SetPoint", "ControlMode"})
            if unknown:
                raise RedfishError(error(400, f"property {unknown[0]} is not writable",
                                         "Base.1.19.PropertyNotWritable", [unknown[0]]))
            resp = apply(body)
        except RedfishError as e:
            resp = e.response
        return resp

    def pin_output(cid: str, body: dict[str, Any]) -> JSONResponse:
        """Pin a converter's output (SetPoint, W; ControlMode Override) or hand it back to the
        allocator (ControlMode Automatic). A pin is kept only if the allocation it leads to
        passes the allocator's load-flow check."""
        ns = node_of(cid[:-6]) if cid.endswith("Output") else None
        if ns is None:
            return error(404, f"no control {cid}", "Base.1.19.ResourceNotFound", ["Control", cid])
        key = str(ns.node.id)
        pins = dict(control.ctrl.policy.node_output_w)
        mode = body.get("ControlMode", "Override")
        if mode == "Automatic":
            pins.pop(key, None)
        elif mode == "Override" and "SetPoint" in body:
            pins[key] = body["SetPoint"]
        else:
            return error(400, "ControlMode Override needs a SetPoint; Automatic hands the output "
                              "back to the allocator", "Base.1.19.PropertyValueNotInList",
                         [str(mode), "ControlMode"])
        before = control.ctrl.policy
        try:
            control.ctrl.set_policy({"node_output_w": pins})
        except PolicyError as e:
            return error(400, str(e), "Base.1.19.PropertyValueOutOfRange",
                         [str(body.get("SetPoint")), "SetPoint"])
        trial = control.preview()
        if not trial.ok or trial.fallback:
            control.ctrl.policy = before  # nothing half applied
            return error(409, f"the allocator's check refuses it: {trial.reason}",
                         "Base.1.19.PropertyValueConflict", [str(body.get("SetPoint")),
                                                              "SetPoint"])
        return ok(output_body(cid, ns))

    @g.get(CH + "/{dev}")
    def device_chassis(dev: str) -> JSONResponse:
        known_device(dev)
        d = devices()[dev]
        return ok({"@odata.id": f"{CH}/{dev}", "@odata.type": otype("Chassis"), "Id": dev,
                   "Name": f"Device {dev} (priority {d.priority}, segment {d.segment})",
                   "ChassisType": "RackMount", "Status": {"State": "Enabled", "Health": "OK"},
                   "EnvironmentMetrics": ref(f"{CH}/{dev}/EnvironmentMetrics"),
                   "Controls": ref(f"{CH}/{dev}/Controls"),
                   "Links": {"ContainedBy": ref(CH + "/Rack")}})

    def env_body(dev: str) -> dict[str, Any]:
        d = devices()[dev]
        a = alloc()
        w = a.devices[dev]["measured_w"] if a else None
        cap = dev_cap(dev)
        return {"@odata.id": f"{CH}/{dev}/EnvironmentMetrics",
                "@odata.type": otype("EnvironmentMetrics"), "Id": "EnvironmentMetrics",
                "Name": f"Device {dev} power", "PowerWatts": {"Reading": w},
                "PowerLimitWatts": {"SetPoint": cap if cap is not None else d.p_max_w,
                                    "AllowableMin": d.p_min_w, "AllowableMax": d.p_max_w,
                                    "ControlMode": "Automatic" if cap is None else "Override"}}

    @g.get(CH + "/{dev}/EnvironmentMetrics")
    def env(dev: str) -> JSONResponse:
        known_device(dev)
        return ok(env_body(dev))

    @g.get(CH + "/{dev}/Controls")
    def dev_controls(dev: str) -> JSONResponse:
        known_device(dev)
        members = [ref(f"{CH}/{dev}/Controls/PowerLimit")]
        return ok({"@odata.id": f"{CH}/{dev}/Controls", "@odata.type": otype("ControlCollection"),
                   "Name": f"Device {dev} controls", "Members": members,
                   "Members@odata.count": 1})

    def limit_body(dev: str) -> dict[str, Any]:
        d = devices()[dev]
        lim = control.ctrl.policy.p_max_w.get(dev) if control is not None else None
        return control_body(f"{CH}/{dev}/Controls/PowerLimit", "PowerLimit",
                            f"Device {dev} power limit", lim if lim is not None else d.p_max_w,
                            d.p_min_w, d.p_max_w, "Override" if lim is not None else "Automatic")

    @g.get(CH + "/{dev}/Controls/PowerLimit")
    def dev_limit(dev: str) -> JSONResponse:
        known_device(dev)
        return ok(limit_body(dev))

    @r.patch(CH + "/{dev}/Controls/PowerLimit")
    async def dev_limit_patch(dev: str, request: Request) -> JSONResponse:
        return await audited_write(request, lambda body: set_limit(dev, body))

    def set_limit(dev: str, body: dict[str, Any]) -> JSONResponse:
        known_device(dev)
        if "SetPoint" not in body:
            return error(400, "give SetPoint (W)", "Base.1.19.PropertyMissing", ["SetPoint"])
        sp = body["SetPoint"]
        d = devices()[dev]
        if isinstance(sp, bool) or not isinstance(sp, int | float) or not d.p_min_w <= sp <= d.p_max_w:
            return error(400, f"SetPoint {sp!r} is outside {d.p_min_w}..{d.p_max_w} W",
                         "Base.1.19.PropertyValueOutOfRange", [str(sp), "SetPoint"])
        try:
            limits = dict(control.ctrl.policy.p_max_w)
            limits[dev] = float(sp)
            control.ctrl.set_policy({"p_max_w": limits})
        except PolicyError as e:
            return error(400, str(e), "Base.1.19.PropertyValueConflict", ["SetPoint", str(sp)])
        return ok(limit_body(dev))

    # ---- the mesh: one electrical bus per segment, its converters as mains, ties as branches
    PE = V1 + "/PowerEquipment"
    BUS = PE + "/ElectricalBuses"
    nominal = {12.0: "DC12V", 48.0: "DC48V", 5.0: "DC5V", 16.0: "DC16V"}.get(rack.bus_voltage,
                                                                              "DC")

    def tie_state(k: int) -> bool:
        a = alloc()
        if a is not None:
            return bool(a.closed[k])
        b = rack.branches[k]
        if b.port is None:
            return b.closed
        ps = manager.nodes[b.port[0]].telemetry.get("PORT_STATE")
        return b.closed if ps is None else port_closed(int(ps), b.port[1])

    def seg_ok(seg: str) -> bool:
        return seg in rack.segments

    @g.get(PE)
    def power_equipment() -> JSONResponse:
        return ok({"@odata.id": PE, "@odata.type": otype("PowerEquipment"), "Id": "PowerEquipment",
                   "Name": f"Rack {rack.name} power mesh",
                   "Status": {"State": "Enabled", "Health": "OK"},
                   "ElectricalBuses": ref(BUS)})

    @g.get(BUS)
    def buses() -> JSONResponse:
        members = [ref(f"{BUS}/{sg}") for sg in rack.segments]
        return ok({"@odata.id": BUS, "@odata.type": otype("PowerDistributionCollection"),
                   "Name": "Bus segments", "Members": members,
                   "Members@odata.count": len(members)})

    @g.get(BUS + "/{seg}")
    def bus(seg: str) -> JSONResponse:
        if not seg_ok(seg):
            return error(404, f"no bus segment {seg}", "Base.1.19.ResourceNotFound", ["Bus", seg])
        return ok({"@odata.id": f"{BUS}/{seg}", "@odata.type": otype("PowerDistribution"),
                   "Id": seg, "Name": f"Bus segment {seg}", "EquipmentType": "Bus",
                   "Status": {"State": "Enabled", "Health": "OK"},
                   "Mains": ref(f"{BUS}/{seg}/Mains"), "Branches": ref(f"{BUS}/{seg}/Branches")})

    def circuits(seg: str, kind: str) -> list[str]:
        if kind == "Mains":
            return [f"Node{n.id}" for n in rack.nodes if n.segment == seg]
        return [b.id for b in rack.branches if b.from_ == seg]

    @g.get(BUS + "/{seg}/{kind}")
    def circuit_list(seg: str, kind: str) -> JSONResponse:
        if not seg_ok(seg) or kind not in ("Mains", "Branches"):
            return error(404, f"no {kind} on {seg}", "Base.1.19.ResourceNotFound", [kind, seg])
        members = [ref(f"{BUS}/{seg}/{kind}/{c}") for c in circuits(seg, kind)]
        return ok({"@odata.id": f"{BUS}/{seg}/{kind}", "@odata.type": otype("CircuitCollection"),
                   "Name": f"{kind} of segment {seg}", "Members": members,
                   "Members@odata.count": len(members)})

    @g.get(BUS + "/{seg}/{kind}/{cid}")
    def circuit(seg: str, kind: str, cid: str) -> JSONResponse:
        if not seg_ok(seg) or kind not in ("Mains", "Branches") or cid not in circuits(seg, kind):
            return error(404, f"no circuit {cid}", "Base.1.19.ResourceNotFound", ["Circuit", cid])
        body: dict[str, Any] = {"@odata.id": f"{BUS}/{seg}/{kind}/{cid}",
                                "@odata.type": otype("Circuit"), "Id": cid,
                                "NominalVoltage": nominal}
        if kind == "Mains":
            ns = node_of(cid)
            t = ns.telemetry if ns.state == "online" else {}
            on = t.get("MODE") in (1, 2, 3)

            def rd(k: str) -> dict[str, Any]:
                v = t.get(k)
                return {"Reading": float(v) if isinstance(v, int | float) else None}

            body.update({"Name": f"Converter node {ns.node.id} into segment {seg}",
                         "CircuitType": "Mains", "PowerState": "On" if on else "Off",
                         "Voltage": rd("READ_VOUT"), "CurrentAmps": rd("READ_IOUT"),
                         "PowerWatts": rd("READ_POUT"), "Status": node_status(ns)})
        else:
            k = next(i for i, b in enumerate(rack.branches) if b.id == cid)
            b = rack.branches[k]
            closed = tie_state(k)
            body.update({"Name": f"Tie {b.id}: segment {b.from_} to {b.to}"
                                 + (f" (node {b.port[0]} port {b.port[1]})" if b.port else ""),
                         "CircuitType": "Branch", "PowerState": "On" if closed else "Off",
                         "BreakerState": "Normal" if closed else "Off",
                         "Status": {"State": "Enabled" if closed else "Disabled", "Health": "OK"}})
        return ok(body)

    # ---- the legacy Power resource -----------------------------------------------------
    @g.get(CH + "/Rack/Power")
    def legacy_power() -> JSONResponse:
        a = alloc()
        consumed = sum(float(ns.telemetry.get("READ_POUT") or 0.0)
                       for ns in manager.nodes.values() if ns.state == "online")
        path = CH + "/Rack/Power"
        psus = []
        for k, ns in enumerate(manager.nodes.values()):
            psus.append({"@odata.id": f"{path}#/PowerSupplies/{k}", "MemberId": str(k),
                         "Name": f"Converter node {ns.node.id}", "PowerSupplyType": "DC",
                         "PowerCapacityWatts": ns.node.rating_w,
                         "LastPowerOutputWatts": ns.telemetry.get("READ_POUT"),
                         "Status": node_status(ns)})
        return ok({"@odata.id": path, "@odata.type": otype("Power"), "Id": "Power",
                   "Name": "Rack power (legacy)", "PowerControl": [{
                       "@odata.id": f"{path}#/PowerControl/0", "MemberId": "0",
                       "Name": "Rack power control", "PowerConsumedWatts": round(consumed, 2),
                       "PowerCapacityWatts": sum(n.rating_w for n in rack.nodes),
                       "PowerRequestedWatts": a.predicted["demand_p95_w"] if a else None,
                       "PowerAllocatedWatts": (sum(n["share_w"] for n in a.nodes.values())
                                               if a else None),
                       "PowerLimit": {"LimitInWatts": rack.breaker_limit_w,
                                      "LimitException": "LogEventOnly"}}],
                   "PowerSupplies": psus})

    r.include_router(g)
    return r
