"""The shipped scenarios, run in fast mode on the emulated rack (real node firmware on a
virtual clock against the rack physics): the outcomes the issue asks for, measured."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys

import pytest

from powerflow.model.rack import RackError
from powerflow.scenario.report import verdicts
from powerflow.scenario.runner import run
from powerflow.scenario.spec import load_scenario
from tests.conftest import ROOT

SC = ROOT / "examples" / "scenarios"


def test_a_step_late_in_wall_time_is_not_late_on_the_virtual_rack_clock(monkeypatch) -> None:
    """In fast mode the rack's clock waits for the controller, so a step the machine delays
    (another process on the CPU) is not a late step: no safe allocation, the same plan as
    an undelayed run; the step's time is still measured."""
    import time

    from powerflow.control.allocate import Allocator
    from powerflow.scenario.runner import ScenarioRun

    sc = dataclasses.replace(load_scenario(SC / "light-load.toml"), duration_s=6.0)
    plain = ScenarioRun(sc).run()
    shares = Allocator._shares
    delayed: list[int] = []

    def slow(self, *a, **kw):  # the third step's optimisation held up 0.4 s, as a
        if len(delayed) < 3:    # preempted process would be
            delayed.append(1)
            if len(delayed) == 3:
                time.sleep(0.4)
        return shares(self, *a, **kw)

    monkeypatch.setattr(Allocator, "_shares", slow)
    late = ScenarioRun(sc).run()
    assert max(late.cycle_ms) > 400.0 > max(plain.cycle_ms)  # measured ...
    assert late.fallbacks == plain.fallbacks == 0  # ... and not taken for late
    assert late.series["feed_w"] == plain.series["feed_w"]


def outcomes(name: str, baselines: bool) -> dict:
    """The run's outcomes, after checking the scenario file's own [expect] verdicts."""
    sc = load_scenario(SC / f"{name}.toml")
    out = run(sc, baselines=baselines)
    assert sc.expect, f"{name}.toml declares no [expect]"
    checks = verdicts(sc, out)
    assert all(c["passed"] is not False for c in checks), checks
    assert baselines or all(c["passed"] is not None or c["outcome"].startswith(("baseline",
                                                                                  "loss_saved"))
                            for c in checks)
    return out


def assert_safe(out: dict, safe_mode_periods: int = 0) -> None:
    assert out["feed_limit_violations"] == 0
    assert out["priority1_brownouts"] == 0
    assert out["max_reshare_periods"] <= 2
    assert out["overtemp_trips"] == 0
    assert out["safe_allocations"] == 0  # the optimiser never fell back
    assert out["safe_mode_periods"] <= safe_mode_periods, out["safe_mode_periods"]


@pytest.mark.parametrize("name", ["light-load", "converter-failure", "mixed-day"])
def test_safe_and_below_both_baselines(name: str) -> None:
    out = outcomes(name, baselines=True)
    assert_safe(out)
    assert out["energy_loss_wh"] < out["baseline_even_loss_wh"]
    assert out["energy_loss_wh"] < out["baseline_droop_loss_wh"]


@pytest.mark.parametrize("name", ["link-loss", "heat-wave"])
def test_safe_through_failures(name: str) -> None:
    # a node back from its failsafe is taken over through a few periods of safe mode
    assert_safe(outcomes(name, baselines=False), safe_mode_periods=5)


def test_a_job_starting_on_a_shed_rack_browns_nothing_out() -> None:
    """Four GPUs jump from idle at once, unannounced, on a rack shed for light load: the
    shed converters start on their own when the bus sags (standby), so no priority-1 device
    browns out (two periods did before standby, the bus at 5.2 V). The run ends a minute
    after the start (at 180 s) rather than at 600 s: the start is what is judged."""
    sc = load_scenario(SC / "job-start.toml")
    out = run(dataclasses.replace(sc, duration_s=180.0), baselines=False)
    assert_safe(out)
    assert out["standby_wakes"] >= 1  # it was standby that met the start


def test_battery_holds_the_feed_under_its_limit_where_the_baselines_do_not() -> None:
    out = outcomes("load-spike", baselines=True)
    assert_safe(out)
    # the scenario is a real test: without the host the feed limit is exceeded
    assert out["baseline_droop_feed_limit_violations"] > 0


