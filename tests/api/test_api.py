"""The host API on a real host over real links: tokens and the CLI, server-sent events, and the
Prometheus exposition scraped by a real Prometheus server (Debian's `prometheus`)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.emulator.test_host_end_to_end import Host, free_port, wait_for

READ, OPS = "read-secret-1234", "operator-secret-5678"


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    tokens = tmp / "tokens.toml"
    tokens.write_text(
        f'[[token]]\nname = "grafana"\nrole = "read"\n'
        f'sha256 = "{hashlib.sha256(READ.encode()).hexdigest()}"\n'
        f'[[token]]\nname = "alice"\nrole = "operator"\n'
        f'sha256 = "{hashlib.sha256(OPS.encode()).hexdigest()}"\n')
    h = Host(tmp, "--tokens", str(tokens))
    auth = {"Authorization": f"Bearer {READ}"}
    try:
        wait_for(lambda: httpx.get(h.url + "/api/v1/status", headers=auth,
                                   timeout=5).json()["online"] == 4, 30, "all nodes online")
        wait_for(lambda: httpx.get(h.url + "/api/v1/control", headers=auth,
                                   timeout=5).json()["periods"] >= 3, 30, "control periods")
        yield h
    finally:
        h.stop()


def call(h: Host, method: str, path: str, token: str | None, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, h.url + path, headers=headers, timeout=5, **kw)


def test_tokens_hold_on_the_real_server_and_the_cli_takes_its_own(host: Host) -> None:
    """Roles, refusals and the audit in detail are in-process (test_service_api.py); here the
    same rules on the real server, and the CLI with its token from the environment."""
    assert call(host, "GET", "/api/v1/nodes", None).status_code == 401
    r = call(host, "PUT", "/api/v1/policy", READ, json={"reserve_frac": 0.2})
    assert r.status_code == 403 and "read-only" in r.json()["detail"]
    r = call(host, "PUT", "/api/v1/policy", OPS, json={"reserve_frac": 0.2})
    assert r.status_code == 200 and r.json()["policy"]["reserve_frac"] == 0.2
    audit = call(host, "GET", "/api/v1/audit", READ).json()
    assert [(a["who"], a["status"]) for a in audit[-2:]] == [("grafana", 403), ("alice", 200)]
    r = subprocess.run([sys.executable, "-m", "powerflow.cli", "policy", "--json", "--host",
                        host.url], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "POWERFLOW_TOKEN": READ})
    assert r.returncode == 0 and json.loads(r.stdout)["policy"]["reserve_frac"] == 0.2

    def cli(token: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "powerflow.cli", *args, "--host", host.url],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "POWERFLOW_TOKEN": token})

    r = cli(READ, "control", "pause")
    assert r.returncode == 1 and "read-only" in r.stderr and "(HTTP 403)" in r.stderr
    r = cli(OPS, "control", "pause")
    assert r.returncode == 0 and r.stdout.startswith("control loop PAUSED"), r.stderr
    assert json.loads(cli(READ, "control", "status", "--json").stdout)["enabled"] is False
    r = cli(OPS, "control", "resume")
    assert r.returncode == 0 and r.stdout.startswith("control loop running"), r.stderr


def test_the_hint_commands_as_a_schedulers_prolog_and_epilog_run_them(host: Host) -> None:
    """`powerflow hint` against the real host: a start with a device range and relative time,
    its listing, the end; refusals in one line (rc 1), nothing stored."""
    def cli(token: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "powerflow.cli", "hint", *args, "--host",
                               host.url], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "POWERFLOW_TOKEN": token})

    before = json.loads(cli(READ, "list", "--json").stdout)
    for token, args, msg in (
            (READ, ("start", "j1", "--devices", "gpu0", "--watts", "200", "--for", "60"),
             "read-only"),
            (OPS, ("start", "j1", "--devices", "gpu0..gpu9", "--watts", "200", "--for", "60"),
             "no device 'gpu4'"),
            (OPS, ("start", "j1", "--devices", "gpu0", "--watts", "5000", "--for", "60"),
             "field 'watts'"),
            (OPS, ("start", "j1", "--devices", "gpu0", "--watts", "200", "--for", "60",
                   "--at", "+2h"), "beyond the 3600 s horizon"),
            (OPS, ("start", "j1", "--devices", "gpu0", "--watts", "200", "--for", "soon"),
             "--for 'soon'"),
            (OPS, ("end", "never-started"), "no hinted job"),
            (OPS, ("pause", "never-started", "--watts", "100", "--for", "15s"), "no hinted job")):
        r = cli(token, *args)
        assert r.returncode == 1 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert json.loads(cli(READ, "list", "--json").stdout) == before
    r = cli(OPS, "start", "slurm-42", "--devices", "gpu0..gpu1", "--watts", "280", "--for", "10m",
            "--at", "+20s")
    assert r.returncode == 0 and r.stdout.startswith("job slurm-42: gpu0, gpu1 at about 280 W"), \
        r.stderr
    r = cli(OPS, "pause", "slurm-42", "--watts", "110", "--for", "15s", "--at", "+60s")
    assert r.returncode == 0 and "  pause at about 110 W each" in r.stdout, r.stderr
    r = cli(OPS, "pause", "slurm-42", "--watts", "110", "--for", "15s", "--at", "+65s")
    assert r.returncode == 1 and "overlaps" in r.stderr and "Traceback" not in r.stderr
    listed = json.loads(cli(READ, "list", "--json").stdout)
    assert [(h["job"], h["devices"], h["end"] - h["start"]) for h in listed] == \
        [("slurm-42", ["gpu0", "gpu1"], 600.0)]
    assert [p["end"] - p["start"] for p in listed[0]["pauses"]] == [15.0]
    r = cli(OPS, "end", "slurm-42", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["end"] <= listed[0]["start"]


def test_the_slurm_and_kubernetes_examples_send_their_hints(host: Host, tmp_path) -> None:
    """examples/schedulers as a site would install them, against the real host: Slurm's
    prolog and epilog (its `scontrol` a stand-in on PATH: Slurm is not installed here) and
    the Kubernetes hook fed a pod's watch events."""
    from tests.conftest import ROOT

    ex = ROOT / "examples" / "schedulers"
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "scontrol").write_text(
        '#!/bin/sh\ncase "$2" in\n hostnames) echo n1; echo n2; echo n3;;\n'
        ' job) echo "JobId=$3 JobName=train TimeLimit=01:30:00 Partition=gpu";;\nesac\n')
    (bin_ / "scontrol").chmod(0o755)
    (tmp_path / "devices.map").write_text("n1 gpu0\nn2 gpu1\n")  # n3 is on no rack
    (tmp_path / "hint.env").write_text(
        f"POWERFLOW_HOST={host.url}\nPOWERFLOW_TOKEN={OPS}\n"
        f"POWERFLOW_DEVICE_MAP={tmp_path / 'devices.map'}\nPOWERFLOW_WATTS=250\n")
    env = {"PATH": f"{bin_}:{os.path.dirname(sys.executable)}:/usr/bin:/bin",
           "POWERFLOW_HINT_ENV": str(tmp_path / "hint.env"), "SLURM_JOB_ID": "77",
           "SLURM_JOB_NODELIST": "n[1-3]"}

    def listed() -> dict[str, dict]:
        return {h["job"]: h for h in call(host, "GET", "/api/v1/hints", READ).json()}

    r = subprocess.run([str(ex / "slurm" / "prolog.sh")], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    h = listed()["slurm-77"]
    assert h["devices"] == ["gpu0", "gpu1"] and h["watts"] == 250.0
    assert h["end"] - h["start"] == 5400.0  # the job's time limit
    # the training loop announces a checkpoint of its job (examples/schedulers/training)
    hook = [sys.executable, str(ex / "training" / "pause_hints.py"), "slurm-77", "--watts",
            "110", "--for", "15"]
    tenv = {**env, "POWERFLOW_HOST": host.url, "POWERFLOW_TOKEN": OPS}
    r = subprocess.run(hook, env=tenv, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    (p,) = listed()["slurm-77"]["pauses"]
    assert p["watts"] == 110.0 and p["end"] - p["start"] == 15.0
    r = subprocess.run(hook[:2] + ["slurm-78"] + hook[3:], env=tenv, capture_output=True,
                       text=True, timeout=60)  # a job never hinted: said, and training goes on
    assert r.returncode == 1 and "no hinted job 'slurm-78'" in r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run([str(ex / "slurm" / "epilog.sh")], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "slurm-77" not in listed()

    pod = {"metadata": {"namespace": "ml", "name": "trainer", "uid": "0123456789",
                        "annotations": {"powerflow.io/devices": "gpu2,gpu3",
                                        "powerflow.io/watts": "280",
                                        "powerflow.io/duration": "3600"}},
           "status": {"phase": "Pending"}}
    stream = [{"type": "ADDED", "object": pod}]
    for phase in ("Running", "Running", "Succeeded"):
        stream.append({"type": "MODIFIED", "object": {**pod, "status": {"phase": phase}}})
    r = subprocess.run([sys.executable, str(ex / "kubernetes" / "hint_hook.py")],
                       input="\n".join(json.dumps(e, indent=1) for e in stream), env={
                           **env, "POWERFLOW_HOST": host.url, "POWERFLOW_TOKEN": OPS},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    said = r.stderr.splitlines()
    assert [x.split(":")[0] for x in said] == ["powerflow hint start k8s-ml/trainer/01234567",
                                              "powerflow hint end k8s-ml/trainer/01234567"], said
    assert "gpu2, gpu3 at about 280 W" in said[0]
    assert not any(j.startswith("k8s-") for j in listed())
    audit = call(host, "GET", "/api/v1/audit", READ).json()
    hints = [a for a in audit if a["path"] == "/api/v1/hints"][-6:]
    # prolog, the pause, the refused pause, epilog, the pod's start and end: every one audited
    assert [(a["who"], a["status"]) for a in hints] == [("alice", 200)] * 2 + [
        ("alice", 422)] + [("alice", 200)] * 3


def test_server_sent_events_stream_live_state(host: Host) -> None:
    states = []
    with httpx.stream("GET", host.url + "/api/v1/stream", timeout=10,
                      headers={"Authorization": f"Bearer {READ}"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "state":
                states.append(json.loads(line[6:]))
                if len(states) == 3:
                    break
    assert [len(s["nodes"]) for s in states] == [4, 4, 4]
    assert states[2]["t"] > states[0]["t"]
    assert states[-1]["allocation"]["ok"] is True


def test_metrics_parse_and_a_real_prometheus_scrapes_them(host: Host, tmp_path) -> None:
    text = call(host, "GET", "/metrics", READ).text
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert {s.labels["node"] for s in fams["powerflow_node_up"].samples} == {"1", "2", "3", "4"}
    assert all(10 < s.value < 13 for s in fams["powerflow_node_output_volts"].samples)
    assert fams["powerflow_control_periods"].type == "counter"
    assert "powerflow_device_forecast_watts" in fams and "powerflow_control_cycle_seconds" in fams
    # what is measured, beside what is planned
    assert {s.labels["node"] for s in fams["powerflow_node_excluded"].samples} == {"1", "2", "3", "4"}
    assert all(s.value < 5 for s in fams["powerflow_node_telemetry_age_seconds"].samples)
    bus = {s.labels["stat"]: s.value for s in fams["powerflow_bus_measured_volts"].samples}
    assert 10 < bus["min"] <= bus["max"] < 13
    assert {s.labels["state"] for s in fams["powerflow_allocation_state"].samples} == {
        "optimal", "degraded", "safe"}
    assert "powerflow_alarm_active" in fams and "powerflow_safe_mode" in fams
    assert call(host, "GET", "/metrics", None).status_code == 401
    prom = shutil.which("prometheus")
    assert prom, "Debian's prometheus package is installed by make test"
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: powerflow\n"
        f"    authorization:\n      credentials: {READ}\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{host.port}']\n")
    proc = subprocess.Popen([prom, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Prometheus answers 503 (plain text) until its storage is open: wait for /-/ready.
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=2).status_code
                 == 200, 30, "Prometheus to be ready")

        def query():
            resp = httpx.get(f"http://127.0.0.1:{port}/api/v1/query",
                             params={"query": "powerflow_node_up"}, timeout=2)
            r = resp.json() if resp.status_code == 200 else {}
            return r.get("status") == "success" and len(r["data"]["result"]) == 4 and r
        res = wait_for(query, 30, "Prometheus to scrape the host")
        assert {x["metric"]["node"] for x in res["data"]["result"]} == {"1", "2", "3", "4"}
        up = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": "up"},
                       timeout=2).json()["data"]["result"]
        assert up and up[0]["value"][1] == "1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
