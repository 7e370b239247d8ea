"""The SQLite telemetry store: acknowledged rows, queries by node/metric/time, retention."""

from __future__ import annotations

import sqlite3

import pytest

from powerflow.store import TelemetryStore


def test_rows_are_acked_only_when_committed_and_queryable(tmp_path) -> None:
    s = TelemetryStore(tmp_path / "t.db")
    for k in range(100):
        s.add(1, 1000.0 + k, {"READ_VOUT": 12.0 + k / 1000, "READ_IOUT": 5.0})
        s.add(2, 1000.0 + k, {"READ_VOUT": 11.0})
    assert s.acked == 0
    assert s.flush() == 300 and s.acked == 300
    # another connection (as after a crash) sees every acknowledged row
    with sqlite3.connect(tmp_path / "t.db") as db:
        assert db.execute("SELECT COUNT(*) FROM telemetry").fetchone()[0] == 300
    pts = s.query(1, "READ_VOUT", 1010.0, 1019.0)
    assert [p.t for p in pts] == [1010.0 + k for k in range(10)]
    assert pts[0].value == pytest.approx(12.010)
    assert s.query(2, "READ_IOUT", 0, 2000) == []
    assert sorted(s.metrics(1)) == ["READ_IOUT", "READ_VOUT"]


def test_retention_folds_old_rows_into_minute_averages(tmp_path) -> None:
    s = TelemetryStore(tmp_path / "t.db", retention_s=600, rollup_retention_s=86400)
    base = 1_000_040.0  # 20 s into a minute: the first 40 samples share a bucket
    for k in range(120):
        s.add(1, base + k, {"READ_IOUT": float(k)})
    s.flush()
    folded, dropped = s.maintain(now=base + 120 + 600)
    assert folded == 120 and dropped == 0 and s.count() == 0
    pts = s.query(1, "READ_IOUT", 0, base + 1000)
    assert len(pts) == 3  # three minute buckets
    assert pts[0].value == pytest.approx(sum(range(40)) / 40)
    # folding again later merges into the same buckets without losing the averages
    s.add(1, base + 1.5, {"READ_IOUT": 1000.0})
    s.flush()
    s.maintain(now=base + 120 + 600)
    merged = s.query(1, "READ_IOUT", 0, base + 1000)[0]
    assert merged.value == pytest.approx((sum(range(40)) + 1000.0) / 41)
    assert s.maintain(now=base + 2 * 86400)[1] == 3  # old averages dropped too


def test_series_keep_periods_fold_into_minutes_and_average_into_buckets(tmp_path) -> None:
    s = TelemetryStore(tmp_path / "t.db", retention_s=600, rollup_retention_s=86400)
    t0 = 60_000.0
    for k in range(1200):  # 20 min of 1 s periods: demand ramps 100 -> 220 W
        s.add_series("gpu0", t0 + k, {"measured_w": 100.0 + k / 10, "p95_w": 250.0})
        s.add_series("rack", t0 + k, {"bus_vmin": 12.2})
    s.flush()
    step, raw = s.query_series(t0, t0 + 1199, max_points=5000)
    assert step == 0 and len(raw["gpu0"]["measured_w"]) == 1200
    assert raw["rack"]["bus_vmin"][0] == (t0, 12.2)
    s.maintain(now=t0 + 1200)  # rows older than 10 min become minute averages
    step, mixed = s.query_series(t0, t0 + 1199, max_points=5000)
    pts = mixed["gpu0"]["measured_w"]
    assert len(pts) == 10 + 600  # ten minutes of averages, then the raw periods
    assert pts[0] == (t0, pytest.approx(100.0 + 59 / 20))  # the mean of its minute
    assert pts[10] == (t0 + 600, pytest.approx(160.0))
    # at most max_points, each the mean of its bucket; the ramp's mean is kept
    step, few = s.query_series(t0, t0 + 1200, max_points=20)
    assert step == pytest.approx(60.0) and len(few["gpu0"]["measured_w"]) == 20
    means = [v for _, v in few["gpu0"]["measured_w"]]
    assert means == sorted(means) and sum(means) / 20 == pytest.approx(159.95, abs=0.1)
