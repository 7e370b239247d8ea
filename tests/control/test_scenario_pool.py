"""A scenario's runs in processes of their own give what they give one after another."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from powerflow.scenario.pool import RunSpec, run_all
from powerflow.scenario.runner import arm_outcomes
from powerflow.scenario.spec import load_scenario
from tests.conftest import ROOT


def test_runs_in_processes_equal_runs_in_turn() -> None:
    sc = load_scenario(ROOT / "examples" / "scenarios" / "training-jobs.toml")
    sc = dataclasses.replace(sc, duration_s=25.0)
    specs = [RunSpec(sc, "controlled", "predictive", label="predictive"),
             RunSpec(sc, "droop"), RunSpec(sc, "controlled", "oracle", label="oracle")]
    seen: dict[str, list[int]] = {}
    par = run_all(specs, lambda run, done, total: seen.setdefault(run, []).append(done),
                  workers=2)
    seq = run_all(specs, workers=1)
    for a, b, s in zip(par, seq, specs, strict=True):
        assert a.mode == b.mode == s.mode
        assert arm_outcomes(a, sc) == arm_outcomes(b, sc)
        assert a.series["feed_w"] == b.series["feed_w"]
        np.testing.assert_array_equal(a.meter.capped_j, b.meter.capped_j)
    # every run's progress reached this process, up to its last period
    assert set(seen) == {"predictive", "droop", "oracle"}
    assert all(v[-1] == 25 and v == sorted(v) for v in seen.values()), seen


def test_a_failing_run_raises_here_at_once() -> None:
    """A run that fails, behind one that would take minutes: raised here without waiting
    for the other, whose process is terminated."""
    sc = load_scenario(ROOT / "examples" / "scenarios" / "mixed-day.toml")
    seen: list[int] = []
    with pytest.raises(ValueError):
        run_all([RunSpec(sc, "droop"), RunSpec(sc, "controlled", "no-such-arm")],
                lambda run, done, total: seen.append(done), workers=2)
    assert not seen or max(seen) < 720, seen  # raised before the droop run's end


def _children(pid: int) -> set[int]:
    """Processes whose parent is `pid` (from /proc)."""
    out = set()
    for st in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = st.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            out.add(int(st.parent.name))
    return out


def _interruptible() -> None:
    """In the child before it runs: SIGINT as a terminal's command has it. A shell starts a
    background job (a test suite run with `&`) with SIGINT ignored, which its children
    inherit, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_an_interrupted_scenario_says_so_and_leaves_no_process() -> None:
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) during a scenario's
    runs: one line, exit status 130, no traceback, and no worker process left running."""
    proc = subprocess.Popen([sys.executable, "-m", "powerflow.cli", "scenario", "run",
                             str(ROOT / "examples" / "scenarios" / "mixed-day.toml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_interruptible)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # the first progress line: the runs are under way
        assert "of 720 s of rack time" in line, line
        workers = _children(proc.pid)
        assert len(workers) >= 3  # the three runs, each in a process of its own
        os.killpg(proc.pid, signal.SIGINT)
        rest = proc.stderr.read()
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "Traceback" not in rest and rest.strip().endswith("powerflow: interrupted"), rest
    # the workers are terminated, and the pool's resource tracker ends once its parent has
    # gone: each gone (or a zombie of init's) within 10 s
    deadline = time.monotonic() + 10.0
    while (left := [w for w in workers if _running(w)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, left


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
