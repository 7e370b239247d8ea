"""What every Redfish router shares: the schema versions, the error message format, the caller
(basic auth or a session) and the converters' health as measured."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from pfproto import defs as d
from powerflow.api.access import Access, Throttled
from powerflow.api.auth import Principal
from powerflow.manager import NodeState
from powerflow.model.rack import BROWNOUT_V_PU
from powerflow.service import HostService, NotFound

V1 = "/redfish/v1"
CH = V1 + "/Chassis"
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
MSG = "Base.1.19."  # the Base message registry version used

# the modes in which a converter carries load, and those that are a warning in themselves
OUTPUT_MODES = (d.MODE_SOFTSTART, d.MODE_CV, d.MODE_CC)
WARNING_MODES = (d.MODE_CC, d.MODE_FAILSAFE)
TRIP_FAULTS = d.FAULT_OV | d.FAULT_UV | d.FAULT_OC | d.FAULT_OT  # a protection tripped
CAUTION_V_PU = 0.97  # a converter's output under this x nominal is a Warning


def otype(name: str) -> str:
    v = SCHEMAS[name]
    return f"#{name}.{name}" if v is None else f"#{name}.{v}.{name}"


def ref(path: str) -> dict[str, str]:
    return {"@odata.id": path}


def ok(body: dict[str, Any], status: int = 200, extra: dict[str, str] | None = None
       ) -> JSONResponse:
    return JSONResponse(body, status, headers={**HEADERS, **(extra or {})})


def error(status: int, message: str, msg_id: str = MSG + "GeneralError",
          args: list[str] | None = None) -> JSONResponse:
    """A Redfish error answer: `error` with one `@Message.ExtendedInfo` of the Base registry."""
    return JSONResponse({"error": {"code": msg_id, "message": message, "@Message.ExtendedInfo": [{
        "@odata.type": "#Message.v1_3_0.Message", "MessageId": msg_id, "Message": message,
        "MessageArgs": args or [], "Severity": "Critical" if status >= 500 else "Warning",
        "Resolution": "Correct the request and resubmit it."}]}}, status, headers=HEADERS)


class RedfishError(Exception):
    """Raised with the Redfish error response to send (the app answers with it)."""

    def __init__(self, response: JSONResponse) -> None:
        super().__init__(response.status_code)
        self.response = response


def not_found(kind: str, name: str, message: str | None = None) -> RedfishError:
    return RedfishError(error(404, message or f"no {kind.lower()} {name}",
                              MSG + "ResourceNotFound", [kind, name]))


# ---- the caller ------------------------------------------------------------------------------
def throttled(e: Throttled) -> RedfishError:
    resp = error(429, str(e), MSG + "ServiceTemporarilyUnavailable", [str(e.retry_after)])
    resp.headers["Retry-After"] = str(e.retry_after)
    return RedfishError(resp)


def unauthorised() -> JSONResponse:
    resp = error(401, "authentication needed: basic auth or a session's X-Auth-Token",
                 MSG + "NoValidSession")
    resp.headers["WWW-Authenticate"] = 'Basic realm="PowerFlow"'
    return resp


def access_of(request: Request) -> Access:
    acc: Access = request.app.state.access
    return acc


def who(request: Request) -> Principal | None:
    """The caller (basic auth or a session's X-Auth-Token), recorded for the audit."""
    try:
        p = access_of(request).authenticate(request)
    except Throttled as e:
        raise throttled(e) from None
    request.state.principal = p
    return p


def authed(request: Request) -> Principal:
    """A dependency: the caller, or the Redfish 401."""
    p = who(request)
    if p is None:
        raise RedfishError(unauthorised())
    return p


# ---- health, from what is measured -------------------------------------------------------
def worst(healths: list[str]) -> str:
    return "Critical" if "Critical" in healths else "Warning" if "Warning" in healths else "OK"


def node_status(svc: HostService, ns: NodeState) -> dict[str, str]:
    """A converter's status from what is measured: its link, its own fault bits and mode, its
    output against the bus band, and the control loop's verdict."""
    t = ns.telemetry
    if ns.state != "online":
        return {"State": "UnavailableOffline", "Health": "Critical"}
    faults = int(t.get("FAULTS") or 0)
    mode = t.get("MODE")
    state = "Enabled" if mode in OUTPUT_MODES else "StandbyOffline"
    health = "Critical" if faults & TRIP_FAULTS else "Warning" if mode in WARNING_MODES else "OK"
    vout = t.get("READ_VOUT")
    nominal = svc.rack.bus_voltage
    if mode in OUTPUT_MODES and isinstance(vout, int | float):
        if vout < BROWNOUT_V_PU * nominal:
            health = "Critical"
        elif vout < CAUTION_V_PU * nominal and health == "OK":
            health = "Warning"
    verdict = svc.node_verdict(ns.node.id)
    if verdict is not None:
        judged, why = verdict
        if judged == "quarantined":
            state, health = "UnavailableOffline", "Critical"
        elif judged == "suspect":
            state = "InTest"
            health = "Warning" if health == "OK" else health
        elif why and health == "OK":  # e.g. telemetry stale
            health = "Warning"
    return {"State": state, "Health": health}


def rack_health(svc: HostService) -> str:
    """The rack's health: its converters' and the active alarms'."""
    hs = [node_status(svc, ns)["Health"] for ns in svc.node_states()]
    hs += ["Critical" if al.severity == "critical" else "Warning" for al in svc.alarms()]
    return worst(hs)


def node_named(svc: HostService, name: str) -> NodeState | None:
    """The node a Redfish id such as `Node3` names, or None."""
    if not name.startswith("Node") or not name[4:].isdigit():
        return None
    try:
        return svc.node_state(int(name[4:]))
    except NotFound:
        return None
