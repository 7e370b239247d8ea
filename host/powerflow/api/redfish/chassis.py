"""Redfish chassis: the rack (PowerSubsystem, PowerSupplies, Sensors, Controls, legacy Power)
and each device (EnvironmentMetrics and its PowerLimit control).

Writes (PATCH of a converter's output or a device's power limit) go through the host service:
a refused change answers with a Redfish error message and changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from powerflow.api.deps import service
from powerflow.api.redfish.common import (CAUTION_V_PU, CH, MSG, OUTPUT_MODES, RedfishError,
                                          authed, error, node_named, node_status, not_found, ok,
                                          otype, rack_health, ref, unauthorised, who, worst)
from powerflow.manager import NodeState
from powerflow.model.rack import BROWNOUT_V_PU, Device
from powerflow.service import Conflict, HostService, Invalid, NotFound

RACK = CH + "/Rack"
SUPPLIES = RACK + "/PowerSubsystem/PowerSupplies"
SENSORS = {  # suffix -> (telemetry field, ReadingType, ReadingUnits, PhysicalContext)
    "Vout": ("READ_VOUT", "Voltage", "V", "VoltageRegulator"),
    "Iout": ("READ_IOUT", "Current", "A", "VoltageRegulator"),
    "Temp": ("READ_TEMPERATURE_1", "Temperature", "Cel", "PowerSupply"),
    "Pout": ("READ_POUT", "Power", "W", "PowerSupply"),
}
TEMP_CAUTION_C, TEMP_CRITICAL_C = 100.0, 115.0  # converter temperature thresholds, °C

router = APIRouter(include_in_schema=False, dependencies=[Depends(authed)])
writes = APIRouter(include_in_schema=False)  # PATCHes check the caller themselves, audited


def _reading(t: dict[str, Any], k: str) -> dict[str, Any]:
    v = t.get(k)
    return {"Reading": float(v) if isinstance(v, int | float) else None}


def _supply(svc: HostService, nid: str) -> NodeState:
    ns = node_named(svc, nid)
    if ns is None:
        raise not_found("PowerSupply", nid, f"no power supply {nid}")
    return ns


def _device(svc: HostService, dev: str) -> Device:
    try:
        return svc.device(dev)
    except NotFound:
        raise not_found("Chassis", dev) from None


# ---- the rack ------------------------------------------------------------------------------
@router.get(CH)
def chassis_list(svc: HostService = Depends(service)) -> JSONResponse:
    members = [ref(RACK)] + [ref(f"{CH}/{dv.id}") for dv in svc.rack.devices]
    return ok({"@odata.id": CH, "@odata.type": otype("ChassisCollection"),
               "Name": "Chassis Collection", "Members": members,
               "Members@odata.count": len(members)})


@router.get(RACK)
def rack_chassis(svc: HostService = Depends(service)) -> JSONResponse:
    return ok({"@odata.id": RACK, "@odata.type": otype("Chassis"), "Id": "Rack",
               "Name": f"Rack {svc.rack.name}", "ChassisType": "Rack",
               "Status": {"State": "Enabled", "Health": rack_health(svc)},
               "PowerSubsystem": ref(RACK + "/PowerSubsystem"),
               "Sensors": ref(RACK + "/Sensors"), "Controls": ref(RACK + "/Controls"),
               "Power": ref(RACK + "/Power"),
               "Links": {"Contains": [ref(f"{CH}/{dv.id}") for dv in svc.rack.devices]}})


@router.get(RACK + "/PowerSubsystem")
def power_subsystem(svc: HostService = Depends(service)) -> JSONResponse:
    rack, a = svc.rack, svc.allocation()
    requested = a.predicted["demand_p95_w"] if a else None
    allocated = sum(n["share_w"] for n in a.nodes.values()) if a else None
    group = [ref(f"{SUPPLIES}/Node{n.id}") for n in rack.nodes]
    need = max(1, sum(1 for n in a.nodes.values() if n["on"])) if a else 1
    # redundancy from what runs: converters online, unfaulted and not out of the plan
    statuses = [node_status(svc, ns) for ns in svc.node_states()]
    usable = sum(1 for st in statuses
                 if st["State"] in ("Enabled", "StandbyOffline") and st["Health"] != "Critical")
    red_health = "Critical" if usable < need else "Warning" if usable == need else "OK"
    if svc.safe_mode():
        red_health = worst([red_health, "Warning"])
    return ok({"@odata.id": RACK + "/PowerSubsystem", "@odata.type": otype("PowerSubsystem"),
               "Id": "PowerSubsystem", "Name": "Rack power subsystem",
               "CapacityWatts": sum(n.rating_w for n in rack.nodes),
               "Allocation": {"RequestedWatts": requested, "AllocatedWatts": allocated},
               "PowerSupplyRedundancy": [{"RedundancyType": "NPlusM",
                                          "MaxSupportedInGroup": len(rack.nodes),
                                          "MinNeededInGroup": need, "RedundancyGroup": group,
                                          "Status": {"State": "Enabled",
                                                     "Health": red_health}}],
               "PowerSupplies": ref(SUPPLIES),
               "Status": {"State": "Enabled", "Health": worst([red_health, rack_health(svc)])}})


@router.get(SUPPLIES)
def supplies(svc: HostService = Depends(service)) -> JSONResponse:
    members = [ref(f"{SUPPLIES}/Node{n.id}") for n in svc.rack.nodes]
    return ok({"@odata.id": SUPPLIES, "@odata.type": otype("PowerSupplyCollection"),
               "Name": "Converter nodes", "Members": members,
               "Members@odata.count": len(members)})


@router.get(SUPPLIES + "/{nid}")
def supply(nid: str, svc: HostService = Depends(service)) -> JSONResponse:
    ns = _supply(svc, nid)
    n = ns.node
    path = f"{SUPPLIES}/{nid}"
    return ok({"@odata.id": path, "@odata.type": otype("PowerSupply"), "Id": nid,
               "Name": f"Converter node {n.id} (segment {n.segment})",
               "PowerSupplyType": "DCRegulator", "PowerCapacityWatts": n.rating_w,
               "FirmwareVersion": str(ns.hello.get("FW_VERSION", "")),
               "EfficiencyRatings": [{"LoadPercent": round(100 * x, 1),
                                      "EfficiencyPercent": round(100 * e, 2)}
                                     for x, e in n.efficiency],
               "OutputRails": [{"NominalVoltage": svc.rack.bus_voltage,
                                "PhysicalContext": "DCBus"}],
               "Location": {"PartLocation": {"ServiceLabel": f"node {n.id}",
                                             "LocationType": "Slot",
                                             "LocationOrdinalValue": n.position[0]}},
               "Status": node_status(svc, ns), "Metrics": ref(path + "/Metrics")})


@router.get(SUPPLIES + "/{nid}/Metrics")
def supply_metrics(nid: str, svc: HostService = Depends(service)) -> JSONResponse:
    ns = _supply(svc, nid)
    t = ns.telemetry
    return ok({"@odata.id": f"{SUPPLIES}/{nid}/Metrics", "@odata.type": otype("PowerSupplyMetrics"),
               "Id": "Metrics", "Name": f"Node {ns.node.id} metrics",
               "Status": node_status(svc, ns), "InputVoltage": _reading(t, "READ_VIN"),
               "InputCurrentAmps": _reading(t, "READ_IIN"),
               "OutputPowerWatts": _reading(t, "READ_POUT"),
               "RailVoltage": [_reading(t, "READ_VOUT")],
               "RailCurrentAmps": [_reading(t, "READ_IOUT")],
               "TemperatureCelsius": _reading(t, "READ_TEMPERATURE_1")})


# ---- sensors -------------------------------------------------------------------------------
def thresholds(svc: HostService, kind: str, ns: NodeState) -> dict[str, Any]:
    n = ns.node
    if kind == "Vout":
        return {"UpperCaution": {"Reading": round(n.vout_max * 1.05, 3)},
                "UpperCritical": {"Reading": round(n.vout_max * 1.10, 3)},
                "LowerCaution": {"Reading": round(CAUTION_V_PU * svc.rack.bus_voltage, 3)}}
    if kind == "Iout":
        return {"UpperCaution": {"Reading": round(n.iout_max * 1.05, 3)},
                "UpperCritical": {"Reading": round(n.iout_max * 1.25, 3)}}
    if kind == "Temp":
        return {"UpperCaution": {"Reading": TEMP_CAUTION_C},
                "UpperCritical": {"Reading": TEMP_CRITICAL_C}}
    return {"UpperCaution": {"Reading": n.rating_w}}


def sensor_status(svc: HostService, ns: NodeState, kind: str, v: Any, th: dict[str, Any]
                  ) -> dict[str, str]:
    """A sensor's health is its reading against its own thresholds (a Vout under its lower
    caution is a Warning, under the brownout level Critical)."""
    if ns.state != "online" or not isinstance(v, int | float):
        return {"State": "UnavailableOffline", "Health": "Critical"}
    on = ns.telemetry.get("MODE") in OUTPUT_MODES
    health = "OK"
    if "UpperCritical" in th and v > th["UpperCritical"]["Reading"]:
        health = "Critical"
    elif "UpperCaution" in th and v > th["UpperCaution"]["Reading"]:
        health = "Warning"
    if kind == "Vout" and on:
        if v < BROWNOUT_V_PU * svc.rack.bus_voltage:
            health = "Critical"
        elif v < th["LowerCaution"]["Reading"] and health == "OK":
            health = "Warning"
    return {"State": "Enabled", "Health": health}


@router.get(RACK + "/Sensors")
def sensor_list(svc: HostService = Depends(service)) -> JSONResponse:
    members = [ref(f"{RACK}/Sensors/Node{n.id}{k}") for n in svc.rack.nodes for k in SENSORS]
    return ok({"@odata.id": RACK + "/Sensors", "@odata.type": otype("SensorCollection"),
               "Name": "Rack sensors", "Members": members, "Members@odata.count": len(members)})


@router.get(RACK + "/Sensors/{sid}")
def sensor(sid: str, svc: HostService = Depends(service)) -> JSONResponse:
    kind = sid[-4:]
    ns = node_named(svc, sid[:-4])
    if ns is None or kind not in SENSORS:
        raise not_found("Sensor", sid)
    field, rtype, units, ctx = SENSORS[kind]
    v = ns.telemetry.get(field) if ns.state == "online" else None
    th = thresholds(svc, kind, ns)
    return ok({"@odata.id": f"{RACK}/Sensors/{sid}", "@odata.type": otype("Sensor"),
               "Id": sid, "Name": f"Node {ns.node.id} {rtype.lower()}",
               "Reading": float(v) if isinstance(v, int | float) else None,
               "ReadingType": rtype, "ReadingUnits": units, "PhysicalContext": ctx,
               "Thresholds": th, "Status": sensor_status(svc, ns, kind, v, th)})


# ---- controls ------------------------------------------------------------------------------
def control_body(path: str, cid: str, name: str, setpoint: float | None, lo: float, hi: float,
                 mode: str) -> dict[str, Any]:
    return {"@odata.id": path, "@odata.type": otype("Control"), "Id": cid, "Name": name,
            "ControlType": "Power", "SetPoint": setpoint, "SetPointUnits": "W",
            "AllowableMin": lo, "AllowableMax": hi, "ControlMode": mode,
            "Status": {"State": "Enabled", "Health": "OK"}}


def _output_node(svc: HostService, cid: str) -> NodeState:
    ns = node_named(svc, cid[:-6]) if cid.endswith("Output") else None
    if ns is None:
        raise not_found("Control", cid)
    return ns


def output_body(svc: HostService, cid: str, ns: NodeState) -> dict[str, Any]:
    a = svc.allocation()
    pin = svc.node_output_pin(ns.node.id)
    share = pin if pin is not None else (a.nodes[ns.node.id]["share_w"] if a else None)
    return control_body(f"{RACK}/Controls/{cid}", cid,
                        f"Node {ns.node.id} output (planned by the allocator unless pinned)",
                        share, 0.0, ns.node.rating_w,
                        "Override" if pin is not None else "Automatic")


@router.get(RACK + "/Controls")
def rack_controls(svc: HostService = Depends(service)) -> JSONResponse:
    members = [ref(f"{RACK}/Controls/Node{n.id}Output") for n in svc.rack.nodes]
    return ok({"@odata.id": RACK + "/Controls", "@odata.type": otype("ControlCollection"),
               "Name": "Converter output setpoints", "Members": members,
               "Members@odata.count": len(members)})


@router.get(RACK + "/Controls/{cid}")
def rack_control(cid: str, svc: HostService = Depends(service)) -> JSONResponse:
    return ok(output_body(svc, cid, _output_node(svc, cid)))


async def audited_write(request: Request, svc: HostService,
                        apply: Callable[[dict[str, Any]], JSONResponse]) -> JSONResponse:
    """A PATCH: the writer's rights, the control loop and a JSON object of writable properties
    checked, then `apply(body)`; every answer, refusals included, is audited (by the app)."""
    raw = (await request.body()).decode("utf-8", "replace")
    try:
        p = who(request)
        if p is None:
            raise RedfishError(unauthorised())
        if not p.may_write:
            raise RedfishError(error(403, f"'{p.name}' is read-only", MSG + "InsufficientPrivilege"))
        if not svc.has_control:
            raise RedfishError(error(409, "this host runs without its control loop",
                                     MSG + "ActionNotSupported", ["PATCH"]))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict) or not body:
            raise RedfishError(error(400, "give SetPoint (W) or ControlMode",
                                     MSG + "PropertyMissing", ["SetPoint"]))
        unknown = sorted(set(body) - {"SetPoint", "ControlMode"})
        if unknown:
            raise RedfishError(error(400, f"property {unknown[0]} is not writable",
                                     MSG + "PropertyNotWritable", [unknown[0]]))
        return apply(body)
    except RedfishError as e:
        return e.response


def pin_output(svc: HostService, cid: str, body: dict[str, Any]) -> JSONResponse:
    """Pin a converter's output (SetPoint, W; ControlMode Override) or hand it back to the
    allocator (ControlMode Automatic). A pin is kept only if the allocation it leads to passes
    the allocator's load-flow check."""
    ns = _output_node(svc, cid)
    mode = body.get("ControlMode", "Override")
    if mode == "Automatic":
        watts = None
    elif mode == "Override" and "SetPoint" in body:
        watts = body["SetPoint"]
    else:
        return error(400, "ControlMode Override needs a SetPoint; Automatic hands the output "
                          "back to the allocator", MSG + "PropertyValueNotInList",
                     [str(mode), "ControlMode"])
    try:
        svc.pin_node_output(ns.node.id, watts)
    except Invalid as e:
        return error(400, str(e), MSG + "PropertyValueOutOfRange",
                     [str(body.get("SetPoint")), "SetPoint"])
    except Conflict as e:
        return error(409, str(e), MSG + "PropertyValueConflict",
                     [str(body.get("SetPoint")), "SetPoint"])
    return ok(output_body(svc, cid, ns))


