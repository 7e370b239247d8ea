"""The emulated rack in a process of its own, and the host's handle on it.

`powerflow run --emulate` starts the rack here rather than inside the host, so that what
happens to the host process happens to it alone, as on a real rack: a host paused
(SIGSTOP), starved or killed leaves the physics and the node processes running, and the
tests that pause the host measure the host, not a frozen emulator.

The host talks to the rack process over a pipe, one request and one answer at a time,
with the same calls `EmulatedRack` has (faults, device readings, caps, the battery). The
rack process never writes to the pipe on its own, so a paused host blocks nothing. It
dies with the host (Linux parent-death signal), and its node processes die with it.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from powerflow.link.transport import LinkAddress
from powerflow.emulator.workloads import JobPlan
from powerflow.model.rack import Rack

ANSWER_TIMEOUT_S = 10.0
# the calls the host may make (each an EmulatedRack method)
CALLS = frozenset({"fail_converter", "sensor_fault", "link_faults", "kill_node", "restart_node",
                   "pause_node", "set_ambient", "load_spike", "set_load_scale", "read_devices",
                   "apply_devices", "battery_state", "status"})


def _serve(rack: Rack, seed: int, heap: str, log_path: str | None, jobs: JobPlan | None,
           conn: Connection) -> None:
    """The rack process: start the rack, then answer the host's requests until told to stop."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # die with the host
    except OSError:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the host's Ctrl-C is the host's to handle
    from powerflow.emulator.rack_emulator import EmulatedRack

    emu = EmulatedRack(rack, seed, heap, log_path, jobs)
    try:
        conn.send(("ok", emu.start()))
        while True:
            try:
                name, args, kwargs = conn.recv()
            except EOFError:
                return
            if name == "stop":
                return
            try:
                conn.send(("ok", getattr(emu, name)(*args, **kwargs)))
            except (ValueError, KeyError) as e:
                conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        emu.stop()


class RackService:
    """The host's handle on the rack process; the same calls as `EmulatedRack`."""

    def __init__(self, rack: Rack, seed: int = 0, heap: str = "100K",
                 log_path: str | Path | None = None, jobs: JobPlan | None = None) -> None:
        self.rack = rack
        self.nodes = {n.id: None for n in rack.nodes}  # which nodes there are
        self._args = (rack, seed, heap, str(log_path) if log_path else None, jobs)
        self._conn: Connection | None = None
        self._proc: Any = None
        self._lock = threading.Lock()

    def start(self) -> dict[int, LinkAddress]:
        """Start the rack process; returns how the host reaches each node."""
        ctx = mp.get_context("spawn")  # a clean interpreter: the host has threads and a loop
        here, there = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(*self._args, there), name="emulated rack",
                                 daemon=True)
        self._proc.start()
        there.close()
        self._conn = here
        if not here.poll(60.0):
            raise RuntimeError("the emulated rack did not start within 60 s")
        status, addresses = here.recv()
        return dict(addresses)

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self._conn is None:
            raise RuntimeError("the emulated rack is not running")
        with self._lock:
            try:
                self._conn.send((name, args, kwargs))
                if not self._conn.poll(ANSWER_TIMEOUT_S):
                    raise RuntimeError(f"the emulated rack did not answer {name} "
                                       f"within {ANSWER_TIMEOUT_S:.0f} s")
                status, value = self._conn.recv()
            except (EOFError, OSError) as e:
                raise RuntimeError(f"the emulated rack has stopped ({e})") from None
        if status == "error":
            raise ValueError(value)
        return value

    def __getattr__(self, name: str) -> Any:
        if name in CALLS:
            return lambda *args, **kwargs: self._call(name, *args, **kwargs)
        raise AttributeError(name)

    def stop(self) -> None:
        if self._conn is not None:
            try:
                with self._lock:
                    self._conn.send(("stop", (), {}))
            except (OSError, EOFError):
                pass
        if self._proc is not None:
            self._proc.join(timeout=10)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(timeout=5)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
