"""The emulated rack in full-process mode: each node's real firmware in its own MicroPython
process on the `emu` HAL, the rack physics stepping in real time beside them, and every node
reachable as a board would be: a serial device (pty, opened by the host with pyserial) or a
loopback TCP port, as the rack file says.

Faults can be injected while it runs: converter failure, sensor stuck or drifting, link cut
or noisy, node reboot, a node paused (SIGSTOP), ambient temperature, load spike.

When the machine is busy the emulator falls behind in two ways, and each is made to look
like what it stands for. The physics thread, woken late, steps the real time that passed
in sub-steps of at most MAX_SUBSTEP_S (never one giant step, and the bus never freezes
while it keeps running). A node process that the OS does not schedule is an MCU whose
loop ran late: its firmware's watchdog feeds reach the physics through the register
files, and a node that has not fed its watchdog for the timeout it started it with is
reset, as the MCU's watchdog would reset it: the converter's output drops at once and the
firmware restarts, reporting a watchdog boot.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from powerflow.emulator.node_process import NodeProcess
from powerflow.emulator.physics import RackPhysics, SensorFault
from powerflow.emulator.ptybridge import LinkFaults, PtyBridge
from powerflow.emulator.registers import RegisterFiles, register_folder
from powerflow.emulator.workloads import JobPlan
from powerflow.link.transport import LinkAddress
from powerflow.model.rack import Rack

PHYSICS_PERIOD_S = 0.005
MAX_SUBSTEP_S = 0.02  # the longest the physics steps at once when it catches up
MAX_SUBSTEPS = 200  # per wake-up; a longer gap is stepped in sub-steps of gap / this
LOG_PERIOD_S = 0.1  # physics log: one line per this much time
TICKS_PERIOD = 1 << 30  # MicroPython's ticks_ms wraps here (same CLOCK_MONOTONIC ms)


def ticks_since(now_ms: int, then_ms: int) -> int:
    """ms from ticks `then_ms` to `now_ms` on MicroPython's wrapping clock."""
    return ((now_ms - then_ms + TICKS_PERIOD // 2) % TICKS_PERIOD) - TICKS_PERIOD // 2


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EmulatedNode:
    node_id: int
    process: NodeProcess
    registers: RegisterFiles
    address: LinkAddress  # where the host reaches it
    bridge: PtyBridge | None = None


class EmulatedRack:
    def __init__(self, rack: Rack, seed: int = 0, heap: str = "100K",
                 log_path: str | Path | None = None, jobs: JobPlan | None = None) -> None:
        """`jobs`: devices under a scenario's jobs follow them, not their traces."""
        self.rack = rack
        self.physics = RackPhysics(rack, seed)
        if jobs is not None:
            self.physics.follow(jobs)
        self._tmp = tempfile.TemporaryDirectory(prefix="pfrack-", dir=register_folder())
        self.folder = Path(self._tmp.name)
        self.heap = heap
        self.nodes: dict[int, EmulatedNode] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.steps = 0
        self.watchdog_resets: dict[int, int] = {n.id: 0 for n in rack.nodes}
        self.max_gap_s = 0.0  # the longest the physics thread was kept from running
        self._log: IO[str] | None = open(log_path, "a") if log_path else None
        self._next_log = 0.0

    def _ports_of(self, node_id: int) -> int:
        used = [b.port[1] for b in self.rack.branches if b.port and b.port[0] == node_id]
        return max(used) + 1 if used else 0

    def start(self) -> dict[int, LinkAddress]:
        """Start the physics and every node; returns how the host reaches each node."""
        for n in self.rack.nodes:
            regs = RegisterFiles(self.folder, n.id)
            bridge = None
            if n.link.startswith("tcp"):
                port = free_port()
                node_link, addr = f"tcp:127.0.0.1:{port}", LinkAddress("tcp", "127.0.0.1", port)
            else:
                bridge = PtyBridge(seed=n.id)
                node_link, addr = f"pty:{bridge.node_path}", LinkAddress("serial", bridge.host_path,
                                                                          1_000_000)
            conf = {"node_id": n.id, "hal": "emu", "link": node_link,
                    "emu": {"sensors": str(regs.sensors), "actuators": str(regs.actuators)},
                    "ratings": {"vout_max": n.vout_max, "iout_max": n.iout_max,
                                "pout_max": n.rating_w, "ports": self._ports_of(n.id),
                                "board": "emu"}}
            if n.key:
                conf["key"] = n.key
            proc = NodeProcess(conf, self.heap)
            self.nodes[n.id] = EmulatedNode(n.id, proc, regs, addr, bridge)
        self._publish()
        for en in self.nodes.values():
            en.process.start()
        self._thread = threading.Thread(target=self._run, name="rack physics", daemon=True)
        self._thread.start()
        return {i: en.address for i, en in self.nodes.items()}

    def _publish(self) -> None:
        for i, en in self.nodes.items():
            en.registers.write_sensors(self.physics.readings(i), self.physics.port_voltages(i))

    def _run(self) -> None:
        last = time.monotonic()
        next_t = last
        while not self._stop.is_set():
            now = time.monotonic()
            gap = now - last
            self.max_gap_s = max(self.max_gap_s, gap)
            n = max(1, math.ceil(gap / MAX_SUBSTEP_S))
            if n > MAX_SUBSTEPS:
                n = MAX_SUBSTEPS
            reset = []
            with self._lock:
                now_ticks = int(now * 1000) % TICKS_PERIOD
                for i, en in self.nodes.items():
                    vref, on, ports = en.registers.read_actuators()
                    timeout, fed = en.registers.wdt
                    if (timeout > 0 and en.process.alive()
                            and ticks_since(now_ticks, fed) > timeout):
                        reset.append(i)  # the MCU's watchdog fires: the output drops at once
                        on = False
                    self.physics.set_actuators(i, vref / 1000.0, on and en.process.alive(), ports)
                for _ in range(n):
                    self.physics.step(gap / n)
                self._publish()
                self.steps += 1
            for i in reset:
                self._watchdog_reset(i)
            if self._log is not None and now >= self._next_log:
                self._write_log()
                self._next_log = now + LOG_PERIOD_S
            last = now
            next_t += PHYSICS_PERIOD_S
            if next_t < now - 1.0:  # far behind: do not try to catch up on sleep
                next_t = now
            self._stop.wait(max(0.0, next_t - time.monotonic()))  # the emulator's own clock

    def _watchdog_reset(self, node_id: int) -> None:
        en = self.nodes[node_id]
        self.watchdog_resets[node_id] += 1
        en.process.kill()
        en.registers.reset()
        en.process.conf["emu"]["reset_cause"] = 1  # BOOT_WATCHDOG
        en.process.start()

    def _write_log(self) -> None:
        """One line of what the physics has now (the truth the host is judged against):
        wall time (s), segment voltages (V), converter currents (A), device demand and
        what was served (W), caps in force (W), the feed's draw (W)."""
        ph = self.physics
        assert self._log is not None
        with self._lock:
            line = {"t": round(time.time(), 3), "v": [round(float(x), 4) for x in ph.v],
                    "i": {str(k): round(c.i_out, 3) for k, c in ph.conv.items()},
                    "on": {str(k): bool(c.enabled and not c.failed) for k, c in ph.conv.items()},
                    "demand": [round(float(x), 2) for x in ph.dev_p],
                    "served": [round(float(x), 2) for x in ph.served],
                    "cap": [round(float(x), 2) for x in ph.dev_cap],
                    "feed": round(ph.feed_power_w(), 2),
                    "wdt_resets": sum(self.watchdog_resets.values())}
        self._log.write(json.dumps(line) + "\n")
        self._log.flush()

    # ---- devices (what the host's device source reads and writes) ----------------------
    def read_devices(self) -> dict[str, tuple[float, float]]:
        """Per device: (power served now, W; utilisation 0..1)."""
        ph = self.physics
        with self._lock:
            return {dv.id: (float(ph.served[k]), float(ph.dev_util[k]))
                    for k, dv in enumerate(self.rack.devices)}

    def apply_devices(self, caps: dict[str, float | None], battery_w: float | None,
                      shave_above_w: float | None,
                      ramps: dict[str, tuple[float | None, float | None]] | None = None
                      ) -> None:
        """Caps (W, None = uncapped), the battery's command (W, + discharging) and the
        devices' power smoothing ((up, down) W/s)."""
        with self._lock:
            self.physics.apply_devices(caps, battery_w, shave_above_w, ramps)

    def battery_state(self) -> dict[str, float] | None:
        """The battery as its BMS reports it: soc (0..1), capacity (Wh), limits (W)."""
        b = self.physics.battery
        if b is None:
            return None
        with self._lock:
            return {"soc": b.soc, "capacity_wh": b.capacity_wh,
                    "p_charge_max_w": b.p_charge_max, "p_discharge_max_w": b.p_discharge_max}

    def status(self) -> dict[str, Any]:
        return {"steps": self.steps, "max_gap_s": self.max_gap_s,
                "watchdog_resets": dict(self.watchdog_resets)}

    # ---- faults ------------------------------------------------------------------------
    def fail_converter(self, node_id: int, failed: bool = True) -> None:
        with self._lock:
            self.physics.conv[node_id].failed = failed

    def sensor_fault(self, node_id: int, sensor: str, stuck: float | None = None,
                     drift_per_s: float = 0.0) -> None:
        with self._lock:
            c = self.physics.conv[node_id]
            if stuck is None and drift_per_s == 0.0:
                c.sensor_faults.pop(sensor, None)
            else:
                c.sensor_faults[sensor] = SensorFault(stuck, drift_per_s, self.physics.t)

    def link_faults(self, node_id: int, faults: LinkFaults) -> None:
        bridge = self.nodes[node_id].bridge
        if bridge is None:
            raise ValueError(f"node {node_id} is on TCP: link faults need a serial (pty) link")
        bridge.faults = faults

    def kill_node(self, node_id: int) -> None:
        self.nodes[node_id].process.kill()

    def restart_node(self, node_id: int) -> None:
        en = self.nodes[node_id]
        en.process.kill()
        en.registers.reset()
        en.process.conf["emu"]["reset_cause"] = 0  # BOOT_POWER_ON
        en.process.start()

    def pause_node(self, node_id: int, seconds: float) -> None:
        """SIGSTOP the node's process for `seconds`, then SIGCONT: an MCU whose loop hangs
        (its watchdog fires after its timeout)."""
        proc = self.nodes[node_id].process.proc
        if proc is None or proc.poll() is not None:
            raise ValueError(f"node {node_id} is not running")
        os.kill(proc.pid, signal.SIGSTOP)

        def resume() -> None:
            try:
                os.kill(proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass  # reset by its watchdog meanwhile

        t = threading.Timer(seconds, resume)
        t.daemon = True
        t.start()

    def set_ambient(self, celsius: float) -> None:
        with self._lock:
            self.physics.ambient_c = celsius

    def load_spike(self, device: str, extra_w: float, seconds: float) -> None:
        with self._lock:
            k = next(i for i, d in enumerate(self.rack.devices) if d.id == device)
            self.physics.dev_extra[k] = extra_w
            self.physics.dev_extra_until[k] = self.physics.t + seconds

    def set_load_scale(self, scale: float) -> None:
        with self._lock:
            self.physics.load_scale = scale

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        for en in self.nodes.values():  # all told at once, so the stop takes one node's time
            en.process.terminate()
        for en in self.nodes.values():
            en.process.close()
            en.registers.close()
            if en.bridge is not None:
                en.bridge.close()
        self._tmp.cleanup()
        if self._log is not None:
            self._log.close()
