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


NO_NODE_KINDS = ("ambient", "load-spike")  # the rest act on one node


def load_fault_script(path: str, rack: Any = None) -> list[dict[str, Any]]:
    """A timed fault list (TOML): `[[fault]] at_s = 5.0, kind = "...", node = 1, ...`.

    Each entry is checked against the API's FaultRequest model and, given the `rack`,
    against its nodes and devices; ValueError names the file, the entry and the field.
    """
    from pydantic import ValidationError

    from powerflow.api.app import FaultRequest
    from powerflow.tomlfile import read_toml

    raw = read_toml(path, ValueError)
    unknown = sorted(set(raw) - {"fault"})
    if unknown:
        raise ValueError(f"{path}: unknown section [{unknown[0]}] (only [[fault]] entries)")
    items = raw.get("fault", [])
    if not isinstance(items, list):
        raise ValueError(f"{path}: fault: expected an array of tables ([[fault]] entries)")
    out = []
    for i, item in enumerate(items):
        where = f"{path}: [[fault]] #{i + 1}"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected a table of fields; got {item!r}")
        item = dict(item)
        at = item.pop("at_s", None)
        if isinstance(at, bool) or not isinstance(at, int | float) or not 0 <= at <= 1e6:
            raise ValueError(f"{where}: field 'at_s': expected seconds from 0 to 1e6")
        try:
            req = FaultRequest(**item)
        except ValidationError as e:
            first = e.errors()[0]
            raise ValueError(f"{where}: field "
                             f"'{'.'.join(str(x) for x in first['loc'])}': {first['msg']}") from None
        f = req.model_dump()
        if rack is not None:
            ids = [n.id for n in rack.nodes]
            if f["kind"] not in NO_NODE_KINDS and f["node"] not in ids:
                raise ValueError(f"{where}: field 'node': {f['kind']} needs a node of the rack, "
                                 f"one of {ids}; got {f['node']!r}")
            if f["node"] is not None and f["node"] not in ids:
                raise ValueError(f"{where}: field 'node': no node {f['node']} in the rack")
            devs = [d.id for d in rack.devices]
            if f["kind"] == "load-spike" and f["device"] not in devs:
                raise ValueError(f"{where}: field 'device': load-spike needs a device of the "
                                 f"rack; got {f['device']!r}")
        out.append({"at_s": float(at), **f})
    return sorted(out, key=lambda f: f["at_s"])
