"""The native API's request and response models: what `/openapi.json` documents, field by field.

Requests are strict (an unknown field is refused, 422). Responses name every field with its
unit; free-form maps are only where the content is the rack's own (telemetry fields by their
protocol names, a HELLO). Units: V, A, W, °C, s; instants are Unix time (s).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from powerflow.control.alarms import Alarm
from powerflow.control.policy import Policy


class Strict(BaseModel):
    """A request body: a field the API does not know is refused (422), not ignored."""

    model_config = ConfigDict(extra="forbid", strict=True)


# ---- requests ----------------------------------------------------------------------------
class SetpointRequest(Strict):
    vout: float | None = Field(None, gt=0, le=60, description="output voltage, V")
    on: bool | None = Field(None, description="output on (true) or off (false)")


class PortRequest(Strict):
    port: int = Field(ge=0, le=7, description="the node's mesh port")
    close: bool = Field(description="true closes the port's switch, false opens it")


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


# ---- responses: the rack -----------------------------------------------------------------
class Status(BaseModel):
    rack: str
    uptime_s: float = Field(description="s since the host started")
    nodes: int
    online: int = Field(description="nodes whose link is online")
    stored_rows: int = Field(description="telemetry rows written to the store")
    emulated: bool


class RackNode(BaseModel):
    id: int
    segment: str
    rating_w: float = Field(description="W")
    position: list[int] = Field(description="[slot, height] in the rack")


class RackBranch(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str
    from_: str = Field(alias="from", description="segment at one end")
    to: str = Field(description="segment at the other end")
    switch: str = Field(description="none or tie")
    normally_closed: bool
    port: list[int] | None = Field(description="[node, port] whose switch it is, if any")


class RackDevice(BaseModel):
    id: str
    segment: str
    priority: int = Field(description="1 is the most important")
    p_min_w: float = Field(description="W the device needs at least")
    p_max_w: float = Field(description="W the device can draw at most")


class RackDescription(BaseModel):
    name: str
    bus_voltage: float = Field(description="nominal bus voltage, V")
    breaker_limit_w: float = Field(description="the rack feed's limit, W")
    segments: list[str]
    nodes: list[RackNode]
    branches: list[RackBranch]
    devices: list[RackDevice]


class NodeRow(BaseModel):
    """A node as measured: its link, latest telemetry, and the control loop's view of it."""

    id: int
    state: str = Field(description="link state: connecting, online, lost, link-error")
    link_error: str | None = Field(None, description="why the link last failed to open (the "
                                   "OS's words); null once it opens")
    link: str = Field(description="the node's transport address")
    segment: str
    mode: str = Field(description="off, softstart, cv, cc, failsafe, fault or unknown")
    vout: float | None = Field(description="output voltage, V")
    iout: float | None = Field(description="output current, A (+ sourcing)")
    pout: float | None = Field(description="output power, W")
    temperature: float | None = Field(description="converter temperature, °C")
    ambient: float | None = Field(description="ambient temperature, °C")
    humidity: float | None = Field(description="relative humidity, %")
    iout_limit: float | None = Field(description="derated current limit, A")
    vout_command: float | None = Field(description="commanded output voltage, V")
    status_word: int | None = Field(description="PMBus STATUS_WORD")
    faults: int | None = Field(description="latched FAULT_* bits")
    warnings: int | None = Field(description="FAULT_* bits in warning")
    port_state: int | None = Field(description="bit k set: port k closed")
    lease_left_ms: int | None = Field(description="ms left of the setpoint lease")
    rejects: int = Field(description="frames the node refused, all reasons")
    lost_count: int = Field(description="times the link was declared lost")
    firmware: str | None
    vout_max: float = Field(description="the highest setpoint the host will send, V")
    host_refused: dict[str, int] = Field(description="frames the host refused, by reason")
    telemetry_age_s: float | None = Field(description="s since the latest telemetry")
    excluded: bool = Field(description="the control loop has the node out of the plan")
    excluded_why: str | None
    excluded_since: float | None = Field(description="Unix time, s")


class SeriesOut(BaseModel):
    """Per-period values of the control loop: for each device `measured_w`, `forecast_w`,
    `p95_w`, `cap_w` (W; a cap only while capped); for `rack` the measured `bus_vmin` and
    `bus_vmax` (V). Points are [t (Unix s), value]."""

    since: float = Field(description="Unix time, s")
    until: float = Field(description="Unix time, s")
    bucket_s: float = Field(description="s averaged into each point; 0: as stored (one per "
                                        "period, or per minute where older than an hour)")
    # [t, value] pairs as two-number lists: a tuple nested in maps becomes a JSON Schema
    # (`items` as an array) that OpenAPI 3.1 tools refuse
    sources: dict[str, dict[str, list[list[float]]]] = Field(
        description="source (device id or `rack`) -> metric -> [[Unix time (s), value], ...]")