@writes.patch(RACK + "/Controls/{cid}")
async def rack_control_patch(cid: str, request: Request, svc: HostService = Depends(service)
                             ) -> JSONResponse:
    return await audited_write(request, svc, lambda body: pin_output(svc, cid, body))


# ---- devices -------------------------------------------------------------------------------
@router.get(CH + "/{dev}")
def device_chassis(dev: str, svc: HostService = Depends(service)) -> JSONResponse:
    dv = _device(svc, dev)
    return ok({"@odata.id": f"{CH}/{dev}", "@odata.type": otype("Chassis"), "Id": dev,
               "Name": f"Device {dev} (priority {dv.priority}, segment {dv.segment})",
               "ChassisType": "RackMount", "Status": {"State": "Enabled", "Health": "OK"},
               "EnvironmentMetrics": ref(f"{CH}/{dev}/EnvironmentMetrics"),
               "Controls": ref(f"{CH}/{dev}/Controls"), "Links": {"ContainedBy": ref(RACK)}})


@router.get(CH + "/{dev}/EnvironmentMetrics")
def env(dev: str, svc: HostService = Depends(service)) -> JSONResponse:
    dv = _device(svc, dev)
    a = svc.allocation()
    cap = svc.device_cap(dev)
    return ok({"@odata.id": f"{CH}/{dev}/EnvironmentMetrics",
               "@odata.type": otype("EnvironmentMetrics"), "Id": "EnvironmentMetrics",
               "Name": f"Device {dev} power",
               "PowerWatts": {"Reading": a.devices[dev]["measured_w"] if a else None},
               "PowerLimitWatts": {"SetPoint": cap if cap is not None else dv.p_max_w,
                                   "AllowableMin": dv.p_min_w, "AllowableMax": dv.p_max_w,
                                   "ControlMode": "Automatic" if cap is None else "Override"}})


