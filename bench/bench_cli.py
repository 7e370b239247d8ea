"""The operator's commands as a user runs them: whole-command wall time against a running host.

    .venv/bin/python bench/bench_cli.py [--runs 15]

Starts `powerflow run examples/racks/small.toml --emulate` on a free port, waits for its four
nodes, then times, as whole processes (fork, interpreter start, imports, the HTTP call,
printing): `powerflow nodes --json`, `powerflow control status`, `powerflow --version`.
References in the same run: `python -c pass` (the interpreter's own start) and the same GET
made in this process with the standard library (the host's answer time alone). Prints the
median and the slowest run of each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "host"))

from powerflow.testing.chaos import free_port, wait_for  # noqa: E402

BIN = Path(sys.executable).parent


def timed(cmd: list[str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    a = ap.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    state = Path(os.environ.get("TMPDIR", "/tmp")) / f"pf-bench-cli-{port}"
    host = subprocess.Popen([str(BIN / "powerflow"), "run", str(ROOT / "examples/racks/small.toml"),
                             "--emulate", "--port", str(port), "--state-dir", str(state)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import json

        def online() -> bool:
            try:
                return json.loads(urllib.request.urlopen(url + "/api/v1/status").read()
                                  )["online"] == 4
            except OSError:  # not listening yet
                return False

        wait_for(online, 60, "four nodes online")

        def get() -> None:
            urllib.request.urlopen(url + "/api/v1/nodes").read()

        inproc = []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            get()
            inproc.append(time.perf_counter() - t0)
        rows = {
            "python -c pass (interpreter start)": timed([sys.executable, "-c", "pass"], a.runs),
            "GET /api/v1/nodes in-process (urllib)": inproc,
            "powerflow --version": timed([str(BIN / "powerflow"), "--version"], a.runs),
            "powerflow nodes --json": timed([str(BIN / "powerflow"), "nodes", "--json", "--host",
                                             url], a.runs),
            "powerflow control status": timed([str(BIN / "powerflow"), "control", "status",
                                               "--host", url], a.runs),
        }
    finally:
        host.terminate()
        host.wait(timeout=30)
    print(f"{'':44} {'median s':>9} {'max s':>7}   ({a.runs} runs, whole commands)")
    for name, xs in rows.items():
        print(f"{name:44} {statistics.median(xs):9.3f} {max(xs):7.3f}")


if __name__ == "__main__":
    main()