class EventRow(BaseModel):
    t: float = Field(description="Unix time, s")
    node: int | None = Field(description="the node it concerns, null for the rack")
    kind: str
    detail: str


class NodeDetail(NodeRow):
    telemetry: dict[str, Any] = Field(description="latest telemetry by protocol field name")
    hello: dict[str, Any] = Field(description="the node's HELLO by protocol field name")
    events: list[EventRow] = Field(description="the node's latest events (up to 20)")


class FaultRow(BaseModel):
    node: int
    state: str = Field(description="link state")
    latched: list[str] = Field(description="latched fault names")
    warnings: list[str] = Field(description="fault names in warning")
    allocator: str = Field(description="why the allocator has the node as it has")
    status_word: int | None


class History(BaseModel):
    node: int
    metric: str
    points: list[tuple[float, float]] = Field(description="[Unix time (s), value] pairs")


class AuditRow(BaseModel):
    t: float = Field(description="Unix time, s")
    who: str = Field(description="token or user name, - when unauthenticated")
    role: str
    method: str
    path: str
    body: str = Field(description="the request body as text, capped; never a password")
    status: int = Field(description="the answer's HTTP status")


# ---- responses: commands -----------------------------------------------------------------
class OutputResult(BaseModel):
    node: int
    on: bool
    vout: float | None = Field(None, description="the setpoint now in force, V")


class PortResult(BaseModel):
    node: int
    port: int
    closed: bool
    pinned_tie: str | None = Field(None, description="while the control loop runs: the tie "
                                   "pinned in the policy (tie_override) instead of a switch")


class ClearResult(BaseModel):
    node: int
    cleared: bool


class FaultApplied(BaseModel):
    applied: str = Field(description="the fault kind applied")
    node: int | None


class AgentCap(BaseModel):
    device: str
    cap_w: float | None = Field(description="the cap the agent should apply, W; null: none")
    smoothing_up_w_per_s: float | None = Field(
        None, description="power smoothing to apply: the most the device's power may rise, "
                          "W/s (e.g. NVIDIA power smoothing's ramp-up rate); null: none")
    smoothing_down_w_per_s: float | None = Field(
        None, description="the most it may fall, W/s; null: none")


# ---- responses: control ------------------------------------------------------------------
class ControlStatus(BaseModel):
    enabled: bool = Field(description="false: paused, setpoints are the operator's")
    periods: int = Field(description="control periods run")
    period_s: float = Field(description="s")
    dispatch_errors: int = Field(description="commands that failed to reach a node")
    safe_mode: bool = Field(description="the supervisor holds every converter on at its safe output (droop-centred on nominal)")
    safe_mode_why: str | None
    safe_mode_trips: int
    late_periods: int = Field(description="periods that started late (no verdicts made)")
    max_late_s: float = Field(description="the latest a period started, s")
    verdicts: int = Field(description="verdicts the health judge has made")
    cycle_ms_last: float | None = Field(description="the last period's forecast + allocate, ms")
    cycle_ms_max_recent: float | None = Field(description="the longest of the last 300, ms")


class MeasuredBus(BaseModel):
    """The bus as the nodes measure it (fresh readings only)."""

    vmin: float | None = Field(None, description="V")
    vmax: float | None = Field(None, description="V")
    vmin_node: int | None = None
    current_limited: list[int] = Field(default_factory=list)
    failsafe: list[int] = Field(default_factory=list, description="nodes in their failsafe")
    readings: int = Field(0, description="fresh readings it is made of")


class Flow(BaseModel):
    id: str = Field(description="branch id")
    closed: bool
    current_a: float = Field(description="A, + from `from` to `to`")


class Predicted(BaseModel):
    loss_conversion_w: float = Field(description="W lost in the converters")
    loss_distribution_w: float = Field(description="W lost in the mesh")
    feed_w: float = Field(description="W drawn from the rack feed")
    supply_w: float = Field(
        description="W the caps are fitted to: what the converters that can run deliver "
                    "less the reserve, at most what the feed allows, plus the battery's "
                    "discharge counted on")
    demand_p95_w: float = Field(description="the devices' P95 demand, W")
    feed_limit_w: float | None = Field(
        default=None, description="the feed's limit the plan keeps to, W: the breaker's, or "
                                  "under a site controller the budget it leases (or the safe "
                                  "budget when no lease holds)")
    vmin: float = Field(description="V")
    vmax: float = Field(description="V")


