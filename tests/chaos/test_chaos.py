"""Chaos tests: the rack under `powerflow run --emulate` stays up through real disturbances,
and PowerFlow reports what was measured.

Disturbances are made for real: CPU-bound processes outnumbering the cores four to one,
SIGSTOP/SIGCONT of the host process and of one node's MicroPython process, operator actions
through the API, a converter failure. The physics log (the emulated rack's own record) is
the oracle for the bus; the host's API is what is checked against it. After each
disturbance, within RECOVERY_S: every healthy converter is back in the plan, the measured
bus is in band, and no exclusion outlives it; alarms and events say what happened.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from powerflow.testing.chaos import RunningHost, hog, running_host, wait_for
from tests.conftest import ROOT

RACK = ROOT / "examples" / "racks" / "small.toml"
RECOVERY_S = 10.0
BAND_V = 0.97 * 12.0


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory):
    with running_host(tmp_path_factory.mktemp("chaos"), RACK) as h:
        # every converter on, so each carries a share the failure test can miss
        assert h.send("PUT", "/policy", {"power_saving": False}).status_code == 200
        wait_for(lambda: all(n["on"] for n in h.api("/allocation")["nodes"].values()), 15,
                 "every converter in the plan")
        yield h


@pytest.fixture(autouse=True)
def healthy_at_start(host: RunningHost) -> None:
    """Each disturbance starts from a rack that has recovered from the one before."""
    recovered(host, time.time(), {1, 2, 3, 4})


def recovered(h: RunningHost, t_end: float, healthy: set[int]) -> dict:
    """Within RECOVERY_S of `t_end`: every healthy converter in the plan, not excluded and
    regulating to the plan's setpoint, the bus in band as measured by the physics and as the host reports it."""

    seen: list = []

    def check():
        a = h.api("/allocation")
        nodes = {n["id"]: n for n in h.api("/nodes")}
        recent = h.physics(since=time.time() - 1.0)
        seen[:] = [{i: (nodes[i]["excluded_why"], a["nodes"][str(i)]["on"]) for i in healthy},
                   a["measured"], min((ln.vmin for ln in recent), default=None), a["reason"]]
        if any(nodes[i]["excluded"] or not a["nodes"][str(i)]["on"]
               or nodes[i]["mode"] not in ("cv", "softstart")
               or abs(nodes[i]["vout_command"] - a["nodes"][str(i)]["vref"]) > 0.02
               or nodes[i]["telemetry_age_s"] is None or nodes[i]["telemetry_age_s"] > 1.0
               for i in healthy):
            return None  # out of the plan, or not following it (failsafe, current-limited)
        if not recent or min(ln.vmin for ln in recent) < BAND_V - 0.02:
            return None
        m = a["measured"]
        if m["vmin"] is None or m["vmin"] < BAND_V - 0.02 or a["state"] == "safe":
            return None
        return {"allocation": a, "physics_vmin": min(ln.vmin for ln in recent)}

    try:
        got = wait_for(check, RECOVERY_S + 5, "every healthy converter in the plan, bus in band")
    except AssertionError as e:
        raise AssertionError(f"{e}; last seen: {seen}") from None
    assert time.time() - t_end <= RECOVERY_S + 5
    return got


def events_since(h: RunningHost, t: float) -> list[tuple]:
    return [(e["node"], e["kind"], e["detail"]) for e in h.api("/events", since=t)]


def test_cpu_oversubscription_three_times(host: RunningHost) -> None:
    cores = os.cpu_count() or 2
    verdicts = host.api("/control")["verdicts"]
    for _ in range(3):  # each starvation far longer than the nodes' failsafe timer (2 s)
        t0 = time.time()
        hog(4 * cores, 15.0)
        got = recovered(host, time.time(), {1, 2, 3, 4})
        # the physics' bus never fell under the brownout level while the CPU was starved
        lines = host.physics(t0, time.time())
        assert lines and min(ln.vmin for ln in lines) >= 0.95 * 12.0, min(ln.vmin for ln in lines)
        assert got["allocation"]["state"] in ("optimal", "degraded")
    ctl = host.api("/control")
    assert ctl["verdicts"] == verdicts, "no converter was condemned for the CPU's starvation"
    # a period that started late judged nothing, and said so
    if ctl["max_late_s"] > 0.25 * ctl["period_s"]:
        assert any(k == "late_cycle" for _, k, _ in events_since(host, 0.0))


