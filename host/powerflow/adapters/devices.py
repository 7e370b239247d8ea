"""Where device power and utilisation come from, and where device caps go.

- `EmulatorDevices`: the emulated rack's physics (power drawn, utilisation; caps and the
  battery command written back);
- `AgentDevices`: an agent on each server pushes samples to the host API
  (`POST /api/v1/agent/samples`) and gets its cap back in the answer, to apply with
  `nvidia-smi -pl`, RAPL or its BMC;
- `PrometheusDevices`: scrapes the exporters data centers already run: node_exporter
  (`node_cpu_seconds_total` -> CPU utilisation from the idle counter's rate) and NVIDIA
  dcgm-exporter (`DCGM_FI_DEV_GPU_UTIL` %, `DCGM_FI_DEV_POWER_USAGE` W).

A sample older than `STALE_S` counts as missing: the forecaster then runs on history and
widens its band.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from powerflow.control.allocate import BatteryView
from powerflow.control.controller import DeviceObs

STALE_S = 5.0


@dataclass
class Sample:
    t: float  # s (time.time())
    power_w: float | None
    utilisation: float | None  # 0..1


class EmulatorDevices:
    """The emulated rack's devices (an `EmulatedRack`, or the `RackService` handle on one
    in its own process)."""

    def __init__(self, emu: Any) -> None:
        self.emu = emu

    def read(self) -> dict[str, DeviceObs]:
        return {dev: DeviceObs(p, u) for dev, (p, u) in self.emu.read_devices().items()}

    def apply(self, caps: dict[str, float | None], battery_w: float | None,
              shave_above_w: float | None,
              ramps: dict[str, tuple[float | None, float | None]] | None = None) -> None:
        self.emu.apply_devices(caps, battery_w, shave_above_w, ramps or {})

    def battery(self) -> BatteryView | None:
        b = self.emu.battery_state()
        return None if b is None else BatteryView(b["soc"], b["capacity_wh"],
                                                  b["p_charge_max_w"], b["p_discharge_max_w"])


@dataclass
class AgentDevices:
    """Samples pushed by agents; caps handed back to them."""

    devices: set[str]
    samples: dict[str, Sample] = field(default_factory=dict)
    caps: dict[str, float | None] = field(default_factory=dict)
    ramps: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)

    def push(self, device: str, power_w: float | None, utilisation: float | None) -> float | None:
        """Record one sample (ValueError if the device is unknown); returns its cap (W)."""
        if device not in self.devices:
            raise ValueError(f"no device '{device}' in this rack")
        self.samples[device] = Sample(time.time(), power_w, utilisation)
        return self.caps.get(device)

    def ramp(self, device: str) -> tuple[float | None, float | None]:
        """The power smoothing the agent should apply: (up, down) W/s, None: none."""
        return self.ramps.get(device, (None, None))

    def read(self) -> dict[str, DeviceObs]:
        now = time.time()
        return {d: DeviceObs(s.power_w, s.utilisation) for d, s in self.samples.items()
                if now - s.t <= STALE_S}

    def apply(self, caps: dict[str, float | None], battery_w: float | None,
              shave_above_w: float | None,
              ramps: dict[str, tuple[float | None, float | None]] | None = None) -> None:
        self.caps = dict(caps)
        self.ramps = dict(ramps or {})


@dataclass(frozen=True)
class Scrape:
    """One device's exporter: url of its /metrics, kind node | dcgm, and for dcgm the GPU
    index (label `gpu`)."""

    device: str
    url: str
    kind: str
    gpu: str = "0"


class PrometheusDevices:
    def __init__(self, scrapes: list[Scrape], timeout_s: float = 0.5) -> None:
        self.scrapes = scrapes
        self.client = httpx.AsyncClient(timeout=timeout_s)
        self.samples: dict[str, Sample] = {}
        self._cpu_prev: dict[str, tuple[float, float, float]] = {}  # device -> (t, idle, total)

    async def poll(self) -> None:
        for sc in self.scrapes:
            try:
                r = await self.client.get(sc.url)
                r.raise_for_status()
                text = r.text
            except httpx.HTTPError:
                continue  # stays stale; the forecaster widens its band
            self.samples[sc.device] = self._parse(sc, text)

    def _parse(self, sc: Scrape, text: str) -> Sample:
        now = time.time()
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        if sc.kind == "dcgm":
            def gpu_value(name: str) -> float | None:
                f = fams.get(name)
                for s in (f.samples if f else []):
                    if s.labels.get("gpu", "0") == sc.gpu:
                        return float(s.value)
                return None
            util = gpu_value("DCGM_FI_DEV_GPU_UTIL")
            return Sample(now, gpu_value("DCGM_FI_DEV_POWER_USAGE"),
                          None if util is None else util / 100.0)
        # node_exporter: CPU utilisation from the idle share of the CPU-seconds counters
        f = fams.get("node_cpu_seconds")  # the parser strips _total from counters
        idle = total = 0.0
        for s in (f.samples if f else []):
            if s.name.endswith("_total"):
                total += s.value
                if s.labels.get("mode") == "idle":
                    idle += s.value
        prev = self._cpu_prev.get(sc.device)
        self._cpu_prev[sc.device] = (now, idle, total)
        util = None
        if prev is not None and total > prev[2]:
            util = 1.0 - (idle - prev[1]) / (total - prev[2])
        return Sample(now, None, util)

    def merge(self, obs: dict[str, DeviceObs]) -> dict[str, DeviceObs]:
        """Fill utilisation (and power, where the exporter has it) into `obs`."""
        now = time.time()
        out = dict(obs)
        for dev, s in self.samples.items():
            if now - s.t > STALE_S:
                continue
            cur = out.get(dev, DeviceObs(None))
            out[dev] = DeviceObs(cur.power_w if cur.power_w is not None else s.power_w,
                                 s.utilisation if s.utilisation is not None else cur.utilisation)
        return out

    async def close(self) -> None:
        await self.client.aclose()
