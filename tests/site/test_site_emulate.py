"""`powerflow site run --emulate` as a user runs it: its own Mosquitto, the site controller,
and every rack with a rack file a process of its own (the rack in fast mode under its own
rack controller). With PDUs tighter than the racks' demand, the budgets bind: the site's API
shows every rack online with a lease, drawing (as measured by the rack, not as planned)
within its committed budget and every PDU within its limit; SIGTERM ends it with rc 0 and no
rack process left. And `site scenario run --broker` on a broker the scenario did not start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from powerflow.model.site import load_site
from powerflow.site.broker import Mosquitto
from tests.conftest import ROOT
from tests.site.test_rack_under_site import free_port, poll

RACK = ROOT / "examples" / "racks" / "small.toml"
PDU_W = 1600.0  # two racks drawing ~0.7-1.3 kW each under it: the PDU binds


def tight_site(tmp: Path) -> Path:
    text = (ROOT / "examples" / "sites" / "two-pdus.toml").read_text()
    text = text.replace('"../racks/small.toml"', json.dumps(str(RACK)))
    text = text.replace("limit_w = 3600.0", f"limit_w = {PDU_W}")
    f = tmp / "tight.toml"
    f.write_text(text)
    return f


def rack_processes(marker: str) -> list[int]:
    """Pids of emulated-rack processes whose command line names `marker` (our site file)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"powerflow.site.emulated" in cmd and any(marker.encode() in c for c in cmd):
            out.append(int(pid))
    return out


def test_site_run_emulate_runs_each_rack_under_its_own_controller(tmp_path) -> None:
    site_file = tight_site(tmp_path)
    site = load_site(site_file)
    port = free_port()
    log = tmp_path / "site.log"
    proc = subprocess.Popen([sys.executable, "-m", "powerflow.cli", "site", "run",
                             str(site_file), "--emulate", "--period", "1", "--port", str(port),
                             "--duration", "120"], stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        poll(lambda: len(rack_processes(str(RACK))) == len(site.racks),
             "a process for each rack", 30)
        url = f"http://127.0.0.1:{port}/api/v1/site"

        def settled():
            st = httpx.get(url, timeout=2).json()
            racks = st["racks"]
            if not all(r["online"] and r["measured_w"] for r in racks):
                return None
            return st if st["periods"] >= 12 else None

        checks = 0
        for _ in range(6):  # six looks, a site period apart, once the budgets bind
            st = poll(settled, "every rack online and reporting for 12 periods", 60)
            racks = {r["id"]: r for r in st["racks"]}
            for r in racks.values():
                # measured at the rack's feed over its last period (so under a budget that
                # may since have been lowered: the PDU below is what the leases guarantee)
                assert r["floor_w"] * 0.5 <= r["measured_w"] <= r["feed_limit_w"], r
            for n in st["nodes"]:
                if n["id"].startswith("pdu"):
                    # break-before-make: the leases in force never add up above the limit,
                    # so neither do the draws that obey them (3 %: a period's mean above
                    # its P95 forecast before the rack's next decision)
                    assert n["budget_w"] <= PDU_W + 1e-6, n
                    assert n["measured_w"] <= PDU_W * 1.03, (n, racks)
            # the PDUs bind: at least one rack is held below its demand's P95
            capped = [r for r in racks.values() if r["demand_p95_w"] > r["budget_w"] + 1]
            checks += bool(capped)
            poll(lambda p=st["periods"]: httpx.get(url, timeout=2).json()["periods"] > p,
                 "the next site period", 5)
        assert checks >= 1
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        assert "powerflow_site" in metrics
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        rc = proc.wait(30)
    assert rc == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()
    assert rack_processes(str(RACK)) == []


def test_emulate_with_a_broker_or_a_bad_rack_file_is_refused(tmp_path) -> None:
    f = tight_site(tmp_path)
    r = subprocess.run([sys.executable, "-m", "powerflow.cli", "site", "run", str(f),
                        "--emulate", "--broker", "mqtt://127.0.0.1:1", "--no-api"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "leave out --broker" in r.stderr
    bad = tmp_path / "bad-rack.toml"
    bad.write_text("[rack]\nname = 'x'\n")
    f.write_text(f.read_text().replace(json.dumps(str(RACK)), json.dumps(str(bad)), 1))
    r = subprocess.run([sys.executable, "-m", "powerflow.cli", "site", "run", str(f),
                        "--emulate", "--no-api"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "bad-rack.toml" in r.stderr and "Traceback" not in r.stderr
    f.write_text(f.read_text().replace(json.dumps(str(bad)), '"missing.toml"'))
    r = subprocess.run([sys.executable, "-m", "powerflow.cli", "site", "run", str(f),
                        "--emulate", "--no-api"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "field 'rack'" in r.stderr, r.stderr


def scenario(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "powerflow.cli", "site", "scenario", "run",
                           *args], capture_output=True, text=True, timeout=180)


def test_site_scenario_on_a_broker_of_ones_own(tmp_path) -> None:
    sc = ROOT / "examples" / "site-scenarios" / "controller-killed.toml"
    site = load_site(ROOT / "examples" / "sites" / "two-pdus.toml")
    users = ["site-a", "site-b", "feed-monitor"]
    with Mosquitto(tmp_path / "broker", site.name, users,
                   [r.client for r in site.racks]) as broker:
        pwdir = tmp_path / "passwords"
        pwdir.mkdir()
        for u in users[:2] + [r.client for r in site.racks]:
            (pwdir / f"{u}.password").write_text(broker.password_file(u).read_text())
        r = scenario(str(sc), "--json", "--broker", broker.url, "--password-dir", str(pwdir))
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["passed"] and 0 < out["max_failover_s"] <= 5.0
        # the controllers ran on this broker: its log saw their clients connect
        assert " as site-b " in (broker.workdir / "mosquitto.log").read_text()
        # a broker restart cannot be done to someone else's broker; a missing password
        # file is named
        r = scenario(str(ROOT / "examples" / "site-scenarios" / "broker-restart.toml"),
                     "--broker", broker.url, "--password-dir", str(pwdir))
        assert r.returncode == 2 and "broker_restart needs" in r.stderr, r.stderr
        (pwdir / "rack-r3.password").unlink()
        r = scenario(str(sc), "--broker", broker.url, "--password-dir", str(pwdir))
        assert r.returncode == 2 and "rack-r3" in r.stderr, r.stderr
    r = scenario(str(sc), "--broker", "mqtt://127.0.0.1:1")
    assert r.returncode == 2 and "--password-dir" in r.stderr
    r = scenario(str(sc), "--password-dir", str(tmp_path))
    assert r.returncode == 2 and "go with --broker" in r.stderr
