"""API latency and throughput under a load generator while the control loop runs.

    .venv/bin/python bench/bench_api.py [--seconds 15] [--clients 8]

Starts `powerflow run examples/racks/small.toml --emulate` (MicroPython nodes, control loop
every second), then `clients` concurrent HTTP clients request a mix of native, Prometheus and
Redfish endpoints as fast as they are answered. Prints p50/p99 latency per endpoint, total
requests per second, and whether the control loop held its period meanwhile (periods run
against periods due, and its cycle time). The same mix without load (one client) is the
reference.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PATHS = ["/api/v1/nodes", "/api/v1/allocation", "/api/v1/plan", "/metrics",
         "/redfish/v1/Chassis/Rack/PowerSubsystem", "/api/v1/forecasts"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def load(url: str, clients: int, seconds: float) -> dict[str, list[float]]:
    lat: dict[str, list[float]] = {p: [] for p in PATHS}
    end = time.monotonic() + seconds

    async def worker(k: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=10) as c:
            i = k
            while time.monotonic() < end:
                p = PATHS[i % len(PATHS)]
                t0 = time.perf_counter()
                r = await c.get(p)
                r.raise_for_status()
                lat[p].append((time.perf_counter() - t0) * 1000)
                i += 1

    await asyncio.gather(*(worker(k) for k in range(clients)))
    return lat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    db = Path("/tmp") / f"bench-api-{os.getpid()}.sqlite3"
    proc = subprocess.Popen([sys.executable, "-m", "powerflow.cli", "run",
                             str(ROOT / "examples/racks/small.toml"), "--emulate", "--port",
                             str(port), "--db", str(db)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/api/v1/control", timeout=1).json()["periods"] >= 5:
                    break
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            time.sleep(0.1)
        print(f"{'clients':>7} {'endpoint':>42} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>7}")
        for clients in (1, args.clients):
            before = httpx.get(url + "/api/v1/control").json()
            t0 = time.monotonic()
            lat = asyncio.run(load(url, clients, args.seconds))
            span = time.monotonic() - t0
            after = httpx.get(url + "/api/v1/control").json()
            total = sum(len(v) for v in lat.values())
            for p, v in lat.items():
                a = np.array(v)
                print(f"{clients:>7} {p:>42} {np.percentile(a, 50):8.2f} {np.percentile(a, 99):8.2f} "
                      f"{len(a) / span:7.1f}")
            allv = np.concatenate([np.array(v) for v in lat.values()])
            print(f"{clients:>7} {'all':>42} {np.percentile(allv, 50):8.2f} "
                  f"{np.percentile(allv, 99):8.2f} {total / span:7.1f}")
            due = span / after["period_s"]
            print(f"        control loop: {after['periods'] - before['periods']} periods run of "
                  f"{due:.1f} due; last cycle {after['cycle_ms_last']:.1f} ms, max of the last "
                  f"300 {after['cycle_ms_max_recent']:.1f} ms")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
        db.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
