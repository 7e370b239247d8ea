"""The emulated rack in full-process mode: each node's real firmware in its own MicroPython
process on the `emu` HAL, the rack physics stepping in real time beside them, and every node
reachable as a board would be: a serial device (pty, opened by the host with pyserial) or a
loopback TCP port, as the rack file says.

Faults can be injected while it runs: converter failure, sensor stuck or drifting, link cut
or noisy, node reboot, ambient temperature, load spike.
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from powerflow.emulator.node_process import NodeProcess
from powerflow.emulator.physics import RackPhysics, SensorFault
from powerflow.emulator.ptybridge import LinkFaults, PtyBridge
from powerflow.emulator.registers import RegisterFiles, register_folder
from powerflow.link.transport import LinkAddress
from powerflow.rack import Rack

PHYSICS_PERIOD_S = 0.005


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
    def __init__(self, rack: Rack, seed: int = 0, heap: str = "100K") -> None:
        self.rack = rack
        self.physics = RackPhysics(rack, seed)
        self._tmp = tempfile.TemporaryDirectory(prefix="pfrack-", dir=register_folder())
        self.folder = Path(self._tmp.name)
        self.heap = heap
        self.nodes: dict[int, EmulatedNode] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.steps = 0

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
            with self._lock:
                for i, en in self.nodes.items():
                    vref, on, ports = en.registers.read_actuators()
                    self.physics.set_actuators(i, vref / 1000.0, on and en.process.alive(), ports)
                self.physics.step(now - last)
                self._publish()
                self.steps += 1
            last = now
            next_t += PHYSICS_PERIOD_S
            self._stop.wait(max(0.0, next_t - time.monotonic()))  # the emulator's own clock

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
        en.process.start()

    def set_ambient(self, celsius: float) -> None:
        with self._lock:
            self.physics.ambient_c = celsius

    def load_spike(self, device: str, extra_w: float, seconds: float) -> None:
        with self._lock:
            k = next(i for i, d in enumerate(self.rack.devices) if d.id == device)
            self.physics.dev_extra[k] = extra_w
            self.physics.dev_extra_until[k] = self.physics.t + seconds

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        for en in self.nodes.values():
            en.process.close()
            en.registers.close()
            if en.bridge is not None:
                en.bridge.close()
        self._tmp.cleanup()
