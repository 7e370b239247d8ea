"""Scenario files (TOML): a rack, a duration and scripted events, for `powerflow scenario run`.

    [scenario]  name, rack (path, relative to the scenario file), duration_s, period_s (1),
                seed (0), load_scale (1.0: multiplies every device's demand),
                trace_speed (1.0: device traces run this much faster than rack time, to
                play a long day in less rack time), ambient_c (25)
    [policy]    overrides of the rack's allocation policy
    [expect]    what the run must show, checked by `scenario run` (exit 1 if one fails):
                OUTCOME = NUMBER (at most that: counts and losses are bounds on what is bad)
                or OUTCOME = ">= X" / "<= X" / "== X" / "> X" / "< X"; OUTCOME is one of
                the outcomes `scenario run --json` prints (runner.OUTCOMES)
    [[event]]   at_s and a fault in the emulator's one vocabulary (emulator/faults.py),
                the kinds fast mode has:
                converter-failure / converter-repair  node
                link-cut / link-clear                 node
                ambient                               celsius
                load-spike                            device, watts, seconds
                load-scale                            scale
    [[job]]     devices under a workload with the structure real ones have (training,
                inference, batch, alibaba; emulator/workloads.py documents each kind and its
                parameters): the devices follow the job, not their rack-file trace

Errors name the file, the entry and the field, as rack files do.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from powerflow.control.policy import Policy, PolicyError, load_rack_checked, rack_policy
from powerflow.emulator.faults import Fault, parse_at, parse_fault
from powerflow.emulator.workloads import Job, JobPlan, alibaba_series, parse_job
from powerflow.model.rack import Rack, RackError, FieldReader
from powerflow.tomlfile import read_toml

FAST_KINDS = ("converter-failure", "converter-repair", "link-cut", "link-clear", "ambient",
              "load-spike", "load-scale")


@dataclass(frozen=True)
class Event:
    at_s: float  # s from the scenario's start
    fault: Fault


@dataclass(frozen=True)
class Expectation:
    outcome: str
    op: str  # one of OPS
    value: float

    def holds(self, got: float) -> bool:
        return OPS[self.op](got, self.value)

    def __str__(self) -> str:
        return f"{self.outcome} {self.op} {self.value:g}"


OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, "==": lambda a, b: a == b,
    "<": lambda a, b: a < b, ">": lambda a, b: a > b}


@dataclass(frozen=True)
class Scenario:
    name: str
    rack: Rack
    duration_s: float
    period_s: float
    seed: int
    load_scale: float
    trace_speed: float
    ambient_c: float
    policy: Policy
    events: tuple[Event, ...] = field(default_factory=tuple)
    path: str = ""
    expect: tuple[Expectation, ...] = field(default_factory=tuple)
    jobs: tuple[Job, ...] = field(default_factory=tuple)


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    raw = read_toml(p, RackError)
    for key in raw:
        if key not in ("scenario", "policy", "event", "expect", "job"):
            raise RackError(f"{p}: unknown section [{key}]")
    r = FieldReader(str(p), "[scenario]", raw.get("scenario", {}))
    name = r.text("name", p.stem)
    rack = load_rack_checked(p.parent / r.text("rack"))
    duration = r.num("duration_s", 1.0, 7 * 86400.0)
    period = r.num("period_s", 0.1, 60.0, 1.0)
    seed = r.int_("seed", 0, 2**31, 0)
    load_scale = r.num("load_scale", 0.0, 10.0, 1.0)
    speed = r.num("trace_speed", 0.01, 10000.0, 1.0)
    ambient = r.num("ambient_c", -40.0, 80.0, 25.0)
    r.done()
    devs = {dv.id: (dv.p_min_w, dv.p_max_w) for dv in rack.devices}
    try:
        base, _ = rack_policy(rack)
        policy = base.changed({**raw.get("policy", {}), "period_s": period}, devs)
    except PolicyError as e:
        raise RackError(f"{p}: [policy]: {e}") from None
    events = []
    node_ids = [n.id for n in rack.nodes]
    items = raw.get("event", [])
    if not isinstance(items, list):
        raise RackError(f"{p}: event: expected an array of tables ([[event]] entries)")
    for i, ev in enumerate(items):
        where = f"{p}: [[event]] #{i + 1}"
        if not isinstance(ev, dict):
            raise RackError(f"{where}: expected a table of fields; got {ev!r}")
        ev = dict(ev)
        try:
            at = parse_at(ev, where, duration)
            f = parse_fault(ev, where, node_ids, list(devs))
        except ValueError as e:
            raise RackError(str(e)) from None
        if f.kind not in FAST_KINDS:
            raise RackError(f"{where}: field 'kind': {f.kind} is not in fast mode; "
                            f"one of {', '.join(FAST_KINDS)}")
        events.append(Event(at, f))
    return Scenario(name, rack, duration, period, seed, load_scale, speed, ambient, policy,
                    tuple(sorted(events, key=lambda e: e.at_s)), str(p),
                    _expectations(p, raw.get("expect", {})), _jobs(p, raw.get("job", []), rack))


def load_jobs(path: str | Path, rack: Rack) -> JobPlan:
    """The jobs of scenario file `path` (with its seed and trace speed), for `rack`: the
    scenario's own rack must have the same devices in the same order. RackError names what
    is wrong."""
    sc = load_scenario(path)
    if not sc.jobs:
        raise RackError(f"{path}: no [[job]] tables: nothing for the devices to follow")
    ours, theirs = [d.id for d in rack.devices], [d.id for d in sc.rack.devices]
    if ours != theirs:
        def named(ids: list[str]) -> str:
            return ", ".join(ids[:6]) + (f", … ({len(ids)} devices)" if len(ids) > 6 else "")

        raise RackError(f"{path}: its jobs are for rack {sc.rack.name!r} (devices "
                        f"{named(theirs)}), not for {rack.name!r} (devices {named(ours)})")
    return JobPlan(sc.jobs, sc.seed, sc.trace_speed)


def _jobs(p: Path, items: Any, rack: Rack) -> tuple[Job, ...]:
    if not isinstance(items, list):
        raise RackError(f"{p}: job: expected an array of tables ([[job]] entries)")
    ids = [dv.id for dv in rack.devices]
    taken: dict[str, int] = {}
    out = []
    for i, raw in enumerate(items):
        try:
            out.append(parse_job(raw, f"{p}: [[job]] #{i + 1}", ids, i, taken))
        except ValueError as e:
            raise RackError(str(e)) from None
    if any(j.kind == "alibaba" for j in out):
        try:
            alibaba_series()  # the package is there: said now, not in the middle of a run
        except ValueError as e:
            raise RackError(f"{p}: {e}") from None
    return tuple(out)


def _expectations(p: Path, raw: Any) -> tuple[Expectation, ...]:
    from powerflow.scenario.runner import OUTCOMES

    if not isinstance(raw, dict):
        raise RackError(f"{p}: [expect]: expected a table of OUTCOME = bound")
    out = []
    for key, v in raw.items():
        where = f"{p}: [expect]: field {key!r}"
        if key not in OUTCOMES:
            raise RackError(f"{where}: not an outcome; one of {', '.join(OUTCOMES)}")
        if isinstance(v, bool):
            raise RackError(f"{where}: expected a number or a string like \">= 5\"; got {v!r}")
        if isinstance(v, int | float):
            out.append(Expectation(key, "<=", float(v)))
            continue
        m = re.fullmatch(r"\s*(<=|>=|==|<|>)\s*(-?[0-9.]+(?:[eE][-+]?\d+)?)\s*", str(v))
        if not m:
            raise RackError(f"{where}: expected a number or a string like \">= 5\"; got {v!r}")
        out.append(Expectation(key, m.group(1), float(m.group(2))))
    return tuple(out)