class NodePlan(BaseModel):
    on: bool
    vref: float | None = Field(description="voltage setpoint, V; null when off")
    share_w: float = Field(description="planned output, W")
    plan_limit_w: float = Field(description="the most the plan lets it carry, W")
    loss_w: float = Field(description="its conversion loss, W")
    wake_below_v: float | None = Field(
        None, description="off but held ready (standby): it starts on its own if the bus "
                          "falls under this, V; null: on, or plainly off")
    why: str
    binding: str = Field(description="what limits it: none, plan limit, thermal")


class DevicePlan(BaseModel):
    measured_w: float = Field(description="W")
    forecast_w: float = Field(description="mean forecast, W")
    p95_w: float = Field(description="P95 forecast, W")
    cap_w: float | None = Field(description="cap, W; null: uncapped")
    ceiling_w: float | None = Field(None, description="the most it may draw (its p_max_w, or "
                                    "the policy's), W; a cap below it is the supply's")
    ready_w: float = Field(0.0, description="supply held ready for a job hinted to start "
                                            "soon, W (0: none); converters only, no caps")
    room_w: float | None = Field(None, description="room the caps keep for it while lower "
                                 "classes are capped, where a hint says it stays low (a "
                                 "job's pause, after a job's end) and measurement agrees, W; "
                                 "null: its p_max_w. Never a cap on the device itself")
    smoothing_up_w_per_s: float | None = Field(None, description="power smoothing commanded: the "
                                          "most its power may rise, W/s; null: none")
    smoothing_down_w_per_s: float | None = Field(None, description="the most it may fall, W/s; "
                                            "null: none")
    binding: str


class AllocationOut(BaseModel):
    """One period's allocation, with the bus as measured beside what was predicted."""

    t: float = Field(description="Unix time, s")
    state: str = Field(description="optimal, degraded (measurements disagree, a converter "
                                   "out, a fallback) or safe")
    ok: bool = Field(description="passed the load-flow check")
    fallback: bool = Field(description="the safe allocation was used")
    reason: str
    measured: MeasuredBus
    alarms: int = Field(description="active alarms when it was made")
    elapsed_ms: float
    battery_w: float = Field(description="W commanded, + discharging into the bus (its "
                                         "own loop adds what the feed's excess above "
                                         "battery_shave_above_w needs)")
    battery_shave_above_w: float | None = Field(description="feed W above which the battery "
                                                            "discharges by itself")
    closed: list[bool] = Field(description="per branch of the rack file")
    flows: list[Flow]
    predicted: Predicted
    nodes: dict[str, NodePlan] = Field(description="by node id")
    devices: dict[str, DevicePlan] = Field(description="by device id")


class ForecastOut(BaseModel):
    mean_w: dict[int, float] = Field(description="mean, W, by horizon (s)")
    p95_w: dict[int, float | None] = Field(description="P95, W, by horizon (s); null: "
                                                       "no bound yet")
    model: dict[int, str] = Field(description="the model chosen, by horizon (s)")
    stale: bool = Field(description="its input is stale")


class HintIn(Strict):
    """A scheduler's hint (its prolog or epilog) or a training framework's: `start` —
    `devices` start `job` at `at` (Unix time, s) or `in_s` from now (neither: now), drawing
    about `watts` (W) each for `duration_s` (s); `end` — `job` ends then; `pause` — the job's
    devices draw about `watts` each from then for `duration_s` (a checkpoint, an evaluation),
    then return to the job's watts. Advisory: a hint can make the allocator prepare more
    supply; it lowers a forecast only while measurement agrees; it expires at the job's end."""

    kind: Literal["start", "end", "pause"]
    job: str = Field(min_length=1, max_length=128, description="the scheduler's job id")
    devices: list[str] | None = Field(None, max_length=4096,
                                      description="start: the job's devices (rack device ids)")
    at: float | None = Field(None, description="when, Unix time (s)")
    in_s: float | None = Field(None, description="when, s from now (instead of at)")
    watts: float | None = Field(None, description="start: about this many W per device "
                                                  "(omitted: each device's p_max_w); pause: "
                                                  "about this many W per device in the pause")
    duration_s: float | None = Field(None, description="start: how long the job runs, s; "
                                                       "pause: how long the pause lasts, s")


class PauseOut(BaseModel):
    start: float = Field(description="Unix time (s) the pause starts")
    end: float = Field(description="Unix time (s) the job returns to its watts")
    watts: float = Field(description="W per device in the pause, about")


class HintOut(BaseModel):
    job: str
    devices: list[str]
    start: float = Field(description="Unix time (s) the job starts")
    end: float = Field(description="Unix time (s) it ends; the hint expires then")
    watts: float | None = Field(description="W per device, about; null: each device's "
                                            "p_max_w")
    pauses: list[PauseOut] = Field(description="its pauses still to end, by start")


class PolicyView(BaseModel):
    policy: Policy
    profiles: list[str]


__all__ = ["Alarm", "Policy"]  # response types used as they are (dataclasses)
