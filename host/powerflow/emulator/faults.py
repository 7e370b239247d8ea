"""Fault injection into a running emulated rack, by name (API, CLI and scenarios)."""

from __future__ import annotations

from typing import Any

from powerflow.emulator.ptybridge import LinkFaults


def apply_fault(emu: Any, f: dict[str, Any]) -> dict[str, Any]:
    """Apply fault `f` (FaultRequest fields) to `emu`; ValueError says what is wrong."""
    kind = f["kind"]
    node = f.get("node")
    needs_node = kind not in ("ambient", "load-spike")
    if needs_node and node not in emu.nodes:
        raise ValueError(f"{kind}: give --node, one of {sorted(emu.nodes)}")
    if kind == "converter-failure":
        emu.fail_converter(node, True)
    elif kind == "converter-repair":
        emu.fail_converter(node, False)
    elif kind == "sensor-stuck":
        if f.get("value") is None:
            raise ValueError("sensor-stuck: give --value (SI units)")
        emu.sensor_fault(node, f["sensor"], stuck=f["value"])
    elif kind == "sensor-drift":
        emu.sensor_fault(node, f["sensor"], drift_per_s=f["drift_per_s"])
    elif kind == "sensor-clear":
        emu.sensor_fault(node, f["sensor"])
    elif kind in ("link-cut", "link-noise", "link-clear"):
        faults = LinkFaults(f.get("bit_error_rate", 0.0) if kind == "link-noise" else 0.0,
                            f.get("drop_rate", 0.0) if kind == "link-noise" else 0.0,
                            kind == "link-cut")
        emu.link_faults(node, faults)
    elif kind == "node-reboot":
        emu.restart_node(node)
    elif kind == "node-kill":
        emu.kill_node(node)
    elif kind == "node-pause":
        emu.pause_node(node, f.get("seconds", 5.0))
    elif kind == "ambient":
        if f.get("celsius") is None:
            raise ValueError("ambient: give --celsius")
        emu.set_ambient(f["celsius"])
    elif kind == "load-spike":
        if not f.get("device"):
            raise ValueError("load-spike: give --device")
        if f["device"] not in {d.id for d in emu.rack.devices}:
            raise ValueError(f"load-spike: no device {f['device']!r}")
        emu.load_spike(f["device"], f.get("watts", 0.0), f.get("seconds", 5.0))
    else:
        raise ValueError(f"unknown fault {kind!r}")
    return {"applied": kind, "node": node}


def load_fault_script(path: str) -> list[dict[str, Any]]:
    """A timed fault list (TOML): `[[fault]] at_s = 5.0, kind = "...", node = 1, ...`.

    Each entry is checked against the API's FaultRequest model; ValueError names the entry.
    """
    from pydantic import ValidationError

    from powerflow.api.app import FaultRequest
    from powerflow.tomlfile import read_toml

    raw = read_toml(path, ValueError)
    out = []
    for i, item in enumerate(raw.get("fault", [])):
        item = dict(item)
        at = item.pop("at_s", None)
        if not isinstance(at, int | float) or at < 0:
            raise ValueError(f"{path}: [[fault]] #{i + 1}: field 'at_s': expected seconds >= 0")
        try:
            req = FaultRequest(**item)
        except ValidationError as e:
            first = e.errors()[0]
            raise ValueError(f"{path}: [[fault]] #{i + 1}: field "
                             f"'{'.'.join(str(x) for x in first['loc'])}': {first['msg']}") from None
        out.append({"at_s": float(at), **req.model_dump()})
    return sorted(out, key=lambda f: f["at_s"])
