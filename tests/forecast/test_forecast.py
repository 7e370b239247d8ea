"""Online forecasting: no look-ahead, the selector, calibrated bounds, the eval command."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from powerflow.forecast.evaluate import evaluate
from powerflow.forecast.online import OnlineForecaster
from tests.conftest import SHARED


def series(n: int = 1500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A load that follows its utilisation signal 20 periods later (as a job's power follows
    its scheduler's queue), with noise: the next 20 periods are partly known now."""
    rng = np.random.default_rng(seed)
    util = np.repeat(rng.uniform(0, 100, n // 50 + 1), 50)[:n]
    lagged = np.r_[np.full(20, util[0]), util[:-20]]
    y = 100 + 5 * lagged + rng.normal(0, 8, n)
    return y, util[:, None]


def test_forecasts_never_see_the_future() -> None:
    y, x = series(400)
    a, b = OnlineForecaster((1, 10, 60), 1), OnlineForecaster((1, 10, 60), 1)
    y2 = y.copy()
    y2[300:] += 1000.0  # a different future
    for i in range(300):
        fa, fb = a.step(y[i], x[i]), b.step(y2[i], x[i])
        assert fa.mean == fb.mean and fa.upper == fb.upper


def test_learning_beats_persistence_where_there_is_something_to_learn() -> None:
    y, x = series()
    r = evaluate(y, x, (1, 10, 60))
    h = "10"  # within the 20 periods the utilisation announces
    assert r[h]["ridge"]["mae"] < 0.8 * r[h]["persistence"]["mae"], r[h]
    assert r[h]["selected"]["mae"] < 0.85 * r[h]["persistence"]["mae"], r[h]
    # where persistence is hard to beat, the selector does not lose much to it
    assert r["1"]["selected"]["mae"] <= 1.05 * r["1"]["persistence"]["mae"]


def test_p95_bounds_are_calibrated_online() -> None:
    y, x = series(3000, seed=3)
    r = evaluate(y, x, (1, 10))
    for h in ("1", "10"):
        assert 0.92 <= r[h]["selected"]["p95_coverage"] <= 0.98, r[h]["selected"]


def test_stale_telemetry_falls_back_to_history_with_a_wider_band() -> None:
    y, x = series(600)
    f = OnlineForecaster((10,), 1)
    for i in range(599):
        fresh = f.step(y[i], x[i])
    stale = f.step(y[599], x[599], stale=True)
    assert stale.model[10] == "persistence"
    assert stale.upper[10] - stale.mean[10] > fresh.upper[10] - fresh.mean[10]


def test_eval_command_on_the_gpu_trace() -> None:
    trace = SHARED / "data" / "h100_power_trace_seed0.csv.gz"
    if not trace.exists():
        pytest.skip("the shared GPU trace is not beside this checkout")
    r = subprocess.run([sys.executable, "-m", "powerflow.cli", "forecast", "eval", str(trace),
                        "--time-column", "t_unix", "--value-column", "power_usage_w", "--exog",
                        "gpu_util_pct,mem_util_pct", "--horizons", "1,60", "--json"],
                       capture_output=True, text=True, timeout=120)
    out = json.loads(r.stdout)
    assert set(out["horizons"]) == {"1", "60"}
    for h in out["horizons"].values():
        assert {"persistence", "ridge", "selected"} <= set(h)
        for m in h.values():
            assert {"mae", "mase", "p95_coverage", "p95_margin"} <= set(m)


@pytest.mark.parametrize(("args", "message"), [
    (["--time-column", "t", "--value-column", "v"], "no column 't'"),
    (["--time-column", "t_unix", "--value-column", "power_usage_w", "--resample", "fast"],
     "--resample is like"),
])
def test_eval_errors(tmp_path, args, message) -> None:
    p = tmp_path / "trace.csv"
    p.write_text("t_unix,power_usage_w\n" + "".join(f"{i},{100 + i % 7}\n" for i in range(400)))
    r = subprocess.run([sys.executable, "-m", "powerflow.cli", "forecast", "eval", str(p), *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and message in r.stderr


def test_season_lags_find_the_period_and_only_a_period() -> None:
    """The period of noisy steps is found (not a multiple of it); white noise, a random walk,
    a slow trend and a flat series have none."""
    from powerflow.forecast.models import SEASON_WINDOW, season_lags, seasonal_forecast

    rng = np.random.default_rng(2)
    t = np.arange(SEASON_WINDOW)
    rows = [np.where(t % p < 0.7 * p, 1.0, 0.3) + rng.normal(0, 0.05, len(t)) for p in (5, 7, 23)]
    rows += [rng.normal(0, 1, len(t)), np.cumsum(rng.normal(0, 1, len(t))), t / 50.0,
             np.full(len(t), 3.0)]
    assert list(season_lags(np.array(rows))) == [5, 7, 23, 0, 0, 0, 0]
    # on an exactly periodic series the seasonal forecast is exact at every horizon
    clean = np.array([np.where(t % 7 < 5, 280.0, 150.0)])
    lags = season_lags(clean)
    for h in (1, 3, 10, 60):
        assert seasonal_forecast(clean, lags, h)[0] == (280.0 if (len(t) - 1 + h) % 7 < 5
                                                        else 150.0)


def test_seasonal_forecast_counts_the_phase_from_the_return() -> None:
    """A training loop's steps start afresh when it comes back from a checkpoint: after a
    return the seasonal forecast reads the run before at the phase counted from its start,
    then its own run; exact on every target of the run, where reading whole periods back
    across the pause (the phase the steps had before it) is not."""
    from powerflow.forecast.models import seasonal_forecast
    from powerflow.forecast.runs import StepRuns

    def steps(k: int) -> float:  # a 7-period step: 5 periods of compute, a 2-period dip
        return 280.0 if k % 7 < 5 else 150.0

    runs = [(0, 100), (115, 200), (212, 300)]  # [start, end) of each run; 40 W between
    y = np.full(300, 40.0)
    for a, b in runs:
        y[a:b] = [steps(k - a) for k in range(a, b)]
    tracker, lags = StepRuns(1), np.array([7])
    exact = blind_wrong = in_pause = 0
    for i in range(300):
        tracker.update(y[i:i + 1])
        spans = tracker.spans()
        arr = y[None, max(0, i + 1 - 360):i + 1]
        run = next(((a, b) for a, b in runs if a <= i < b), None)
        if run is None:
            in_pause += i >= 104 and spans.run[0] == 0  # 4 periods into a pause: a pause
            continue
        assert spans.run[0] == i - run[0] + 1
        for h in (1, 3, 10, 30):
            if run[0] > 0 and i + h < run[1]:
                want = steps(i + h - run[0])
                assert seasonal_forecast(arr, lags, h, spans)[0] == want, (i, h)
                exact += 1
                blind_wrong += seasonal_forecast(arr, lags, h)[0] != want
    assert exact > 500 and blind_wrong > 50 and in_pause > 10


def test_a_job_starting_on_a_calm_device_widens_its_band_at_once() -> None:
    """A device that idled for the whole error window starts a training job: from its first
    step's dip its P95 band covers the steps' edges (130 W), where a band over the window's
    calm errors stays at the idle noise's until misses move its level (three weeks of steps
    later; measured: 2 W for the first 20 periods, 6 misses in them)."""
    from powerflow.forecast.batch import BatchForecaster

    rng = np.random.default_rng(4)
    idle = 50.0 + rng.normal(0, 1.0, 400)
    k = np.arange(120)
    steps = np.where(k % 7 < 5, 280.0, 150.0) + rng.normal(0, 1.0, len(k))
    y = np.concatenate([idle, steps])
    f = BatchForecaster(1, (1,), n_exog=0)
    misses, bands, upper = 0, [], np.inf
    for i, v in enumerate(y):
        if 400 < i <= 420:  # the forecast made a period ago against what came
            misses += v > upper
        means, uppers, _ = f.step(np.array([v]))
        upper = float(uppers[1][0])
        bands.append(upper - float(means[1][0]))
    assert max(bands[300:400]) < 10  # calm: the idle noise's band
    assert min(bands[407:420]) > 130, bands[400:420]  # from the first dip on, the edges'
    assert misses <= 3, misses
