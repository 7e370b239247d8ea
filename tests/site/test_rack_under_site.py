"""The real stack: `powerflow run --emulate --site` (real firmware in MicroPython processes
under the host controller) under `powerflow site run`, both as a user runs them, over a real
Mosquitto. The rack's plan keeps to the budget the site grants; with the site controller
SIGKILLed the rack falls to its safe budget (never above the last grant) with an alarm; a
site controller started again lifts it, with no restart of the rack."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from powerflow.model.rack import load_rack
from powerflow.model.site import load_site
from powerflow.process import listen
from powerflow.site.broker import Mosquitto
from tests.conftest import ROOT

SITE = ROOT / "examples" / "sites" / "two-pdus.toml"
RACK = ROOT / "examples" / "racks" / "small.toml"


def free_port() -> int:
    s = listen("127.0.0.1", 0)
    port = s.getsockname()[1]
    s.close()
    return port


def start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "powerflow.cli", *args],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def poll(fn, what: str, timeout_s: float):
    """fn() every 0.25 s until it returns something true; that value."""
    for _ in range(int(timeout_s / 0.25)):
        with contextlib.suppress(httpx.HTTPError, OSError, KeyError, TypeError):
            v = fn()
            if v:
                return v
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout_s} s: {what}")


def test_a_real_rack_obeys_its_site_budget_and_keeps_safe_without_it(tmp_path) -> None:
    site, rack = load_site(SITE), load_rack(RACK)
    broker = Mosquitto(tmp_path / "broker", site.name, ["site-a"], [r.client for r in site.racks])
    broker.start()
    rack_port, site_port = free_port(), free_port()
    procs: list[subprocess.Popen] = []

    def controller() -> subprocess.Popen:
        p = start(["site", "run", str(SITE), "--broker", broker.url, "--id", "site-a",
                   "--password-file", str(broker.password_file("site-a")),
                   "--port", str(site_port), "--period", "0.5"], tmp_path / "site.log")
        procs.append(p)
        return p

    try:
        procs.append(start(["run", str(RACK), "--emulate", "--port", str(rack_port),
                            "--site", f"{broker.url}/{site.name}", "--site-client", "rack-r1",
                            "--site-password-file", str(broker.password_file("rack-r1")),
                            "--site-period", "0.5", "--state-dir", str(tmp_path / "state")],
                           tmp_path / "rack.log"))
        ctl = controller()
        rack_api = f"http://127.0.0.1:{rack_port}/api/v1"
        site_api = f"http://127.0.0.1:{site_port}/api/v1/site"

        def granted():
            a = httpx.get(f"{rack_api}/allocation", timeout=2).json()
            s = httpx.get(site_api, timeout=2).json()
            r1 = s["racks"][0]
            lim = a["predicted"]["feed_limit_w"]
            alarms = {x["kind"] for x in httpx.get(f"{rack_api}/alarms", timeout=2).json()}
            if r1["measured_w"] and r1["budget_w"] and "site_budget" not in alarms:
                return lim, r1, a
            return None

        lim, r1, a = poll(granted, "the rack plans under a site lease", 90.0)
        # the rack's feed limit is a budget this site granted: within its floor and feed limit
        assert rack.floor_w <= lim <= rack.breaker_limit_w
        assert a["predicted"]["feed_w"] <= lim + 1e-6
        assert r1["measured_w"] > 0 and r1["demand_p95_w"] > 0  # it reports what it measures
        # the site controller dies: the lease runs out, the rack holds its safe budget
        os.killpg(ctl.pid, signal.SIGKILL)
        ctl.wait(10)

        def fallen():
            alarms = {x["kind"] for x in httpx.get(f"{rack_api}/alarms", timeout=2).json()}
            a = httpx.get(f"{rack_api}/allocation", timeout=2).json()
            low = a["predicted"]["feed_limit_w"] <= rack.safe_budget_w + 1e-6
            return a if "site_budget" in alarms and low else None

        # (the alarm may come first: the agent's report sees the lease run out too)
        a = poll(fallen, "the rack alarms and falls to its safe budget", 30.0)
        assert a["predicted"]["feed_limit_w"] >= rack.floor_w - 1e-6
        assert a["predicted"]["feed_w"] <= a["predicted"]["feed_limit_w"] + 1e-6
        # a site controller again: the rack rejoins without a restart
        controller()
        poll(granted, "the rack plans under a new lease", 30.0)
        assert procs[0].poll() is None  # the rack host never stopped
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        broker.close()
