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