def test_host_paused_for_two_seconds(host: RunningHost) -> None:
    t0 = time.time()
    host.pause(2.0)
    t_end = time.time()
    recovered(host, t_end, {1, 2, 3, 4})
    lines = host.physics(t0, time.time())
    # the nodes fell back to droop at the bus voltage while their host was away
    assert min(ln.vmin for ln in lines) >= 0.95 * 12.0
    evs = events_since(host, t0 - 0.5)
    kinds = [(n, k, d[:40]) for n, k, d in evs]
    assert any(k == "late_cycle" and d.startswith("raised") for _, k, d in evs), kinds
    # the host took over again from the nodes' failsafe (or, paused briefly enough, none tripped)
    assert any(k == "failsafe cleared" for _, k, _ in evs) or not any(
        k == "failsafe" for _, k, _ in evs), [(n, k) for n, k, _ in evs]
    assert not any(k == "node_excluded" for _, k, _ in evs), evs
    assert host.api("/alarms") == [] or all(a["kind"] not in ("node_excluded", "safe_mode")
                                            for a in host.api("/alarms"))


def test_node_process_paused_for_two_seconds(host: RunningHost) -> None:
    t0 = time.time()
    recent = host.physics(since=t0 - 1.0)
    assert recent, (t0, host.log.read_text().splitlines()[-1][:40], len(host.physics()))
    before = recent[-1].wdt_resets
    lost0 = host.api("/nodes/2")["lost_count"]
    r = host.send("POST", "/emulator/faults", {"kind": "node-pause", "node": 2, "seconds": 2.0})
    assert r.status_code == 200, r.text
    wait_for(lambda: any(ln.wdt_resets > before for ln in host.physics(since=t0)), 10,
             "node 2's watchdog to reset it (an MCU whose loop hung 2 s)")
    wait_for(lambda: host.api("/nodes/2")["lost_count"] > lost0, 10,
             "the host to notice node 2's reset")
    recovered(host, time.time(), {1, 2, 3, 4})
    lines = host.physics(t0, time.time())
    evs = events_since(host, t0)
    # Node 2 owns tie B-C: its reset opens it, leaving node 1 alone with segments A and B
    # until it is back (a physical sag, which without a host would last: a rebooted node
    # stays off until a host leases it an output). Bounded here, and reported where the
    # host can see it: on a segment whose converter still reports (B's own, node 2, is
    # silent while paused; that is reported as its link lost)
    seen = [k for k, sg in enumerate(("A", "B", "C", "D")) if sg != "B"]
    sag_s = 0.1 * sum(1 for ln in lines if min(ln.v[k] for k in seen) < 0.95 * 12.0)
    if sag_s >= 0.5:
        assert any(k == "bus_sag" and d.startswith("raised") for _, k, d in evs), evs
    assert any(n == 2 and k in ("lost", "link") for n, k, _ in evs), evs
    assert any(n == 2 and k == "link_lost" and d.startswith("raised") for n, k, d in evs), evs
    boots = host.api("/nodes/2")["hello"]
    assert boots.get("BOOT_REASON") == 1, boots  # it says it was reset by its watchdog


