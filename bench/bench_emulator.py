"""Emulated rack and host link figures.

    .venv/bin/python bench/bench_emulator.py

For racks of 16 and 32 nodes in full-process mode (the emulator in this process, the
host controller in its own, as `powerflow run` on a rack file that names each node's
pty or TCP address): the host's CPU per node, the telemetry frames per second it
sustains, and the latency from a command request to the node's acknowledgement,
through the HTTP API the CLI uses (p50/p99), plus a few whole CLI invocations.
Then the fast mode's speed against real time on large.toml.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "racks"))

from generate import large  # noqa: E402

from pfproto import defs as d  # noqa: E402
from powerflow.emulator.fast import FastRack  # noqa: E402
from powerflow.emulator.rack_emulator import EmulatedRack  # noqa: E402
from powerflow.model.rack import load_rack, parse_rack  # noqa: E402

TELEMETRY_MS = 100


def rack_text(n_nodes: int) -> str:
    """large.toml cut to the first n_nodes nodes (and their segments' devices and ties)."""
    import tomllib

    raw = tomllib.loads(large())
    raw["node"] = raw["node"][:n_nodes]
    segs = {n["segment"] for n in raw["node"]}
    keep_ids = {n["id"] for n in raw["node"]}
    raw["segment"] = [s for s in raw["segment"] if s["id"] in segs]
    raw["device"] = [dv for dv in raw["device"] if dv["segment"] in segs]
    raw["branch"] = [b for b in raw["branch"] if b["from"] in segs and b["to"] in segs
                     and b["port"][0] in keep_ids]
    return _dump(raw)


def _dump(raw: dict) -> str:
    out = []
    for table in ("rack", "feed"):
        out.append(f"[{table}]\n" + "".join(f"{k} = {_v(v)}\n" for k, v in raw[table].items()))
    for arr in ("segment", "node", "branch", "device"):
        for item in raw[arr]:
            out.append(f"[[{arr}]]\n" + "".join(f"{k} = {_v(v)}\n" for k, v in item.items()))
    return "\n".join(out)


def _v(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(_v(x) for x in v) + "]"
    return repr(v)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(n_nodes: int, tmp: Path) -> dict[str, float]:
    rack = parse_rack(__import__("tomllib").loads(rack_text(n_nodes)), "bench")
    emu = EmulatedRack(rack)
    addrs = emu.start()
    text = rack_text(n_nodes)
    for nid, a in addrs.items():  # point the host at the emulated nodes' real devices/ports
        link = f"serial:{a.target}" if a.kind == "serial" else f"tcp:127.0.0.1:{a.port}"
        text = re.sub(rf'(\[\[node\]\]\nid = {nid}\n(?:[^\[]*?\n)?)link = "[^"]*"',
                      lambda m, link=link: m.group(1) + f'link = "{link}"', text, count=1)
    path = tmp / f"bench{n_nodes}.toml"
    path.write_text(text)
    port = 18470 + n_nodes
    url = f"http://127.0.0.1:{port}/api/v1"
    host = subprocess.Popen([sys.executable, "-m", "powerflow.cli", "run", str(path), "--port",
                             str(port), "--db", str(tmp / f"b{n_nodes}.db"), "--telemetry-ms",
                             str(TELEMETRY_MS)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=tmp)
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                if httpx.get(url + "/status").json()["online"] == n_nodes:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        time.sleep(2.0)  # let the configuration and first leases settle before measuring
        rows0, cpu0, t0 = httpx.get(url + "/status").json()["stored_rows"], cpu_seconds(host.pid), \
            time.monotonic()
        time.sleep(10.0)  # the measurement window
        rows1, cpu1, t1 = httpx.get(url + "/status").json()["stored_rows"], cpu_seconds(host.pid), \
            time.monotonic()
        frames_s = (rows1 - rows0) / 14 / (t1 - t0)  # 14 stored metrics per telemetry frame
        lat = []
        for k in range(200):
            nid = 1 + k % n_nodes
            t = time.perf_counter()
            r = httpx.post(f"{url}/nodes/{nid}/setpoint", json={"vout": 12.0 - 0.001 * (k % 5)})
            lat.append((time.perf_counter() - t) * 1e3)
            assert r.status_code == 200, r.text
        cli = []
        for k in range(5):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "powerflow.cli", "set", "1", "--vout", "12.0",
                            "--host", f"http://127.0.0.1:{port}"], check=True, capture_output=True)
            cli.append((time.perf_counter() - t) * 1e3)
        lat.sort()
        return {"nodes": n_nodes, "cpu_pct_per_node": (cpu1 - cpu0) / (t1 - t0) / n_nodes * 100,
                "frames_s": frames_s, "expected_frames_s": n_nodes * 1000 / TELEMETRY_MS,
                "p50_ms": statistics.median(lat), "p99_ms": lat[int(0.99 * len(lat)) - 1],
                "cli_ms": statistics.median(cli)}
    finally:
        host.terminate()
        host.wait(timeout=20)
        emu.stop()


def fast_speedup() -> float:
    rack = load_rack(ROOT / "examples" / "racks" / "large.toml")
    fr = FastRack(rack)
    fr.open_sessions()
    for nid in fr.nodes:
        fr.command(nid, d.MSG_SETPOINT, {d.K_VOUT_COMMAND: 12.0, d.K_LEASE_MS: 600000})
    t = time.perf_counter()
    fr.run(30.0)
    return 30.0 / (time.perf_counter() - t)


def main() -> None:
    print(f"| nodes | host CPU per node | telemetry frames/s (asked {1000 // TELEMETRY_MS} Hz "
          "per node) | command -> ack via API p50 / p99 | whole CLI call (median) |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (16, 32):
            r = measure(n, Path(tmp))
            print(f"| {n} | {r['cpu_pct_per_node']:.2f} % | {r['frames_s']:.0f} of "
                  f"{r['expected_frames_s']:.0f} | {r['p50_ms']:.1f} / {r['p99_ms']:.1f} ms | "
                  f"{r['cli_ms']:.0f} ms |", flush=True)
    print(f"\nFast mode on large.toml (32 nodes, 128 devices): {fast_speedup():.1f}x real time")


if __name__ == "__main__":
    main()