@router.get(CH + "/{dev}/Controls")
def dev_controls(dev: str, svc: HostService = Depends(service)) -> JSONResponse:
    _device(svc, dev)
    return ok({"@odata.id": f"{CH}/{dev}/Controls", "@odata.type": otype("ControlCollection"),
               "Name": f"Device {dev} controls",
               "Members": [ref(f"{CH}/{dev}/Controls/PowerLimit")], "Members@odata.count": 1})


def limit_body(svc: HostService, dev: str) -> dict[str, Any]:
    dv = _device(svc, dev)
    lim = svc.device_limit(dev)
    return control_body(f"{CH}/{dev}/Controls/PowerLimit", "PowerLimit",
                        f"Device {dev} power limit", lim if lim is not None else dv.p_max_w,
                        dv.p_min_w, dv.p_max_w, "Override" if lim is not None else "Automatic")


@router.get(CH + "/{dev}/Controls/PowerLimit")
def dev_limit(dev: str, svc: HostService = Depends(service)) -> JSONResponse:
    return ok(limit_body(svc, dev))


def set_limit(svc: HostService, dev: str, body: dict[str, Any]) -> JSONResponse:
    dv = _device(svc, dev)
    if "SetPoint" not in body:
        return error(400, "give SetPoint (W)", MSG + "PropertyMissing", ["SetPoint"])
    sp = body["SetPoint"]
    if isinstance(sp, bool) or not isinstance(sp, int | float) or not dv.p_min_w <= sp <= dv.p_max_w:
        return error(400, f"SetPoint {sp!r} is outside {dv.p_min_w}..{dv.p_max_w} W",
                     MSG + "PropertyValueOutOfRange", [str(sp), "SetPoint"])
    try:
        svc.set_device_limit(dev, float(sp))
    except Invalid as e:
        return error(400, str(e), MSG + "PropertyValueConflict", ["SetPoint", str(sp)])
    return ok(limit_body(svc, dev))


@writes.patch(CH + "/{dev}/Controls/PowerLimit")
async def dev_limit_patch(dev: str, request: Request, svc: HostService = Depends(service)
                          ) -> JSONResponse:
    return await audited_write(request, svc, lambda body: set_limit(svc, dev, body))


# ---- the legacy Power resource -----------------------------------------------------------
@router.get(RACK + "/Power")
def legacy_power(svc: HostService = Depends(service)) -> JSONResponse:
    rack, a = svc.rack, svc.allocation()
    online = [ns for ns in svc.node_states() if ns.state == "online"]
    consumed = sum(float(ns.telemetry.get("READ_POUT") or 0.0) for ns in online)
    path = RACK + "/Power"
    psus = [{"@odata.id": f"{path}#/PowerSupplies/{k}", "MemberId": str(k),
             "Name": f"Converter node {ns.node.id}", "PowerSupplyType": "DC",
             "PowerCapacityWatts": ns.node.rating_w,
             "LastPowerOutputWatts": ns.telemetry.get("READ_POUT"),
             "Status": node_status(svc, ns)} for k, ns in enumerate(svc.node_states())]
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

