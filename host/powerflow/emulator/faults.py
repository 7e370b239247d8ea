"""The one fault vocabulary of the emulated rack: what can be injected, checked as a typed
model, and applied to any emulated rack (full-process or fast mode).

The API (`POST /api/v1/emulator/faults`), the CLI (`powerflow fault inject`), fault scripts
(`powerflow run --faults FILE`) and scenario files (`[[event]]`) all speak it, with one
spelling per kind. Units: V, A, W, °C, s.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from powerflow.emulator.fault_kinds import FAULT_KINDS, NO_NODE_KINDS, FaultKind, Sensor
from powerflow.emulator.ptybridge import LinkFaults

__all__ = ["FAULT_KINDS", "NO_NODE_KINDS", "Fault", "apply_fault", "load_fault_script",
           "parse_fault"]

# spellings of scenario files before the vocabulary was one; refused with the new name
RENAMED = {"converter_fail": "converter-failure", "converter_restore": "converter-repair",
           "link_loss": "link-cut", "link_restore": "link-clear", "load_spike": "load-spike",
           "load_scale": "load-scale"}


class Fault(BaseModel):
    """One fault to inject. A field the kind does not use keeps its default."""

    model_config = ConfigDict(extra="forbid", strict=True)

    kind: FaultKind
    node: int | None = Field(None, description="the node it acts on (all kinds but ambient, "
                                               "load-spike and load-scale)")
    sensor: Sensor = Field("temp1", description="sensor-*: which sensor")
    value: float | None = Field(None, description="sensor-stuck: the reading it sticks at, "
                                                  "in the sensor's SI unit")
    drift_per_s: float = Field(0.0, description="sensor-drift: drift, unit per second")
    bit_error_rate: float = Field(0.0, ge=0, le=0.1, description="link-noise: per bit")
    drop_rate: float = Field(0.0, ge=0, le=1, description="link-noise: share of frames lost")
    celsius: float | None = Field(None, ge=-40, le=80, description="ambient: °C")
    device: str | None = Field(None, description="load-spike: the device")
    watts: float = Field(0.0, ge=0, le=1e5, description="load-spike: extra demand, W")
    seconds: float = Field(5.0, gt=0, le=7 * 86400,
                           description="load-spike, node-pause: how long, s")
    scale: float = Field(1.0, ge=0, le=10, description="load-scale: multiplies every "
                                                       "device's demand")


class EmulatedRackFaults(Protocol):
    """What an emulated rack offers to fault injection (a mode without a kind raises
    ValueError saying so)."""

    nodes: Any  # node id -> anything

    def fail_converter(self, node_id: int, failed: bool = True) -> None: ...
    def sensor_fault(self, node_id: int, sensor: str, stuck: float | None = None,
                     drift_per_s: float = 0.0) -> None: ...
    def link_faults(self, node_id: int, faults: LinkFaults) -> None: ...
    def restart_node(self, node_id: int) -> None: ...
    def kill_node(self, node_id: int) -> None: ...
    def pause_node(self, node_id: int, seconds: float) -> None: ...
    def set_ambient(self, celsius: float) -> None: ...
    def load_spike(self, device: str, extra_w: float, seconds: float) -> None: ...
    def set_load_scale(self, scale: float) -> None: ...


def apply_fault(emu: EmulatedRackFaults, f: Fault, device_ids: list[str]) -> dict[str, Any]:
    """Apply `f` to `emu`; ValueError says what is missing or wrong."""
    kind, node = f.kind, f.node
    if kind == "ambient":
        if f.celsius is None:
            raise ValueError("ambient: give --celsius")
        emu.set_ambient(f.celsius)
    elif kind == "load-spike":
        if not f.device:
            raise ValueError("load-spike: give --device")
        if f.device not in device_ids:
            raise ValueError(f"load-spike: no device {f.device!r}")
        emu.load_spike(f.device, f.watts, f.seconds)
    elif kind == "load-scale":
        emu.set_load_scale(f.scale)
    elif node is None or node not in emu.nodes:
        raise ValueError(f"{kind}: give --node, one of {sorted(emu.nodes)}")
    elif kind in ("converter-failure", "converter-repair"):
        emu.fail_converter(node, kind == "converter-failure")
    elif kind == "sensor-stuck":
        if f.value is None:
            raise ValueError("sensor-stuck: give --value (SI units)")
        emu.sensor_fault(node, f.sensor, stuck=f.value)
    elif kind == "sensor-drift":
        emu.sensor_fault(node, f.sensor, drift_per_s=f.drift_per_s)
    elif kind == "sensor-clear":
        emu.sensor_fault(node, f.sensor)
    elif kind in ("link-cut", "link-noise", "link-clear"):
        noisy = kind == "link-noise"
        emu.link_faults(node, LinkFaults(f.bit_error_rate if noisy else 0.0,
                                         f.drop_rate if noisy else 0.0, kind == "link-cut"))
    elif kind == "node-reboot":
        emu.restart_node(node)
    elif kind == "node-kill":
        emu.kill_node(node)
    else:  # node-pause
        emu.pause_node(node, f.seconds)
    return {"applied": kind, "node": node}


def parse_fault(item: dict[str, Any], where: str, node_ids: list[int],
                device_ids: list[str]) -> Fault:
    """One fault from a file entry (fault script or scenario event, `at_s` removed), checked
    against the rack's nodes and devices; ValueError names `where` and the field."""
    kind = item.get("kind")
    if isinstance(kind, str) and kind in RENAMED:
        raise ValueError(f"{where}: field 'kind': {kind!r} is now spelled {RENAMED[kind]!r}")
    if "extra_w" in item and item.get("kind") in ("load-spike", "load_spike"):
        raise ValueError(f"{where}: field 'extra_w': now spelled 'watts'")
    try:
        f = Fault(**item)
    except ValidationError as e:
        first = e.errors()[0]
        raise ValueError(f"{where}: field "
                         f"'{'.'.join(str(x) for x in first['loc'])}': {first['msg']}") from None
    if f.kind not in NO_NODE_KINDS and f.node not in node_ids:
        raise ValueError(f"{where}: field 'node': {f.kind} needs a node of the rack, "
                         f"one of {node_ids}; got {f.node!r}")
    if f.node is not None and f.node not in node_ids:
        raise ValueError(f"{where}: field 'node': no node {f.node} in the rack")
    if f.kind == "load-spike" and f.device not in device_ids:
        raise ValueError(f"{where}: field 'device': load-spike needs a device of the "
                         f"rack, one of {device_ids}; got {f.device!r}")
    if f.kind == "ambient" and f.celsius is None:
        raise ValueError(f"{where}: field 'celsius': ambient needs a temperature, °C")
    if f.kind == "sensor-stuck" and f.value is None:
        raise ValueError(f"{where}: field 'value': sensor-stuck needs a reading")
    return f


def parse_at(item: dict[str, Any], where: str, latest_s: float = 1e6) -> float:
    """An entry's `at_s` (s from the start), removed from `item`."""
    at = item.pop("at_s", None)
    if isinstance(at, bool) or not isinstance(at, int | float) or not 0 <= at <= latest_s:
        raise ValueError(f"{where}: field 'at_s': expected seconds from 0 to {latest_s:g}")
    return float(at)


def load_fault_script(path: str, node_ids: list[int],
                      device_ids: list[str]) -> list[tuple[float, Fault]]:
    """A timed fault list (TOML): `[[fault]] at_s = 5.0, kind = "...", node = 1, ...`, each
    entry checked against `Fault` and the rack's nodes and devices; sorted by time.
    ValueError names the file, the entry and the field."""
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
        at = parse_at(item, where)
        out.append((at, parse_fault(item, where, node_ids, device_ids)))
    return sorted(out, key=lambda e: e[0])
