"""Disturbances made for real, and the measures of how the rack came through them.

Used by the chaos tests and `bench/bench_chaos.py`. A `RunningHost` is `powerflow run
--emulate` as a user starts it, with the physics log on (`--physics-log`): the emulated
rack's own record of its bus voltages, converter currents and device power, which is the
truth the host's reports are held against. Disturbances: CPU-bound processes (more than
there are cores), SIGSTOP/SIGCONT of the host process or of one node's process, operator
actions through the API. Every loop here is bounded in count and time; all traffic goes to
127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

BUSY = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end:\n    pass\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str, poll: float = 0.2) -> Any:
    """Poll `check` until it returns something true; AssertionError naming `what` after
    `timeout` seconds."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = check()
        except (httpx.HTTPError, KeyError, TypeError, ValueError):
            last = None
        if last:
            return last
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


@dataclass
class LogLine:
    t: float  # s, Unix time
    vmin: float  # V, the lowest segment bus
    vmax: float
    capped_devices: int  # devices whose cap is under their demand
    on: dict[str, bool]  # converter running (enabled and not failed)
    wdt_resets: int
    v: list[float]  # V, every segment's bus, in the rack file's order
    demand: list[float]  # W, each device's demand, in the rack file's order
    cap: list[float]  # W, the cap in force on each device
    feed: float  # W, the feed's draw


class RunningHost:
    """`powerflow run RACK --emulate` in its own process, with its physics log."""

    def __init__(self, folder: Path, rack: Path, *extra: str) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / f"physics-{self.port}.jsonl"
        self.bus_v = 12.0
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "powerflow.cli", "run", str(rack), "--emulate", "--port",
             str(self.port), "--db", str(folder / f"telemetry-{self.port}.sqlite3"),
             "--physics-log", str(self.log), *extra],
            cwd=folder, stdout=subprocess.DEVNULL,
            stderr=open(folder / f"host-{self.port}.log", "wb"),  # its log, never a full pipe
            env=dict(os.environ, COLUMNS="120"))

    def api(self, path: str, **params: Any) -> Any:
        r = httpx.get(self.url + "/api/v1" + path, params=params, timeout=10)
        r.raise_for_status()
        return r.json()

    def send(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return httpx.request(method, self.url + "/api/v1" + path, json=body, timeout=10)

    def wait_ready(self, periods: int = 5, control: bool = True) -> None:
        def all_online() -> bool:
            st = self.api("/status")
            return bool(st["online"] == st["nodes"])

        wait_for(all_online, 60, "every node online")
        if control:
            wait_for(lambda: self.api("/control")["periods"] >= periods, 60,
                     f"{periods} control periods")
        wait_for(lambda: self.physics(since=time.time() - 1.0), 20, "the physics log")

    def physics(self, since: float = 0.0, until: float = float("inf")) -> list[LogLine]:
        out = []
        try:
            text = self.log.read_text()
        except FileNotFoundError:
            return []
        for raw in text.splitlines():
            try:
                j = json.loads(raw)
            except ValueError:
                continue  # a line still being written
            if not since <= j["t"] <= until:
                continue
            capped = sum(1 for dem, cap in zip(j["demand"], j["cap"], strict=True)
                         if cap < dem - 0.5)
            out.append(LogLine(j["t"], min(j["v"]), max(j["v"]), capped, j["on"],
                               j.get("wdt_resets", 0), j["v"], j["demand"], j["cap"],
                               j.get("feed", 0.0)))
        return out

    def pause(self, seconds: float) -> None:
        """SIGSTOP the host process for `seconds`, then SIGCONT (the rack runs on)."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)  # the disturbance itself, not a synchronisation
        finally:
            os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@contextmanager
def running_host(folder: Path, rack: Path, *extra: str, control: bool = True
                 ) -> Iterator[RunningHost]:
    h = RunningHost(folder, rack, *extra, *(() if control else ("--no-control",)))
    try:
        h.wait_ready(control=control)
        yield h
    finally:
        h.stop()


@contextmanager
def cpu_hogs(count: int, seconds: float) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` CPU-bound processes, each ending by itself after `seconds` at the latest, and
    stopped when the block ends (what it waited for has come: the starvation is over)."""
    procs = [subprocess.Popen([sys.executable, "-c", BUSY.format(s=seconds)])
             for _ in range(count)]
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=5)


