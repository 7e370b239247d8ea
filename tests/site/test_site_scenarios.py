"""`powerflow site scenario run` as a user runs it: each shipped scenario meets its
[expect] (a real Mosquitto of its own, controllers as processes, stand-ins), and the exit
status says when an expectation fails; bad scenario files are refused naming the field."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCENARIOS = sorted((ROOT / "examples" / "site-scenarios").glob("*.toml"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "powerflow.cli", "site", "scenario", "run",
                           *args], capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_each_site_scenario_meets_its_expectations(path) -> None:
    r = run(str(path), "--json")
    out = json.loads(r.stdout)
    assert r.returncode == (0 if out["passed"] else 1)
    assert out["passed"], out["expect"]
    assert out["periods"] >= 20 and out["events"]
    for k in ("breaker_violations", "priority_inversions", "lease_violations",
              "max_failover_s", "max_reaction_s", "max_reaction_periods", "stranded_w_mean"):
        assert k in out
    if path.stem == "controller-killed":
        assert 0 < out["max_failover_s"] <= 5.0
    if path.stem == "row-surge":
        # both surges (up, and back down) moved the neighbours' budgets, within two periods
        surges = [e for e in out["events"] if e["kind"] == "surge"]
        assert len(out["reactions_s"]) == len(surges) == 2
        assert all(r is not None and 0 < r <= 2 * out["period_s"] for r in out["reactions_s"])


def test_a_failed_expectation_exits_1(tmp_path) -> None:
    text = (ROOT / "examples" / "site-scenarios" / "controller-killed.toml").read_text()
    f = tmp_path / "strict.toml"
    # shortened: the failover comes within 3 s of the kill at 5 s
    f.write_text(text.replace("max_failover_s = 5.0", "max_failover_s = 0.001")
                 .replace("duration_s = 14.0", "duration_s = 9.0")
                 .replace('"../sites/two-pdus.toml"',
                          repr(str(ROOT / "examples" / "sites" / "two-pdus.toml")).replace("'", '"')))
    r = run(str(f), "--json")
    assert r.returncode == 1, r.stderr
    got = json.loads(r.stdout)["expect"]["max_failover_s"]
    # failed on what was measured (a failover did happen), not on a run cut short
    assert got["ok"] is False and got["measured"] is not None and got["measured"] > 0.001, got


@pytest.mark.parametrize(("edit", "message"), [
    (("kind = \"kill_active\"", "kind = \"explode\""), r"\[\[event\]\] #1: field 'kind'"),
    (("controllers = 2", "controllers = 1"), r"kill_active with controllers = 2"),
    (("duration_s = 14.0", "duration_s = -1"), r"\[scenario\]: field 'duration_s'"),
])
def test_bad_scenario_files_are_refused_naming_the_field(tmp_path, edit, message) -> None:
    import re
    text = (ROOT / "examples" / "site-scenarios" / "controller-killed.toml").read_text()
    f = tmp_path / "bad.toml"
    f.write_text(text.replace(*edit).replace(
        '"../sites/two-pdus.toml"', '"' + str(ROOT / "examples" / "sites" / "two-pdus.toml") + '"'))
    r = run(str(f))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert re.search(message, r.stderr), r.stderr
