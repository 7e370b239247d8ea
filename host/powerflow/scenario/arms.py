"""What feeds the allocator in a scenario run: the three arms that price a forecast.

- `predictive`: the rack controller's own online forecaster (as the live host runs it);
- `reactive`: persistence only — each device's next power is its last, its P95 that plus the
  95th percentile of its recent rises (no model);
- `oracle`: perfect foresight of the scenario's own demand — each device's trace as the
  physics will play it, the scheduled load changes included: the mean and the peak over each
  horizon;
- `hinted`: the forecaster as in `predictive`, and job hints as a scheduler and a training
  loop would send them (`scenario_hints`): each training job announced HINT_NOTICE_S before
  it starts, with its devices, its busy power and its duration; each of its checkpoints and
  evaluation pauses a step ahead, with its power and length.

Each is an object with the forecaster's `step(y, u, stale) -> (means, uppers, models)`, one
call a control period; means and uppers per horizon (periods), W per device.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from powerflow.emulator.physics import RackPhysics
from powerflow.emulator.workloads import Workload
from powerflow.model.arrays import Floats
from powerflow.scenario.spec import Event, Scenario

ARMS = ("predictive", "reactive", "oracle", "hinted")
HINT_NOTICE_S = 60.0  # how long before a job starts its scheduler announces it (rack s)
REACTIVE_WINDOW = 60  # periods of rises the reactive P95 looks back on
ORACLE_SAMPLES = 10  # points a period the oracle looks at


class Reactive:
    """Persistence with an error band from recent rises (no model)."""

    def __init__(self, n_dev: int, horizons: tuple[int, ...], q: float = 0.95) -> None:
        self.h = horizons
        self.q = q
        self.last: Floats | None = None
        self.rises: deque[Floats] = deque(maxlen=REACTIVE_WINDOW)
        self.n = n_dev

    def step(self, y: Floats, u: Any = None, stale: Any = None
             ) -> tuple[dict[int, Floats], dict[int, Floats], dict[int, Any]]:
        if self.last is not None:
            self.rises.append(np.maximum(y - self.last, 0.0))
        self.last = y.copy()
        band = (np.quantile(np.array(self.rises), self.q, axis=0) if len(self.rises) >= 5
                else np.zeros(self.n))
        zero = np.zeros(self.n, np.int64)  # "persistence", in the controller's model names
        return ({h: y.copy() for h in self.h}, {h: y + band for h in self.h},
                {h: zero for h in self.h})


class Oracle:
    """Perfect foresight of the demand the physics will ask (see the module)."""

    def __init__(self, physics: RackPhysics, horizons: tuple[int, ...], period_s: float,
                 events: tuple[Event, ...] = ()) -> None:
        self.ph = physics
        self.h = horizons
        self.period = period_s
        self.events = events
        self.scale0 = physics.load_scale  # the scenario's own, before any event
        self.dev_ids = [dv.id for dv in physics.rack.devices]

    def _demand(self, t: float) -> Floats:
        """What each device will ask at rack time `t` (W), as `RackPhysics` computes it."""
        ph = self.ph
        scale = self.scale0
        extra = np.zeros(len(ph.rack.devices))
        for ev in self.events:  # the scheduled load changes, known in advance
            f = ev.fault
            # applied at the first period boundary at or after at_s, after the runner's 1 s
            # of settling
            at = 1.0 + np.ceil(ev.at_s / self.period - 1e-9) * self.period
            if f.kind == "load-scale" and at <= t:
                scale = f.scale
            if f.kind == "load-spike" and at <= t < at + f.seconds and f.device is not None:
                extra[self.dev_ids.index(f.device)] += f.watts
        us = ph.utilisations(t)
        out = np.empty(len(ph.rack.devices))
        for k, d in enumerate(ph.rack.devices):
            u = float(us[k])
            out[k] = min((d.p_min_w + u * (d.p_max_w - d.p_min_w)) * scale, d.p_max_w) + extra[k]
        return out

    def step(self, y: Floats, u: Any = None, stale: Any = None
             ) -> tuple[dict[int, Floats], dict[int, Floats], dict[int, Any]]:
        t0 = self.ph.t
        means, uppers = {}, {}
        for h in self.h:
            ts = t0 + self.period * (h - 1 + (np.arange(ORACLE_SAMPLES) + 1) / ORACLE_SAMPLES)
            d = np.array([self._demand(float(t)) for t in ts])
            means[h], uppers[h] = d.mean(axis=0), d.max(axis=0)
        two = np.full(len(y), 2, np.int64)  # reported as "mean" (the model names have no oracle)
        return means, uppers, {h: two for h in self.h}


@dataclass(frozen=True)
class ScheduledHint:
    issue_t: float  # s, the controller's clock (rack time of the period's end)
    kind: str  # "start" or "pause"
    job: str
    devices: tuple[str, ...]
    start_t: float
    duration_s: float
    watts: float


def scenario_hints(sc: Scenario) -> list[ScheduledHint]:
    """The hints a scheduler would send for the scenario's training jobs: each job announced
    HINT_NOTICE_S before its start (or at once), with its busy power (W per device, as the
    physics will ask it) and its duration; and those its training loop would send (the
    hook in examples/schedulers/training): each checkpoint and evaluation pause one
    iteration before it starts, with its power and its length. The controller's clock runs
    1 s behind the physics' (the runner's settling second). Batch jobs arrive unannounced
    (a prolog could say them only as they start) and inference has no start; neither is
    hinted. By issue time."""
    out = []
    speed, dur = sc.trace_speed, sc.duration_s
    for j in sc.jobs:
        if j.kind != "training":
            continue
        start = j.p("start_s") / speed - 1.0
        length = min(j.p("duration_s") / speed, dur + 1.0 - start)
        if start >= dur or length <= 0:
            continue
        devs = tuple(sc.rack.devices[k].id for k in j.devices)
        u = j.p("busy_util")
        out.append(ScheduledHint(max(start - HINT_NOTICE_S, 0.0), "start", f"job{j.index + 1}",
                                 devs, max(start, 0.0), length, _watts(sc, j, u)))
        for a, b, pu in Workload.training_pauses(j, (dur + 1.0) * speed):
            a, b = a / speed - 1.0, min(b / speed - 1.0, start + length)
            if a >= dur or b <= a:
                continue
            out.append(ScheduledHint(max(a - j.p("iteration_s") / speed, 0.0), "pause",
                                     f"job{j.index + 1}", devs, a, b - a, _watts(sc, j, pu)))
    return sorted(out, key=lambda h: h.issue_t)


def _watts(sc: Scenario, j: Any, u: float) -> float:
    """W each device of job `j` draws at utilisation `u`, as the physics plays it (the least
    over the job's devices)."""
    devs = sc.rack.devices
    return min(min((devs[k].p_min_w + u * (devs[k].p_max_w - devs[k].p_min_w)) * sc.load_scale,
                   devs[k].p_max_w) for k in j.devices)
