"""The structured workloads of scenarios (`[[job]]`): the structure each generator promises,
seen in the demand the rack physics then asks."""

from __future__ import annotations

import numpy as np

from powerflow.emulator.physics import RackPhysics
from powerflow.emulator.workloads import Job, Workload
from powerflow.model.rack import load_rack
from powerflow.scenario.spec import load_scenario
from tests.conftest import ROOT

RACK = ROOT / "examples" / "racks" / "small-pod.toml"


def _series(wl: Workload, t: np.ndarray) -> np.ndarray:
    return np.array([wl.utilisation(float(x)) for x in t])


def test_a_training_job_moves_together_with_its_steps_checkpoints_and_evaluations() -> None:
    job = Job("training", (0, 2), {"start_s": 100.0, "duration_s": 1000.0, "init_s": 20.0,
                                   "iteration_s": 7.0, "dip_frac": 0.25,
                                   "checkpoint_every_s": 300.0, "checkpoint_s": 20.0,
                                   "eval_every_s": 400.0, "eval_s": 30.0})
    wl = Workload(4, (job,), seed=3)
    t = np.arange(0.0, 1200.0, 0.25)
    u = _series(wl, t)
    assert np.isnan(u[:, [1, 3]]).all()  # devices under no job keep their trace
    a, b = u[:, 0], u[:, 2]
    assert np.abs(a - b).max() <= 0.02  # one job: its devices move together (jitter only)
    s = t - 120.0  # time since the first step
    assert (a[t < 100] < 0.1).all() and (a[t >= 1100] < 0.1).all()  # idle before and after
    assert np.allclose(a[(t >= 100) & (t < 120)], 0.3, atol=0.011)  # start-up
    run = (s >= 0) & (t < 1100)
    ck = run & (s >= 300) & (s % 300 < 20)
    ev = run & ~ck & (s >= 400) & (s % 400 < 30)
    steps = run & ~ck & ~ev
    assert np.allclose(a[ck], 0.15, atol=0.011) and np.allclose(a[ev], 0.55, atol=0.011)
    # steps start at the first step and again, with their compute, at each return from a
    # pause (the pauses' ends, from the list a framework's hooks announce)
    ends = np.array([p1 for _, p1, _ in Workload.training_pauses(job, 1200.0)]) - 120.0
    back = np.array([max([0.0] + [e for e in ends if e <= x]) for x in s])
    dip = steps & ((s - back) % 7.0 >= 5.25)
    assert np.allclose(a[dip], 0.35, atol=0.011) and np.allclose(a[steps & ~dip], 0.95, atol=0.011)
    after = steps & (s - back < 5.0) & (back > 0)  # the first 5 s after each return: compute
    assert after.any() and np.allclose(a[after], 0.95, atol=0.011)
    # the step is a 7 s period: all GPUs ramp at once every step
    assert 0.2 < dip.sum() / steps.sum() < 0.3
    # its pauses, as a framework's hooks would announce them, are the ones it plays
    inside = np.zeros(len(t), bool)
    for p0, p1, pu in Workload.training_pauses(job, 1200.0):
        sel = (t >= p0) & (t < p1)
        inside |= sel
        assert sel.any() and np.allclose(a[sel], pu, atol=0.011)
    assert (inside == (ck | ev)).all()
    assert Workload.training_pauses(job, 500.0) == [(420.0, 440.0, 0.15)]


def test_inference_follows_its_day_with_bursts_that_hit_every_replica() -> None:
    job = Job("inference", (0, 1, 2), {"day_s": 1000.0, "peak_hour": 12.0, "peak_util": 0.8,
                                       "trough_util": 0.2, "burst_rate_per_s": 0.05,
                                       "burst_s": 5.0, "burst_util": 0.3, "noise": 0.0})
    wl = Workload(3, (job,), seed=1)
    t = np.arange(0.0, 1000.0, 1.0)
    u = _series(wl, t)
    assert (u[:, 0] == u[:, 1]).all() and (u[:, 1] == u[:, 2]).all()  # one balancer
    base = 0.2 + 0.6 * 0.5 * (1 + np.cos(2 * np.pi * (t / 1000 * 24 - 12) / 24))
    extra = u[:, 0] - np.minimum(base, 1.0)
    burst = extra > 0.15
    assert np.allclose(extra[~burst], 0.0, atol=1e-9)  # the curve itself between bursts
    assert 0.03 < burst.mean() < 0.5  # bursts happen, mostly near the peak
    assert burst[400:600].mean() > burst[:100].mean()


