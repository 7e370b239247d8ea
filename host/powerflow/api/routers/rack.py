"""Reads of the rack: status, description, nodes, faults, alarms, history, series, events,
audit."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from powerflow.api.deps import service
from powerflow.api.errors import errors
from powerflow.api.models import (Alarm, AuditRow, EventRow, FaultRow, History, NodeDetail,
                                  NodeRow, RackDescription, SeriesOut, Status)
from powerflow.service import HostService

router = APIRouter()


@router.get("/status")
def status(svc: HostService = Depends(service)) -> Status:
    return Status(**svc.status())


@router.get("/rack")
def rack(svc: HostService = Depends(service)) -> RackDescription:
    """The rack's description: segments, nodes, tie switches, devices."""
    r = svc.rack
    return RackDescription.model_validate({
        "name": r.name, "bus_voltage": r.bus_voltage, "breaker_limit_w": r.breaker_limit_w,
        "segments": list(r.segments),
        "nodes": [{"id": n.id, "segment": n.segment, "rating_w": n.rating_w,
                   "position": list(n.position)} for n in r.nodes],
        "branches": [{"id": b.id, "from": b.from_, "to": b.to, "switch": b.switch,
                      "normally_closed": b.closed, "port": list(b.port) if b.port else None}
                     for b in r.branches],
        "devices": [{"id": dv.id, "segment": dv.segment, "priority": dv.priority,
                     "p_min_w": dv.p_min_w, "p_max_w": dv.p_max_w} for dv in r.devices]})


@router.get("/nodes")
def nodes(svc: HostService = Depends(service)) -> list[NodeRow]:
    """Every node: link state, measurements, and `excluded` / `excluded_why` /
    `excluded_since` (out of the plan) and `telemetry_age_s`."""
    return [NodeRow.model_validate(row) for row in svc.nodes()]


@router.get("/nodes/{node_id}", responses=errors(404))
def node(node_id: int, svc: HostService = Depends(service)) -> NodeDetail:
    return NodeDetail.model_validate(svc.node(node_id))


@router.get("/alarms")
def alarms(svc: HostService = Depends(service)) -> list[Alarm]:
    """The active alarms, most severe first: kind, severity (critical, major, minor,
    warning), node (null for the rack), since (Unix time), detail."""
    return svc.alarms()


@router.get("/faults")
def faults(svc: HostService = Depends(service)) -> list[FaultRow]:
    """Nodes with latched faults, warnings, a lost link, or taken out of the plan."""
    return [FaultRow.model_validate(row) for row in svc.faults()]


@router.get("/history", responses=errors(404))
def history(node: int, metric: str, since: float, until: float | None = None,
            svc: HostService = Depends(service)) -> History:
    """One node's metric between two instants (Unix time, s)."""
    return History(node=node, metric=metric, points=svc.history(node, metric, since, until))


@router.get("/series", responses=errors(422))
def series(since: float, until: float | None = None,
           max_points: int = Query(600, ge=10, le=5000),
           svc: HostService = Depends(service)) -> SeriesOut:
    """Device demand, forecast, P95 and cap (W) and the measured bus (V) per control period
    between two instants (Unix time, s), averaged down to `max_points` per series."""
    return SeriesOut.model_validate(svc.series(since, until, max_points))


@router.get("/events")
def events(since: float = 0.0, svc: HostService = Depends(service)) -> list[EventRow]:
    return [EventRow.model_validate(e) for e in svc.events(since)]


@router.get("/audit")
def audit(since: float = 0.0, svc: HostService = Depends(service)) -> list[AuditRow]:
    """Every write to this API: who, what, when, and the answer's status."""
    return [AuditRow.model_validate(row) for row in svc.audit(since)]