def test_cli_scenario_run_json(tmp_path) -> None:
    r = subprocess.run([sys.executable, "-m", "powerflow.cli", "scenario", "run",
                        str(SC / "light-load.toml"), "--no-baselines", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr  # the expectation on the baselines is skipped
    out = json.loads(r.stdout)
    assert [c["passed"] for c in out["expectations"]] == [True, True, True, None]
    for key in ("feed_limit_violations", "priority1_brownouts", "max_reshare_periods",
                "overtemp_trips", "energy_loss_wh", "cycle_ms_p50", "cycle_ms_p99"):
        assert key in out


_JOB = '[scenario]\nrack = "r.toml"\nduration_s = 10\n[[job]]\n'


@pytest.mark.parametrize("text,msg", [
    ('[scenario]\nrack = "r.toml"\nduration_s = 10\n[[event]]\nat_s = 1\nkind = "meteor"\n',
     "[[event]] #1: field 'kind'"),
    ('[scenario]\nrack = "r.toml"\nduration_s = 10\n[[event]]\nat_s = 1\n'
     'kind = "converter-failure"\nnode = 9\n', "field 'node'"),
    ('[scenario]\nrack = "r.toml"\nduration_s = 10\n[[event]]\nat_s = 1\n'
     'kind = "converter_fail"\nnode = 1\n', "now spelled 'converter-failure'"),
    ('[scenario]\nrack = "r.toml"\nduration_s = 10\n[[event]]\nat_s = 1\n'
     'kind = "node-kill"\nnode = 1\n', "not in fast mode"),
    ('[scenario]\nrack = "r.toml"\nduration_s = 10\n[[event]]\nat_s = 1\n'
     'kind = "load-spike"\ndevice = "gpu0"\nextra_w = 5\n', "now spelled 'watts'"),
    ('[scenario]\nrack = "r.toml"\nduration_s = 10\n[[event]]\nat_s = 11\nkind = "ambient"\n'
     'celsius = 30\n', "field 'at_s'"),
    ('[scenario]\nrack = "r.toml"\nduration_s = 10\n[policy]\nreserve_frac = 2\n',
     "field 'reserve_frac'"),
    ('[scenario]\nrack = "missing.toml"\nduration_s = 10\n', "missing.toml"),
    (_JOB + 'kind = "mining"\ndevices = ["gpu0"]\n', "[[job]] #1: field 'kind'"),
    (_JOB + 'kind = "training"\ndevices = ["gpu9"]\n', "no device 'gpu9'"),
    (_JOB + 'kind = "training"\ndevices = []\n', "field 'devices'"),
    (_JOB + 'kind = "training"\ndevices = ["gpu0"]\niteration = 5\n',
     "field 'iteration': not a parameter of a training job"),
    (_JOB + 'kind = "training"\ndevices = ["gpu0"]\nbusy_util = 1.5\n', "field 'busy_util'"),
    (_JOB + 'kind = "training"\ndevices = ["gpu0"]\niteration_s = "7"\n',
     "field 'iteration_s': expected a finite number"),
    (_JOB + 'kind = "training"\ndevices = ["gpu0"]\n[[job]]\nkind = "batch"\n'
     'devices = ["gpu0"]\n', "[[job]] #2: field 'devices': 'gpu0' is already under [[job]] #1"),
])
def test_bad_scenario_files_are_refused_with_the_place(tmp_path, text, msg) -> None:
    (tmp_path / "r.toml").write_text((ROOT / "examples" / "racks" / "small.toml").read_text())
    p = tmp_path / "s.toml"
    p.write_text(text)
    with pytest.raises(RackError) as e:
        load_scenario(p)
    assert msg in str(e.value)
    r = subprocess.run([sys.executable, "-m", "powerflow.cli", "scenario", "run", str(p)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and msg in r.stderr


SHORT = """
[scenario]
name = "short failure"
rack = "../racks/small.toml"
duration_s = 30
seed = 3
[[event]]
at_s = 10
kind = "converter-failure"
node = 2
[expect]
feed_limit_violations = 0
max_reshare_periods = "<= 3"
loss_saved_vs_droop_pct = ">= 50"
"""


def test_expectations_verdicts_a_report_and_the_time_series(tmp_path) -> None:
    scen = SC / "short-test.toml"  # beside the examples: its rack path is relative
    scen.write_text(SHORT)
    try:
        r = subprocess.run([sys.executable, "-m", "powerflow.cli", "scenario", "run", str(scen),
                            "--report", str(tmp_path / "r.html"), "--csv", str(tmp_path / "r.csv"),
                            "--json"], capture_output=True, text=True, timeout=300)
    finally:
        scen.unlink()
    assert r.returncode == 1, r.stderr  # one expectation cannot hold: 50 % saved
    out = json.loads(r.stdout)
    assert [(c["expectation"], c["passed"]) for c in out["expectations"]] == [
        ("feed_limit_violations <= 0", True), ("max_reshare_periods <= 3", True),
        ("loss_saved_vs_droop_pct >= 50", False)]
    assert out["expectations"][2]["value"] == out["loss_saved_vs_droop_pct"]
    # progress went to stderr, never into the JSON
    # (the three runs go at once, one process each: whichever ends last says all are done)
    assert re.search(r"^(controlled|even|droop): 30 of 30 s of rack time \(3 of 3 runs done\)",
                     r.stderr, re.M), r.stderr
    # the time series: 3 runs x 30 periods; integrating it gives the meters' energies
    import csv

    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert len(rows) == 90 and {row["run"] for row in rows} == {"controlled", "even", "droop"}
    ctl = [row for row in rows if row["run"] == "controlled"]
    lost = sum(float(row["loss_w"]) for row in ctl) / 3600.0  # 1 s periods
    assert lost == pytest.approx(out["energy_loss_wh"], rel=1e-3)
    even = sum(float(row["loss_w"]) for row in rows if row["run"] == "even") / 3600.0
    assert even == pytest.approx(out["baseline_even_loss_wh"], rel=1e-3)
    assert [row["node2.on"] for row in ctl[8:12]] == ["1", "1", "0", "0"]  # failed at 10 s
    assert ctl[0]["gpu0.forecast_w"] and not rows[-1]["gpu0.forecast_w"]  # none in baselines
    # the report: self-contained (nothing to fetch), four plots, the verdicts
    page = (tmp_path / "r.html").read_text()
    assert page.count("<svg") >= 4 and "1 expectation(s) FAILED" in page
    assert "<script" not in page and 'src="' not in page
    assert not [u for u in re.findall(r'href="([^"]+)"', page)
                if not u.startswith(("#", "data:"))]  # inline images are data: URIs
    assert "FAIL</td><td>loss_saved_vs_droop_pct &gt;= 50" in page


@pytest.mark.parametrize("expect,msg", [
    ("meteors = 0\n", "[expect]: field 'meteors': not an outcome"),
    ('feed_limit_violations = "about 0"\n', "expected a number or a string like"),
    ("feed_limit_violations = true\n", "expected a number or a string like"),
])
def test_bad_expectations_are_refused(tmp_path, expect: str, msg: str) -> None:
    (tmp_path / "r.toml").write_text((ROOT / "examples" / "racks" / "small.toml").read_text())
    p = tmp_path / "s.toml"
    p.write_text('[scenario]\nrack = "r.toml"\nduration_s = 10\n[expect]\n' + expect)
    with pytest.raises(RackError, match=re.escape(msg)):
        load_scenario(p)


@pytest.mark.parametrize("arg,msg", [
    ("bogus=1", "unknown field 'bogus'"), ("reserve_frac", "expected FIELD=VALUE"),
    ("period_s=2", "period_s in [scenario]"), ('node_output_w={"99": 0}', "no node 99"),
    ("smoothing_up_w_per_s=-5", "smoothing_up_w_per_s")])
def test_policy_overrides_of_a_scenario_are_checked_before_it_runs(arg: str, msg: str) -> None:
    r = subprocess.run([sys.executable, "-m", "powerflow.cli", "scenario", "run",
                        str(SC / "light-load.toml"), "--policy", arg], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr
