"""Commands to one node: setpoint, port switch, clearing faults (manual only while paused)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from powerflow.api.deps import service
from powerflow.api.errors import errors
from powerflow.api.models import (ClearResult, OutputResult, PortRequest, PortResult,
                                  SetpointRequest)
from powerflow.service import HostService

router = APIRouter()


@router.post("/nodes/{node_id}/setpoint", responses=errors(404, 409, 504))
async def setpoint(node_id: int, req: SetpointRequest, svc: HostService = Depends(service)
                   ) -> OutputResult:
    """Set a node's output voltage (V) and/or switch it on or off; the control loop must be
    paused (409 otherwise)."""
    return OutputResult.model_validate(await svc.set_output(node_id, req.vout, req.on))


@router.post("/nodes/{node_id}/port", responses=errors(404, 409, 504))
async def port(node_id: int, req: PortRequest, svc: HostService = Depends(service)
               ) -> PortResult:
    """Open or close one of a node's mesh port switches. The control loop must be paused,
    except for a tie's switch, which is then pinned in the policy (`tie_override`, 409 if
    the allocator's check refuses it) and switched by the loop."""
    return PortResult.model_validate(await svc.set_port(node_id, req.port, req.close))


@router.post("/nodes/{node_id}/clear-faults", responses=errors(404, 409, 504))
async def clear(node_id: int, svc: HostService = Depends(service)) -> ClearResult:
    """Clear the node's latched faults; a quarantined node is re-admitted to the plan."""
    return ClearResult.model_validate(await svc.clear_faults(node_id))
