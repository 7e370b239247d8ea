"""What comes into the host besides the nodes: agent samples, and faults for an emulated rack."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from powerflow.api.deps import service
from powerflow.api.errors import errors
from powerflow.api.models import AgentCap, AgentSample, FaultApplied
from powerflow.emulator.faults import Fault
from powerflow.service import HostService

router = APIRouter()


# async: node processes restarted here must be children of the event-loop thread, which
# lives as long as the host (they are set to die with the thread that started them)
@router.post("/emulator/faults", responses=errors(409))
async def inject(req: Fault, svc: HostService = Depends(service)) -> FaultApplied:
    """Inject a fault into the emulated rack (see the fault kinds in the request schema)."""
    return FaultApplied.model_validate(svc.inject_fault(req))


@router.post("/agent/samples", responses=errors(404, 409))
def agent_sample(req: AgentSample, svc: HostService = Depends(service)) -> AgentCap:
    """A server's agent reports its device; the answer carries the cap to apply (W) and the
    power smoothing (ramp rates, W/s) where the policy commands it."""
    cap, (up, down) = svc.agent_sample(req.device, req.power_w, req.utilisation)
    return AgentCap(device=req.device, cap_w=cap, smoothing_up_w_per_s=up,
                    smoothing_down_w_per_s=down)
