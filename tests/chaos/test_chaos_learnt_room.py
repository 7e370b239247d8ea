"""Chaos: room from a learnt pause, given out, and the job back early under CPU starvation.

No hint here: the forecaster learns how long a training job's checkpoints last, and while the
job's GPUs are in a pause at that level whose return is still ahead, the caps keep them only
what they draw plus a margin; lower classes get the rest (forecast/returns.py). This
scenario's job evaluates at the checkpoints' level but for less time (6 s against 12 s), so
its first evaluation after a checkpoint was learnt comes back early, while its room is out.
On a rack whose feed binds (small-pod with its breaker at 800 W), `powerflow run --emulate
--jobs` as a user starts it, and CPU-bound processes outnumber the cores four to one from
the room's first period: the room goes within a few periods of the measured return, the
priority-1 GPUs are never capped by it, the bus stays in band and the feed's draw over its
limit is brief and bounded by the room given. The physics log (the emulated rack's own
record) is the truth; every wait is bounded.
"""

from __future__ import annotations

import os
import time
import tomllib
from pathlib import Path

import pytest

from powerflow.testing.chaos import cpu_hogs, running_host, wait_for
from tests.chaos.early_return import await_return_and_withdrawal, check_the_rack_after
from tests.conftest import ROOT

BREAKER_W = 800.0
GPUS = ("gpu0", "gpu1")  # both priority 1, under the training job
# The host's period is halved and the job's trace runs twice as fast, so the job is the
# same in periods and the test takes half the time (the forecaster needs 60 periods before
# it looks for a job's step period). Trace time: steps of 4 s from 5 s; checkpoints (12 s
# at 0.15) every 30 s of steps, and evaluations at the same level for 6 s every 75 s: the
# one at 80-86 s of trace time (40-43 s of rack time) comes after two checkpoints (the first
# the forecaster can learn is at 65 s, once it has found the job's step period)
PERIOD_S = 0.5
JOBS = """
[scenario]
name = "a learnt pause, and an early return"
rack = "tight-pod.toml"
duration_s = 600
seed = 3
trace_speed = 2.0

[[job]]
kind = "training"
devices = ["gpu0", "gpu1"]
init_s = 5
iteration_s = 4
checkpoint_every_s = 30
checkpoint_s = 12
eval_every_s = 75
eval_s = 6
eval_util = 0.15
"""


@pytest.fixture(scope="module")
def tight_rack(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    text = (ROOT / "examples" / "racks" / "small-pod.toml").read_text()
    assert "breaker_limit_w = 1300.0" in text
    folder = tmp_path_factory.mktemp("rack")
    rack = folder / "tight-pod.toml"
    rack.write_text(text.replace("breaker_limit_w = 1300.0", f"breaker_limit_w = {BREAKER_W}")
                    + f"\n[policy]\nperiod_s = {PERIOD_S}\n")
    jobs = folder / "learnt-pause.toml"
    jobs.write_text(JOBS)
    return rack, jobs


def test_room_from_a_learnt_pause_under_cpu_starvation(tight_rack: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    rack, jobs = tight_rack
    devices = tomllib.loads(rack.read_text())["device"]
    ids = [d["id"] for d in devices]
    ceiling = {d["id"]: d["p_max_w"] for d in devices}
    k = [ids.index(g) for g in GPUS]
    with running_host(tmp_path, rack, "--jobs", str(jobs), "--telemetry-ms", "250") as h:
        # the room is given out: a pause of the learnt kind, its return still ahead
        def room_out() -> dict[str, float] | None:
            d = h.api("/allocation")["devices"]
            return ({g: d[g]["room_w"] for g in GPUS}
                    if all(d[g]["room_w"] is not None for g in GPUS) else None)

        rooms = wait_for(room_out, 150, "room kept for the paused GPUs (a learnt pause)")
        t0 = time.time()
        # the room is what they draw and a margin: the GPUs are in their pause
        assert all(80.0 <= r <= 170.0 for r in rooms.values()), rooms
        handed = sum(ceiling[g] - rooms[g] for g in GPUS)  # W lower classes may take
        cores = os.cpu_count() or 2
        with cpu_hogs(4 * cores, 25.0):
            # the evaluation ends after 6 s, before the 12 s learnt: the GPUs come back
            back = await_return_and_withdrawal(h, t0, GPUS,
                                               lambda ln: all(ln.demand[i] > 250.0 for i in k))
        # early: within the evaluation's 6 periods of the room's first (its fourth low
        # one), long before the learnt 12 periods would have had them back
        assert back - t0 < 6 * PERIOD_S, back - t0
        check_the_rack_after(h, back, k, BREAKER_W, handed)
