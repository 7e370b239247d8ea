"""Scenario files (TOML): a rack, a duration and scripted events, for `powerflow scenario run`.

    [scenario]  name, rack (path, relative to the scenario file), duration_s, period_s (1),
                seed (0), load_scale (1.0: multiplies every device's demand),
                trace_speed (1.0: device traces run this much faster than rack time, to
                play a long day in less rack time), ambient_c (25)
    [policy]    overrides of the rack's allocation policy
    [[event]]   at_s and kind, one of:
                converter_fail / converter_restore  node
                link_loss / link_restore            node
                ambient                             celsius
                load_spike                          device, extra_w, seconds
                load_scale                          scale

Errors name the file, the entry and the field, as rack files do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from powerflow.control.policy import Policy, PolicyError, policy_from_config
from powerflow.rack import Rack, RackError, _Reader, load_rack
from powerflow.tomlfile import read_toml

KINDS = {
    "converter_fail": ("node",), "converter_restore": ("node",), "link_loss": ("node",),
    "link_restore": ("node",), "ambient": ("celsius",), "load_spike": ("device", "extra_w",
                                                                        "seconds"),
    "load_scale": ("scale",),
}


@dataclass(frozen=True)
class Event:
    at_s: float
    kind: str
    args: dict[str, Any]


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


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    raw = read_toml(p, RackError)
    for key in raw:
        if key not in ("scenario", "policy", "event"):
            raise RackError(f"{p}: unknown section [{key}]")
    r = _Reader(str(p), "[scenario]", raw.get("scenario", {}))
    name = r.text("name", p.stem)
    rack = load_rack(p.parent / r.text("rack"))
    duration = r.num("duration_s", 1.0, 7 * 86400.0)
    period = r.num("period_s", 0.1, 60.0, 1.0)
    seed = r.int_("seed", 0, 2**31, 0)
    load_scale = r.num("load_scale", 0.0, 10.0, 1.0)
    speed = r.num("trace_speed", 0.01, 10000.0, 1.0)
    ambient = r.num("ambient_c", -40.0, 80.0, 25.0)
    r.done()
    devs = {dv.id: (dv.p_min_w, dv.p_max_w) for dv in rack.devices}
    try:
        base, _ = policy_from_config(rack.extra.get("policy", {}), rack.extra.get("profile", {}),
                                     devs)
        policy = base.changed({**raw.get("policy", {}), "period_s": period}, devs)
    except PolicyError as e:
        raise RackError(f"{p}: [policy]: {e}") from None
    events = []
    node_ids = {n.id for n in rack.nodes}
    for i, ev in enumerate(raw.get("event", [])):
        er = _Reader(str(p), f"[[event]] #{i + 1}", ev)
        at = er.num("at_s", 0.0, duration)
        kind = er.text("kind", choices=tuple(KINDS))
        args: dict[str, Any] = {}
        for a in KINDS[kind]:
            if a == "node":
                args[a] = er.int_("node", 1, 0xFFFE)
                if args[a] not in node_ids:
                    raise er.err("node", f"a node of rack {rack.name}", args[a])
            elif a == "device":
                args[a] = er.text("device", choices=tuple(devs))
            elif a == "celsius":
                args[a] = er.num(a, -40.0, 80.0)
            elif a == "scale":
                args[a] = er.num(a, 0.0, 10.0)
            else:
                args[a] = er.num(a, 0.0, 1e7)
        er.done()
        events.append(Event(at, kind, args))
    return Scenario(name, rack, duration, period, seed, load_scale, speed, ambient, policy,
                    tuple(sorted(events, key=lambda e: e.at_s)), str(p))
