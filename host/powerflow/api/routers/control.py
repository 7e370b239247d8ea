"""The control loop: on/off, its allocation, the next plan, forecasts, policy."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from powerflow.api.deps import service
from powerflow.api.errors import errors
from powerflow.api.models import (AllocationOut, ControlState, ControlStatus, ForecastOut,
                                  PolicyChange, PolicyView)
from powerflow.service import HostService

router = APIRouter()


@router.get("/control", responses=errors(409))
def control_state(svc: HostService = Depends(service)) -> ControlStatus:
    return ControlStatus(**svc.control_state())


@router.put("/control", responses=errors(409))
def set_control(req: ControlState, svc: HostService = Depends(service)) -> ControlStatus:
    """Pause (setpoints become the operator's, with an alarm) or resume the control loop."""
    return ControlStatus(**svc.set_control(req.enabled))


@router.get("/allocation", responses=errors(404, 409))
def allocation(svc: HostService = Depends(service)) -> AllocationOut:
    """The allocation of the last period, with the bus as measured."""
    return AllocationOut.model_validate(svc.last_allocation().as_dict())


@router.get("/plan", responses=errors(409))
async def plan(svc: HostService = Depends(service)) -> AllocationOut:
    """The next allocation from the present forecasts, not applied."""
    # on the event loop's thread, as the control loop: a preview never runs beside a
    # period (and is pure: it works on copies and writes no controller state)
    return AllocationOut.model_validate(svc.preview().as_dict())


@router.get("/forecasts", responses=errors(409))
def forecasts(svc: HostService = Depends(service)) -> dict[str, ForecastOut]:
    """Per device: mean and P95 demand (W) per horizon (s), and the model chosen."""
    return {dev: ForecastOut.model_validate(f) for dev, f in svc.forecasts().items()}


@router.get("/policy", responses=errors(409))
def policy(svc: HostService = Depends(service)) -> PolicyView:
    return PolicyView(policy=svc.policy(), profiles=svc.profiles())


@router.put("/policy", responses=errors(409))
def set_policy(req: PolicyChange, svc: HostService = Depends(service)) -> PolicyView:
    """Change policy fields (or switch profile); a refused change leaves the policy as it was."""
    svc.set_policy(req.model_extra or {})
    return PolicyView(policy=svc.policy(), profiles=svc.profiles())
