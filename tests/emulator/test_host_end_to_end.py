"""The whole stack as processes: `powerflow run --emulate` (host + emulated rack of MicroPython
nodes over ptys and TCP), driven by the `powerflow` CLI over the host's HTTP API."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT

RACK = ROOT / "examples" / "racks" / "small.toml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `check` until it returns something true; fail naming `what` after `timeout`."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = check()
        except (httpx.HTTPError, KeyError, TypeError):
            last = None
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


class Host:
    def __init__(self, tmp: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = tmp / "telemetry.sqlite3"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "powerflow.cli", "run", str(RACK), "--emulate", "--port",
             str(self.port), "--db", str(self.db), *extra], cwd=tmp, stdout=subprocess.DEVNULL,
            stderr=open(tmp / f"host-{self.port}.log", "wb"),  # the host's log, never a full pipe
            env=dict(os.environ, COLUMNS="120"))

    def api(self, path: str, **params: Any) -> Any:
        return httpx.get(self.url + "/api/v1" + path, params=params, timeout=5).json()

    def node(self, nid: int) -> dict[str, Any]:
        return self.api(f"/nodes/{nid}")

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "powerflow.cli", *args, "--host", self.url],
                              capture_output=True, text=True, timeout=60)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@contextmanager
def running_host(tmp: Path, *extra: str, periods: int = 0) -> Iterator[Host]:
    """`powerflow run --emulate` with all four nodes online (and, with the control loop,
    `periods` control periods run); stopped on leaving."""
    h = Host(tmp, *extra)
    try:
        wait_for(lambda: h.api("/status")["online"] == 4, 30, "all four nodes online")
        if periods:
            wait_for(lambda: h.api("/control")["periods"] >= periods, 40,
                     f"{periods} control periods")
        yield h
    finally:
        h.stop()


@pytest.fixture(scope="module")
def host(tmp_path_factory) -> Host:
    with running_host(tmp_path_factory.mktemp("host"), "--no-control") as h:  # manual commands
        yield h


def test_setpoint_from_the_cli_reaches_the_node_and_its_telemetry(host: Host) -> None:
    wait_for(lambda: host.node(3)["mode"] == "cv", 15, "node 3 regulating")
    r = host.cli("set", "3", "--vout", "11.9")
    assert r.returncode == 0 and "acknowledged" in r.stdout, r.stderr
    t = wait_for(lambda: (n := host.node(3))["vout_command"] == pytest.approx(11.9, abs=1e-3) and n,
                 10, "node 3 telemetry showing VOUT_COMMAND 11.9")
    assert t["telemetry"]["VOUT_COMMAND"] == pytest.approx(11.9, abs=1e-3)
    # out of the node's rating: refused with a message, nothing sent
    r = host.cli("set", "3", "--vout", "15")
    assert r.returncode == 1 and "rated 1..14 V" in r.stderr, r.stderr
    assert host.node(3)["vout_command"] == pytest.approx(11.9, abs=1e-3)
    r = host.cli("nodes", "--json")
    rows = json.loads(r.stdout)
    assert {row["id"] for row in rows} == {1, 2, 3, 4}
    hist = wait_for(lambda: (h := json.loads(host.cli("history", "3", "READ_VOUT", "--since",
                                                     "1m", "--json").stdout))
                    and len(h["points"]) > 3 and h, 20, "four stored READ_VOUT points")
    assert all(10 < v < 13 for _, v in hist["points"][-3:])


def test_watch_streams_the_nodes(host: Host) -> None:
    r = host.cli("watch", "--duration", "1.2", "--interval", "0.3", "--json")
    frames = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("[")]
    assert r.returncode == 0 and len(frames) >= 3
    assert all({row["id"] for row in f} == {1, 2, 3, 4} for f in frames)


def test_killed_node_is_lost_then_rediscovered(host: Host) -> None:
    r = host.cli("fault", "inject", "node-kill", "--node", "2")
    assert r.returncode == 0, r.stderr
    t0 = time.monotonic()
    wait_for(lambda: host.node(2)["state"] == "lost", 8, "node 2 declared lost")
    # lost within the heartbeat budget: 2 s of silence plus a polling period or two
    assert time.monotonic() - t0 < 4.0
    r = host.cli("fault", "inject", "node-reboot", "--node", "2")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: host.node(2)["state"] == "online", 20, "node 2 rediscovered")
    wait_for(lambda: host.node(2)["mode"] == "cv", 15, "node 2 back in regulation")
    assert host.node(2)["lost_count"] >= 1


def test_noisy_link_delivers_counts_rejects_and_applies_no_corrupt_command(host: Host) -> None:
    wait_for(lambda: host.node(1)["mode"] == "cv", 15, "node 1 regulating")
    r = host.cli("fault", "inject", "link-noise", "--node", "1", "--bit-error-rate", "0.0005")
    assert r.returncode == 0, r.stderr
    attempted, acked = [12.0], []
    for k in range(12):
        v = round(11.80 + 0.01 * k, 2)
        attempted.append(v)  # an unacknowledged command may still have been applied
        res = host.cli("set", "1", "--vout", str(v))
        if res.returncode == 0:
            acked.append(v)
        seen = host.node(1)["telemetry"].get("VOUT_COMMAND")
        # whatever the node applied is exactly a value the host sent: never a corrupted one
        assert seen is None or any(abs(seen - a) < 1e-4 for a in attempted), seen
    assert acked, "no setpoint got through the noisy link"
    wait_for(lambda: host.node(1)["rejects"] > 0, 15, "rejected frames counted by the node")
    host.cli("fault", "inject", "link-clear", "--node", "1")
    wait_for(lambda: host.node(1)["state"] == "online", 15, "node 1 online after the noise")


def test_acknowledged_rows_survive_sigkill(tmp_path) -> None:
    h = Host(tmp_path)
    try:
        acked = wait_for(lambda: (a := h.api("/status")["stored_rows"]) > 200 and a, 30,
                         "rows stored")
        h.proc.send_signal(signal.SIGKILL)
        h.proc.wait(timeout=10)
    finally:
        h.stop()
    with sqlite3.connect(h.db) as db:
        n = db.execute("SELECT COUNT(*) FROM telemetry").fetchone()[0]
    assert n >= acked


def test_scripted_faults_are_applied_on_time(tmp_path) -> None:
    script = tmp_path / "faults.toml"
    script.write_text('[[fault]]\nat_s = 4.0\nkind = "converter-failure"\nnode = 4\n')
    h = Host(tmp_path, "--faults", str(script), "--no-control")
    try:
        wait_for(lambda: h.node(4)["mode"] == "cv" and h.node(4)["iout"] > 5, 30, "node 4 loaded")
        wait_for(lambda: h.node(4)["iout"] < 0.5, 15, "node 4's converter failed by the script")
        assert all(h.node(i)["state"] == "online" for i in (1, 2, 3))
    finally:
        h.stop()


def test_bad_fault_script_is_refused_before_starting(tmp_path) -> None:
    script = tmp_path / "faults.toml"
    script.write_text('[[fault]]\nat_s = -1\nkind = "ambient"\n')
    r = subprocess.run([sys.executable, "-m", "powerflow.cli", "run", str(RACK), "--emulate",
                        "--faults", str(script), "--duration", "1"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "[[fault]] #1: field 'at_s'" in r.stderr