def test_pause_control_set_a_node_by_hand_and_resume(host: RunningHost) -> None:
    t0 = time.time()
    assert host.send("PUT", "/control", {"enabled": False}).status_code == 200
    assert any(a["kind"] == "control_paused" for a in host.api("/alarms"))
    r = host.send("POST", "/nodes/2/setpoint", {"vout": 11.8})
    assert r.status_code == 200, r.text
    wait_for(lambda: abs(host.api("/nodes/2")["vout_command"] - 11.8) < 1e-3, 10,
             "node 2 at the operator's 11.8 V")
    assert host.send("PUT", "/control", {"enabled": True}).status_code == 200
    t_end = time.time()
    got = recovered(host, t_end, {1, 2, 3, 4})
    assert abs(host.api("/nodes/2")["vout_command"] - got["allocation"]["nodes"]["2"]["vref"]) < 0.05
    evs = events_since(host, t0)
    assert any(k == "control_paused" and d.startswith("cleared") for _, k, d in evs), evs
    assert not any(k == "node_excluded" for _, k, _ in evs), evs


def test_clear_faults_on_every_node_at_once(host: RunningHost) -> None:
    t0 = time.time()
    results: list[int] = []

    def clear(nid: int) -> None:
        results.append(httpx.post(f"{host.url}/api/v1/nodes/{nid}/clear-faults",
                                  timeout=10).status_code)

    threads = [threading.Thread(target=clear, args=(i,)) for i in (1, 2, 3, 4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=15)
    assert results == [200] * 4, results
    recovered(host, time.time(), {1, 2, 3, 4})
    lines = host.physics(t0, time.time())
    assert min(ln.vmin for ln in lines) >= BAND_V - 0.05, min(ln.vmin for ln in lines)
    evs = events_since(host, t0)
    assert sum(1 for _, k, _ in evs if k == "faults_cleared") == 4, evs
    assert not any(k == "node_excluded" for _, k, _ in evs), evs


def test_a_real_converter_failure_is_detected_and_reshared(host: RunningHost) -> None:
    t0 = time.time()
    period = host.api("/control")["period_s"]
    p0 = host.api("/control")["periods"]
    r = host.send("POST", "/emulator/faults", {"kind": "converter-failure", "node": 3})
    assert r.status_code == 200
    try:
        a = wait_for(lambda: (a := host.api("/allocation"))["nodes"]["3"]["share_w"] == 0 and a,
                     10 * period, "node 3 out of the shares")
        # re-shared within two periods of the failure
        assert host.api("/control")["periods"] - p0 <= 2 + 1, "one period of polling slack"
        assert all(a["nodes"][k]["on"] for k in ("1", "2", "4"))
        wait_for(lambda: "not delivering" in host.api("/allocation")["nodes"]["3"]["why"],
                 10 * period, "the verdict on node 3 after its probe")
        assert any(al["kind"] == "node_excluded" and al["node"] == 3
                   for al in host.api("/alarms"))
        # the operator's view says the same: CLI alarms, nodes and plan
        cli = [sys.executable, "-m", "powerflow.cli"]
        out = subprocess.run([*cli, "alarms", "--host", host.url], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0 and "node_excluded" in out.stdout and "node 3" in out.stdout
        rows = json.loads(subprocess.run([*cli, "nodes", "--json", "--host", host.url],
                                         capture_output=True, text=True, timeout=60).stdout)
        row3 = next(r for r in rows if r["id"] == 3)
        assert row3["excluded"] and "not delivering" in row3["excluded_why"]
        assert row3["excluded_since"] >= t0 and row3["telemetry_age_s"] < 2.0
        plan = subprocess.run([*cli, "plan", "--host", host.url], capture_output=True,
                              text=True, timeout=60).stdout
        assert plan.startswith("state: DEGRADED; measured bus "), plan
        recent = host.physics(since=time.time() - 1.0)
        assert min(ln.vmin for ln in recent) >= BAND_V - 0.02
    finally:
        host.send("POST", "/emulator/faults", {"kind": "converter-repair", "node": 3})
    # repaired: re-admitted by the operator's clear-faults (or, later, by probe)
    assert host.send("POST", "/nodes/3/clear-faults").status_code == 200
    recovered(host, time.time(), {1, 2, 3, 4})
    evs = events_since(host, t0)
    assert any(n == 3 and k == "node_excluded" and d.startswith("cleared") for n, k, d in evs)
