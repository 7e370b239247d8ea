"""Allocation policy: the operator's choices, with named profiles, changeable at run time.

A policy is immutable; `Policy.changed(values)` checks every value and returns a new
policy, or raises PolicyError naming the field and what it expects (nothing is half
applied). A rack file may hold `[policy]` (the base) and `[profile.NAME]` tables
(overrides of the base, selected with `profile = NAME`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from powerflow.model.rack import Device, Rack, RackError, load_rack


class PolicyError(ValueError):
    """A policy value out of range or unknown; the message names the field."""


# field -> (low, high) for numbers; booleans and choices are checked by type below
_RANGES: dict[str, tuple[float, float]] = {
    "period_s": (0.05, 600.0),
    "reserve_frac": (0.0, 1.0),
    "max_load_frac": (0.2, 1.0),
    "feed_margin": (0.5, 1.0),
    "cap_at": (0.5, 1.5),
    "cap_target": (0.5, 1.0),
    "uncap_below": (0.3, 1.0),
    "release_per_period": (1, 1000),
    "ramp_w_per_s": (0.0, 1e7),
    "jump_memory_s": (0.0, 7 * 86400.0),
    "smoothing_up_w_per_s": (0.0, 1e6),
    "smoothing_down_w_per_s": (0.0, 1e6),
    "v_min_pu": (0.8, 1.0),
    "v_max_pu": (1.0, 1.2),
    "v_target_pu": (0.9, 1.1),
    "rotation_period_s": (0.0, 1e7),
    "min_saving_w": (0.0, 1e5),
    "battery_soc_min": (0.0, 1.0),
    "battery_soc_target": (0.0, 1.0),
    "shave_at": (0.5, 1.0),
    "recharge_below": (0.0, 1.0),
    "thermal_soft_c": (20.0, 150.0),
    "thermal_hard_c": (20.0, 150.0),
    "optimise_deadline_ms": (1.0, 60000.0),
}
_CHOICES = {"ties": ("normal", "optimise")}


@dataclass(frozen=True)
class Policy:
    """How the allocator decides. Powers in W, voltages in per unit of the rack's bus
    voltage, temperatures in degC, times in s."""

    period_s: float = 1.0  # control period
    power_saving: bool = True  # phase shedding: switch off converters light load does not need
    reserve_frac: float = 0.10  # capacity held above the P95 demand forecast
    step_reserve: bool = True  # ... and at least enough for any one device to jump to its max
    # ... and for the largest rise of the devices' total in one period seen this long (s): a
    # synchronous job's devices jump together, which no one device's step covers; 0 = off
    jump_memory_s: float = 3600.0
    max_load_frac: float = 0.90  # most of a converter's (derated) rating planned for use
    feed_margin: float = 0.97  # fraction of the feed breaker limit planned for use
    cap_at: float = 1.0  # cap devices when P95 demand exceeds this fraction of supply
    cap_target: float = 0.97  # caps share out this fraction of supply
    uncap_below: float = 0.90  # release caps when P95 demand falls below this fraction
    release_per_period: int = 2  # caps released per period, in random order (staggered)
    ramp_w_per_s: float = 0.0  # most the feed draw may rise per second; 0 = no limit
    # power smoothing commanded to every device (W/s its power may rise / fall, as NVIDIA's
    # power-smoothing ramp rates); 0 = not limited that way
    smoothing_up_w_per_s: float = 0.0
    smoothing_down_w_per_s: float = 0.0
    v_min_pu: float = 0.97  # segment voltage band that every allocation must keep
    v_max_pu: float = 1.03
    v_target_pu: float = 1.02  # the highest segment is held here (less current, less loss)
    rotation_period_s: float = 3600.0  # swap a long-running converter for a rested one
    min_saving_w: float = 1.0  # change the converters that run only to save more than this
    ties: str = "normal"  # normal: reconfigure only around failures; optimise: for loss too
    battery_soc_min: float = 0.20
    battery_soc_target: float = 0.80
    shave_at: float = 0.95  # discharge when the feed would exceed this fraction of its limit
    recharge_below: float = 0.80  # recharge only while the feed stays below this fraction
    thermal_soft_c: float = 70.0  # plan less load on a converter above this temperature ...
    thermal_hard_c: float = 95.0  # ... down to half its rating here
    optimise_deadline_ms: float = 250.0  # later than this, the safe allocation goes out
    priorities: dict[str, int] = field(default_factory=dict)  # device -> priority override
    p_min_w: dict[str, float] = field(default_factory=dict)  # device -> floor override
    p_max_w: dict[str, float] = field(default_factory=dict)  # device -> ceiling override
    tie_override: dict[str, bool] = field(default_factory=dict)  # branch -> closed, by operator
    # node id -> pinned output (W); 0 pins the converter out of the plan, safe mode included
    node_output_w: dict[str, float] = field(default_factory=dict)
    profile: str = "default"

    def ceiling_w(self, device: Device) -> float:
        """The most `device` may draw (W): the policy's p_max_w for it, else the rack file's."""
        return self.p_max_w.get(device.id, device.p_max_w)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def changed(self, values: dict[str, Any], devices: dict[str, tuple[float, float]]
                | None = None, ties: set[str] | None = None,
                nodes: dict[str, float] | None = None) -> Policy:
        """A new policy with `values` applied; `devices` maps device id -> (p_min, p_max) of
        the rack, to check per-device overrides, `ties` names its switchable branches,
        `nodes` maps node id (text) -> rating (W).
        PolicyError if anything is wrong."""
        known = {f.name for f in fields(self)}
        out: dict[str, Any] = {}
        for k, v in values.items():
            if k not in known:
                raise PolicyError(f"policy: unknown field '{k}'")
            if k in ("power_saving", "step_reserve"):
                if not isinstance(v, bool):
                    raise PolicyError(f"policy: field '{k}': expected true or false")
            elif k in _CHOICES:
                if v not in _CHOICES[k]:
                    raise PolicyError(f"policy: field '{k}': expected one of "
                                      f"{', '.join(_CHOICES[k])}; got {v!r}")
            elif k in _RANGES:
                lo, hi = _RANGES[k]
                if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
                    raise PolicyError(f"policy: field '{k}': expected a number from {lo} to {hi}"
                                      f"; got {v!r}")
                v = int(v) if k == "release_per_period" else float(v)
            elif k in ("priorities", "p_min_w", "p_max_w"):
                v = self._per_device(k, v, devices)
            elif k == "node_output_w":
                if not isinstance(v, dict):
                    raise PolicyError("policy: field 'node_output_w': expected a table of "
                                      "node id -> W")
                out_v = {}
                for nid, w in v.items():
                    nid = str(nid)
                    if nodes is not None and nid not in nodes:
                        raise PolicyError(f"policy: field 'node_output_w': no node {nid} in "
                                          "the rack")
                    hi = nodes[nid] if nodes is not None else 1e6
                    if isinstance(w, bool) or not isinstance(w, int | float) or not 0 <= w <= hi:
                        raise PolicyError(f"policy: field 'node_output_w.{nid}': expected W "
                                          f"from 0 to {hi}; got {w!r}")
                    out_v[nid] = float(w)
                v = out_v
            elif k == "tie_override":
                if not isinstance(v, dict) or not all(isinstance(x, bool) for x in v.values()):
                    raise PolicyError("policy: field 'tie_override': expected a table of "
                                      "branch id -> true (closed) / false (open)")
                bad = [b for b in v if ties is not None and b not in ties]
                if bad:
                    raise PolicyError(f"policy: field 'tie_override': no tie switch '{bad[0]}' "
                                      "in the rack")
                v = dict(v)
            elif k == "profile":
                if not isinstance(v, str):
                    raise PolicyError("policy: field 'profile': expected text")
            out[k] = v
        new = replace(self, **out)
        if not new.uncap_below < new.cap_at:
            raise PolicyError("policy: field 'uncap_below': expected less than cap_at "
                              f"({new.cap_at}); got {new.uncap_below}")
        if not new.v_min_pu < new.v_target_pu <= new.v_max_pu:
            raise PolicyError("policy: field 'v_target_pu': expected within (v_min_pu, v_max_pu]")
        if not new.thermal_soft_c < new.thermal_hard_c:
            raise PolicyError("policy: field 'thermal_soft_c': expected below thermal_hard_c")
        if devices:
            for d, (lo, hi) in devices.items():
                a, b = new.p_min_w.get(d, lo), new.p_max_w.get(d, hi)
                if a > b:
                    raise PolicyError(f"policy: device '{d}': p_min_w {a} W is above p_max_w {b} W")
        return new

    @staticmethod
    def _per_device(k: str, v: Any, devices: dict[str, tuple[float, float]] | None) -> dict:
        if not isinstance(v, dict):
            raise PolicyError(f"policy: field '{k}': expected a table of device id -> value")
        out = {}
        for dev, x in v.items():
            if devices is not None and dev not in devices:
                raise PolicyError(f"policy: field '{k}': no device '{dev}' in the rack")
            if k == "priorities":
                if isinstance(x, bool) or not isinstance(x, int) or not 1 <= x <= 10:
                    raise PolicyError(f"policy: field 'priorities.{dev}': expected a whole number "
                                      f"from 1 to 10; got {x!r}")
            elif isinstance(x, bool) or not isinstance(x, int | float) or not 0 <= x <= 1e6:
                raise PolicyError(f"policy: field '{k}.{dev}': expected W from 0 to 1e6; got {x!r}")
            out[dev] = x if k == "priorities" else float(x)
        return out


def policy_from_config(base: dict[str, Any], profiles: dict[str, dict[str, Any]],
                       devices: dict[str, tuple[float, float]] | None = None,
                       ties: set[str] | None = None, nodes: dict[str, float] | None = None
                       ) -> tuple[Policy, dict[str, Policy]]:
    """The base policy and every named profile (each the base with its overrides);
    `devices`, `ties` and `nodes` as for `Policy.changed`."""
    if not isinstance(base, dict):
        raise PolicyError("[policy]: expected a table of policy fields")
    if not isinstance(profiles, dict):
        raise PolicyError("[profile]: expected tables [profile.NAME] of policy fields")
    pol = Policy().changed(base, devices, ties, nodes)
    named = {"default": pol}
    for name, over in profiles.items():
        if not isinstance(over, dict):
            raise PolicyError(f"profile '{name}': expected a table of policy fields")
        named[name] = pol.changed({**over, "profile": name}, devices, ties, nodes)
    return pol, named


def rack_policy(rack: Rack) -> tuple[Policy, dict[str, Policy]]:
    """The rack file's base policy and its profiles, checked against the rack's devices,
    ties and nodes; PolicyError names the file and the field."""
    try:
        return policy_from_config(rack.policy_table, rack.profile_tables,
                                  {dv.id: (dv.p_min_w, dv.p_max_w) for dv in rack.devices},
                                  ties={b.id for b in rack.branches if b.switch == "tie"},
                                  nodes={str(n.id): n.rating_w for n in rack.nodes})
    except PolicyError as e:
        raise PolicyError(f"{rack.path}: {e}") from None


def load_rack_checked(path: str | Path) -> Rack:
    """A rack file read whole, its policy included: RackError for anything wrong in it, so
    that nothing starts on a rack whose policy would be refused later."""
    rack = load_rack(path)
    try:
        rack_policy(rack)
    except PolicyError as e:
        raise RackError(str(e)) from None
    return rack
