"""The control loop on the full-process emulated rack (MicroPython nodes over ptys and TCP)
under `powerflow run`, driven through the host's HTTP API and the CLI."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.emulator.test_host_end_to_end import Host, running_host, wait_for


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    with running_host(tmp_path_factory.mktemp("ctl"), periods=12) as h:
        yield h


def put(h: Host, path: str, body: dict) -> httpx.Response:
    return httpx.put(h.url + "/api/v1" + path, json=body, timeout=5)


def test_allocation_goes_out_and_the_nodes_follow_it(host: Host) -> None:
    a = host.api("/allocation")
    assert a["ok"] and not a["fallback"]

    def followed():
        a = host.api("/allocation")
        nodes = {n["id"]: n for n in host.api("/nodes")}
        for nid, plan in a["nodes"].items():
            n = nodes[int(nid)]
            if plan["on"] and (n["mode"] != "cv" or abs(n["vout_command"] - plan["vref"]) > 0.05):
                return False
            if not plan["on"] and n["mode"] == "cv":
                return False
        return True

    wait_for(followed, 15, "every node at its planned state and setpoint")
    fc = host.api("/forecasts")
    assert set(fc) == {"gpu0", "cpu0", "gpu1", "cpu1", "gpu2", "cpu2", "gpu3", "cpu3"}
    assert all(f["p95_w"]["1"] >= f["mean_w"]["1"] for f in fc.values())


def test_plan_cli_explains_without_applying(host: Host) -> None:
    before = host.api("/control")["periods"]
    r = host.cli("plan", "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert set(plan["nodes"]) == {"1", "2", "3", "4"}
    assert all("why" in n and "binding" in n for n in plan["nodes"].values())
    assert all({"forecast_w", "p95_w", "cap_w", "binding"} <= set(d)
               for d in plan["devices"].values())
    text = host.cli("plan")
    assert text.returncode == 0 and "why / binding" in text.stdout
    assert host.api("/control")["periods"] >= before  # the loop kept running meanwhile


def test_policy_changes_apply_at_run_time_and_bad_ones_change_nothing(host: Host) -> None:
    r = put(host, "/policy", {"reserve_frac": 5})
    assert r.status_code == 422 and "reserve_frac" in r.json()["detail"][0]["msg"]
    assert host.api("/policy")["policy"]["reserve_frac"] == 0.1
    r = host.cli("policy", "--set", "power_saving=false")
    assert r.returncode == 0, r.stderr
    n0 = host.api("/control")["periods"]
    wait_for(lambda: host.api("/control")["periods"] > n0 + 1
             and all(n["on"] for n in host.api("/allocation")["nodes"].values()), 10,
             "every converter planned on with power saving off")
    r = host.cli("policy", "--profile", "nope")
    assert r.returncode == 1 and "no profile 'nope'" in r.stderr
    assert host.cli("policy", "--set", "power_saving=true").returncode == 0


def test_manual_setpoints_are_refused_while_the_loop_owns_them(host: Host) -> None:
    r = host.cli("set", "2", "--vout", "11.5")
    assert r.returncode == 1 and "control loop owns the setpoints" in r.stderr
    assert put(host, "/control", {"enabled": False}).json()["enabled"] is False
    try:
        r = host.cli("set", "2", "--vout", "12.1")
        assert r.returncode == 0, r.stderr
    finally:
        put(host, "/control", {"enabled": True})


def test_agent_samples_and_their_caps(host: Host) -> None:
    r = httpx.post(host.url + "/api/v1/agent/samples",
                   json={"device": "gpu0", "power_w": 250.0, "utilisation": 0.9}, timeout=5)
    assert r.status_code == 200 and r.json()["device"] == "gpu0" and "cap_w" in r.json()
    r = httpx.post(host.url + "/api/v1/agent/samples", json={"device": "gpu9", "power_w": 1.0},
                   timeout=5)
    assert r.status_code == 404 and "gpu9" in r.json()["detail"]
    r = httpx.post(host.url + "/api/v1/agent/samples",
                   json={"device": "gpu0", "utilisation": 1.5}, timeout=5)
    assert r.status_code == 422
    # power smoothing in the policy reaches the agents in their answer (and the plan)
    assert put(host, "/policy", {"smoothing_up_w_per_s": 120.0}).status_code == 200
    try:
        n0 = host.api("/control")["periods"]
        wait_for(lambda: host.api("/control")["periods"] > n0 + 1, 10, "a period under it")
        r = httpx.post(host.url + "/api/v1/agent/samples",
                       json={"device": "gpu0", "power_w": 250.0}, timeout=5)
        assert r.json()["smoothing_up_w_per_s"] == 120.0 and r.json()["smoothing_down_w_per_s"] is None
        assert host.api("/allocation")["devices"]["gpu0"]["smoothing_up_w_per_s"] == 120.0
    finally:
        put(host, "/policy", {"smoothing_up_w_per_s": 0.0})


def test_a_failed_converter_is_taken_out_of_the_plan(host: Host) -> None:
    # all converters on so the failed one surely carries a share
    assert host.cli("policy", "--set", "power_saving=false").returncode == 0
    try:
        wait_for(lambda: host.node(3)["iout"] > 5, 15, "node 3 carrying load")
        assert host.cli("fault", "inject", "converter-failure", "--node", "3").returncode == 0
        a = wait_for(lambda: (a := host.api("/allocation"))["nodes"]["3"]["share_w"] == 0 and a,
                     10, "node 3 out of the plan's shares")
        # the evidence, then a probe a step above its bus: no current -> the verdict
        a = wait_for(lambda: "not delivering" in (a := host.api("/allocation"))["nodes"]["3"]["why"]
                     and a, 10, "the verdict on node 3")
        assert a["nodes"]["3"]["on"] is False and a["ok"]
        node3 = next(n for n in host.api("/nodes") if n["id"] == 3)
        assert node3["excluded"] and "not delivering" in node3["excluded_why"]
        alarms = host.api("/alarms")
        assert any(al["kind"] == "node_excluded" and al["node"] == 3 for al in alarms), alarms
        kinds = [(e["node"], e["kind"], e["detail"]) for e in host.api("/events")]
        assert any(n == 3 and k == "probe" and d.startswith("failed") for n, k, d in kinds), kinds
        listed = {f["node"]: f for f in host.api("/faults")}
        assert 3 in listed and "not delivering" in listed[3]["allocator"]
        # the others carry the rack: regulating, bus in the band
        def carried():
            rows = [n for n in host.api("/nodes") if n["id"] != 3]
            ok = all(n["mode"] == "cv" and n["vout"] > 0.97 * 12 for n in rows)
            seen[:] = [(n["id"], n["mode"], n["vout"], n["iout"]) for n in rows] + [host.api("/allocation")["nodes"]]
            return ok

        seen: list = []
        try:
            wait_for(carried, 10, "the other converters regulating the bus in its band")
        except AssertionError as e:
            raise AssertionError(f"{e}: {seen}") from None
    finally:
        host.cli("fault", "inject", "converter-repair", "--node", "3")
        host.cli("policy", "--set", "power_saving=true")