def test_batch_jobs_arrive_and_leave_on_each_device_on_their_own() -> None:
    job = Job("batch", (0, 1), {"mean_gap_s": 50.0, "mean_duration_s": 100.0, "noise": 0.0})
    wl = Workload(2, (job,), seed=4)
    u = _series(wl, np.arange(0.0, 20000.0, 1.0))
    busy = u > 0.5
    assert 0.55 < busy[:, 0].mean() < 0.8  # ~ 100 / (50 + 100)
    assert (busy[:, 0] != busy[:, 1]).mean() > 0.2  # independent devices
    starts = np.count_nonzero(np.diff(busy[:, 0].astype(int)) == 1)
    assert 80 < starts < 180  # ~ 20000 / 150 jobs
    assert Workload(2, (job,), seed=4).utilisation(12345.0).tolist() == u[12345].tolist()


def test_the_shipped_structured_scenarios_drive_the_physics_by_their_jobs() -> None:
    for name in ("training-jobs", "inference-day"):
        sc = load_scenario(ROOT / "examples" / "scenarios" / f"{name}.toml")
        assert sc.jobs and {i for j in sc.jobs for i in j.devices} == set(range(8))
        ph = RackPhysics(load_rack(RACK), sc.seed)
        ph.workload = Workload(len(sc.rack.devices), sc.jobs, sc.seed)
        expect = np.clip(ph.workload.utilisation(400.0), 0, 1)
        assert np.array_equal(ph.utilisations(400.0), expect)


def test_the_alibaba_trace_is_replayed_interpolated_and_offset_per_device() -> None:
    from powerflow.emulator.workloads import alibaba_series

    s = alibaba_series()
    assert len(s) > 60000 and 0.0 <= s.min() and s.max() <= 1.0
    wl = Workload(2, (Job("alibaba", (0, 1), {"start_row": 3.0, "device_offset_rows": 10.0}),))
    assert wl.utilisation(0.0).tolist() == [s[3], s[13]]
    assert np.allclose(wl.utilisation(25.0), [s[5] + 0.5 * (s[6] - s[5]),
                                              s[15] + 0.5 * (s[16] - s[15])])


def test_what_was_known_earlier_leaves_out_bursts_and_jobs_not_yet_begun() -> None:
    """`begun_by`: an inference burst or a batch job that begins later is left out of what
    was known then (the causal oracle of bench/bench_causal_oracle.py); whatever had begun is
    as the full workload has it."""
    inf = Job("inference", (0, 1), {"day_s": 600.0, "peak_hour": 12.0, "peak_util": 0.8,
                                    "trough_util": 0.2, "burst_rate_per_s": 0.2,
                                    "burst_s": 5.0, "burst_util": 0.3, "noise": 0.0})
    bat = Job("batch", (2, 3), {"mean_gap_s": 30.0, "mean_duration_s": 40.0,
                                "idle_util": 0.1, "job_util": 0.9, "noise": 0.0}, index=1)
    wl = Workload(4, (inf, bat), seed=5)
    left_out = {"inference": 0, "batch": 0}
    for now in np.arange(0.0, 600.0, 3.0):
        for j, gen in ((inf, wl._gen_inference), (bat, wl._gen_batch)):
            idx = np.array(j.devices, np.int64)
            for t in (now - 2.0, now, now + 1.0, now + 6.0):
                full, known = gen(j, t, idx), gen(j, t, idx, begun_by=now)
                if t <= now:
                    np.testing.assert_array_equal(known, full)
                else:
                    assert np.all(known <= full)
                    left_out[j.kind] += int(np.any(known < full))
    assert left_out["inference"] > 0 and left_out["batch"] > 0, left_out
