"""Redfish PowerEquipment: the rack's DC mesh, one electrical bus (PowerDistribution, type Bus)
per segment, its converters as Mains circuits and its ties as Branch circuits (On = closed)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from powerflow.api.deps import service
from powerflow.api.redfish.common import (OUTPUT_MODES, V1, authed, node_named, node_status,
                                          not_found, ok, otype, ref)
from powerflow.model.mesh import port_closed
from powerflow.service import HostService

PE = V1 + "/PowerEquipment"
BUS = PE + "/ElectricalBuses"
NOMINAL = {12.0: "DC12V", 48.0: "DC48V", 5.0: "DC5V", 16.0: "DC16V"}  # Redfish's names
KINDS = ("Mains", "Branches")

router = APIRouter(include_in_schema=False, dependencies=[Depends(authed)])


def tie_closed(svc: HostService, k: int) -> bool:
    """Branch k as the allocation has it, else as its node reports its port, else normal."""
    a = svc.allocation()
    if a is not None:
        return bool(a.closed[k])
    b = svc.rack.branches[k]
    if b.port is None:
        return b.closed
    ps = svc.node_state(b.port[0]).telemetry.get("PORT_STATE")
    return b.closed if ps is None else port_closed(int(ps), b.port[1])


def circuits(svc: HostService, seg: str, kind: str) -> list[str]:
    if kind == "Mains":
        return [f"Node{n.id}" for n in svc.rack.nodes if n.segment == seg]
    return [b.id for b in svc.rack.branches if b.from_ == seg]


def _segment(svc: HostService, seg: str) -> None:
    if seg not in svc.rack.segments:
        raise not_found("Bus", seg, f"no bus segment {seg}")


@router.get(PE)
def power_equipment(svc: HostService = Depends(service)) -> JSONResponse:
    return ok({"@odata.id": PE, "@odata.type": otype("PowerEquipment"), "Id": "PowerEquipment",
               "Name": f"Rack {svc.rack.name} power mesh",
               "Status": {"State": "Enabled", "Health": "OK"}, "ElectricalBuses": ref(BUS)})


@router.get(BUS)
def buses(svc: HostService = Depends(service)) -> JSONResponse:
    members = [ref(f"{BUS}/{sg}") for sg in svc.rack.segments]
    return ok({"@odata.id": BUS, "@odata.type": otype("PowerDistributionCollection"),
               "Name": "Bus segments", "Members": members, "Members@odata.count": len(members)})


@router.get(BUS + "/{seg}")
def bus(seg: str, svc: HostService = Depends(service)) -> JSONResponse:
    _segment(svc, seg)
    return ok({"@odata.id": f"{BUS}/{seg}", "@odata.type": otype("PowerDistribution"),
               "Id": seg, "Name": f"Bus segment {seg}", "EquipmentType": "Bus",
               "Status": {"State": "Enabled", "Health": "OK"},
               "Mains": ref(f"{BUS}/{seg}/Mains"), "Branches": ref(f"{BUS}/{seg}/Branches")})


@router.get(BUS + "/{seg}/{kind}")
def circuit_list(seg: str, kind: str, svc: HostService = Depends(service)) -> JSONResponse:
    if seg not in svc.rack.segments or kind not in KINDS:
        raise not_found(kind, seg, f"no {kind} on {seg}")
    members = [ref(f"{BUS}/{seg}/{kind}/{c}") for c in circuits(svc, seg, kind)]
    return ok({"@odata.id": f"{BUS}/{seg}/{kind}", "@odata.type": otype("CircuitCollection"),
               "Name": f"{kind} of segment {seg}", "Members": members,
               "Members@odata.count": len(members)})


@router.get(BUS + "/{seg}/{kind}/{cid}")
def circuit(seg: str, kind: str, cid: str, svc: HostService = Depends(service)) -> JSONResponse:
    if seg not in svc.rack.segments or kind not in KINDS or cid not in circuits(svc, seg, kind):
        raise not_found("Circuit", cid)
    body: dict[str, Any] = {"@odata.id": f"{BUS}/{seg}/{kind}/{cid}",
                            "@odata.type": otype("Circuit"), "Id": cid,
                            "NominalVoltage": NOMINAL.get(svc.rack.bus_voltage, "DC")}
    if kind == "Mains":
        ns = node_named(svc, cid)
        assert ns is not None  # cid is one of the segment's Mains
        t = ns.telemetry if ns.state == "online" else {}

        def rd(k: str) -> dict[str, Any]:
            v = t.get(k)
            return {"Reading": float(v) if isinstance(v, int | float) else None}

        body.update({"Name": f"Converter node {ns.node.id} into segment {seg}",
                     "CircuitType": "Mains",
                     "PowerState": "On" if t.get("MODE") in OUTPUT_MODES else "Off",
                     "Voltage": rd("READ_VOUT"), "CurrentAmps": rd("READ_IOUT"),
                     "PowerWatts": rd("READ_POUT"), "Status": node_status(svc, ns)})
    else:
        k = next(i for i, b in enumerate(svc.rack.branches) if b.id == cid)
        b = svc.rack.branches[k]
        closed = tie_closed(svc, k)
        body.update({"Name": f"Tie {b.id}: segment {b.from_} to {b.to}"
                             + (f" (node {b.port[0]} port {b.port[1]})" if b.port else ""),
                     "CircuitType": "Branch", "PowerState": "On" if closed else "Off",
                     "BreakerState": "Normal" if closed else "Off",
                     "Status": {"State": "Enabled" if closed else "Disabled", "Health": "OK"}})
    return ok(body)
