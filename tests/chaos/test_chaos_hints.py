"""Chaos: a pause hint that proves wrong while its room is given out, under CPU starvation.

A training loop announces a pause (a checkpoint) far longer than the one its GPUs take; the
host gives the room the paused GPUs leave to lower classes, then the GPUs come back early
while CPU-bound processes outnumber the cores four to one. On a rack whose feed binds
(small-pod with its breaker at 800 W: room for the priority-1 GPUs, not for all),
`powerflow run --emulate` as a user starts it: the room is withdrawn within a few periods of
the measured return, the priority-1 GPU is never capped by it, the bus stays in band and the
feed's draw over its limit is brief. The physics
log (the emulated rack's own record) is the truth; every wait is bounded.

The rack's training trace (emulator/physics.py) checkpoints in its first 20 s: the GPUs draw
135 W, then 289 W. The hint says the checkpoint lasts 120 s.
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
GPU0, GPU2 = "gpu0", "gpu2"  # priority 1 and 2, both on the training trace


@pytest.fixture(scope="module")
def tight_rack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    text = (ROOT / "examples" / "racks" / "small-pod.toml").read_text()
    assert "breaker_limit_w = 1300.0" in text
    out = tmp_path_factory.mktemp("rack") / "tight-pod.toml"
    out.write_text(text.replace("breaker_limit_w = 1300.0", f"breaker_limit_w = {BREAKER_W}"))
    return out


def test_a_wrong_pause_hint_under_cpu_starvation(tight_rack: Path, tmp_path: Path) -> None:
    with running_host(tmp_path, tight_rack) as h:
        k0 = [d["id"] for d in tomllib.loads(tight_rack.read_text())["device"]].index(GPU0)
        # the checkpoint is on: both GPUs measured at its 135 W
        wait_for(lambda: all(h.api("/allocation")["devices"][d]["measured_w"] < 150
                             for d in (GPU0, GPU2)), 10, "the GPUs in their checkpoint")
        start = {"kind": "start", "job": "ck", "devices": [GPU0, GPU2], "in_s": 0.5,
                 "watts": 289.0, "duration_s": 600.0}
        pause = {"kind": "pause", "job": "ck", "in_s": 1.0, "duration_s": 120.0,
                 "watts": 135.0}
        for body in (start, pause):
            r = h.send("POST", "/hints", body)
            assert r.status_code == 200, r.text
        # the room is given out while measurement agrees with the hint
        given = wait_for(lambda: h.api("/allocation")["devices"][GPU0]["room_w"], 10,
                         "room kept for the paused GPU")
        assert 135.0 <= given <= 160.0, given
        t0 = time.time()
        cores = os.cpu_count() or 2
        with cpu_hogs(4 * cores, 25.0):
            # the GPUs come back (the trace's checkpoint ends at 20 s of rack time) long
            # before the hinted end: the room goes within a few of the host's periods
            back = await_return_and_withdrawal(h, t0, (GPU0, GPU2),
                                               lambda ln: ln.demand[k0] > 250.0)
        # the priority-1 GPU is never capped under its demand: room is never a cap on it
        check_the_rack_after(h, back, [k0], BREAKER_W, given)