def joint_start(folder: Path, small_rack: Path, start_s: float) -> tuple[Path, Path]:
    """A rack file and a jobs file in `folder`: the small rack (`small_rack`, the shipped
    examples/racks/small.toml) with 500-W converters, and every one of its eight devices
    starting one training job at once `start_s` into the emulation, from idle (546 W) to
    1,740 W — more than the converters a host keeps on at idle carry: load that comes back
    faster than a host acts (tests/chaos/test_chaos_standby.py, bench/bench_standby.py)."""
    text = small_rack.read_text()
    assert text.count("rating_w = 600.0") == 4 and text.count("iout_max = 50.0") == 4
    rack = folder / "small-500.toml"
    rack.write_text(text.replace("rating_w = 600.0", "rating_w = 500.0")
                    .replace("iout_max = 50.0", "iout_max = 41.0"))
    jobs = folder / "joint-start.toml"
    devices = ", ".join(f'"{k}{i}"' for i in range(4) for k in ("gpu", "cpu"))
    jobs.write_text(f"""[scenario]
name = "every device starts one job at once"
rack = "{rack.name}"
duration_s = 600

[[job]]
kind = "training"
devices = [{devices}]
start_s = {start_s}
init_s = 0
iteration_s = 7.0
dip_frac = 0.1
""")
    return rack, jobs


def hog(count: int, seconds: float) -> None:
    """CPU oversubscription for `seconds` (returns when it is over)."""
    with cpu_hogs(count, seconds):
        time.sleep(seconds)  # the disturbance lasts this long


@dataclass
class Outcome:
    """How the rack came through one disturbance (from the physics log and the host)."""

    undervoltage_s: float  # s with the lowest bus under 0.95 x nominal
    min_bus_v: float
    recovery_s: float | None  # s from the disturbance's end to bus in band (None: never)
    capped_device_s: float  # device-seconds capped under demand
    false_exclusions: int  # verdicts on converters that had not failed
    wdt_resets: int

    def as_dict(self) -> dict[str, Any]:
        return {"undervoltage_s": round(self.undervoltage_s, 2),
                "min_bus_v": round(self.min_bus_v, 3),
                "recovery_s": None if self.recovery_s is None else round(self.recovery_s, 2),
                "capped_device_s": round(self.capped_device_s, 1),
                "false_exclusions": self.false_exclusions, "wdt_resets": self.wdt_resets}


def outcome(h: RunningHost, t0: float, t_end: float, t_after: float, v_band: float = 0.97,
            verdicts_before: int = 0, control: bool = True) -> Outcome:
    """Measures between `t0` (disturbance starts) and `t_after`; recovery counted from
    `t_end` (it ends). Log lines are LOG_PERIOD_S apart."""
    lines = h.physics(t0, t_after)
    dt = 0.1
    low = 0.95 * h.bus_v
    uv = sum(dt for ln in lines if ln.vmin < low)
    rec: float | None = None
    for ln in lines:
        if ln.t < t_end:
            continue
        ok = ln.vmin >= v_band * h.bus_v - 0.02
        if ok and rec is None:
            rec = max(0.0, ln.t - t_end)
        elif not ok:
            rec = None
    verdicts = h.api("/control")["verdicts"] - verdicts_before if control else 0
    return Outcome(uv, min((ln.vmin for ln in lines), default=float("nan")), rec,
                   sum(dt * ln.capped_devices for ln in lines), verdicts,
                   (lines[-1].wdt_resets - lines[0].wdt_resets) if lines else 0)
