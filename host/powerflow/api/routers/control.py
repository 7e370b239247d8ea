"""The control loop: on/off, its allocation, the next plan, forecasts, job hints, policy."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from powerflow.api.deps import service
from powerflow.api.errors import errors
from powerflow.api.models import (AllocationOut, ControlState, ControlStatus, ForecastOut,
                                  HintIn, HintOut, PolicyChange, PolicyView)
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


@router.get("/hints", responses=errors(409))
async def hints(svc: HostService = Depends(service)) -> list[HintOut]:
    """The job hints in force, by start."""
    return [HintOut.model_validate(h) for h in svc.hints()]


@router.post("/hints", responses=errors(409, 422))
async def add_hint(req: HintIn, svc: HostService = Depends(service)) -> HintOut:
    """A scheduler's hint (operator role; audited): a job starting on devices, ending, or
    pausing (a checkpoint, an evaluation). Refused (422, nothing stored): an unknown device,
    a time in the past or more than an hour ahead, a power outside the devices' [0,
    p_max_w], an end or a pause for an unknown job, a pause outside its job or overlapping
    another."""
    # on the event loop's thread, as the control loop reads the hints: never beside a period
    return HintOut.model_validate(svc.add_hint(req.kind, req.job, req.devices, req.at,
                                               req.in_s, req.watts, req.duration_s))


@router.get("/policy", responses=errors(409))
def policy(svc: HostService = Depends(service)) -> PolicyView:
    return PolicyView(policy=svc.policy(), profiles=svc.profiles())


@router.put("/policy", responses=errors(409))
def set_policy(req: PolicyChange, svc: HostService = Depends(service)) -> PolicyView:
    """Change policy fields (or switch profile); a refused change leaves the policy as it was."""
    svc.set_policy(req.model_extra or {})
    return PolicyView(policy=svc.policy(), profiles=svc.profiles())
