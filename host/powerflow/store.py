"""Telemetry history in SQLite (WAL).

Every telemetry frame becomes one row per metric: (node, metric, t, value), t in
Unix seconds. Rows are written in batches; `acked` counts the rows whose
transaction has committed, which survive the host process being killed (WAL
with synchronous=NORMAL loses nothing on a process crash, only possibly on a
power cut of the machine). Raw rows older than `retention_s` are folded into
one-minute averages (kept `rollup_retention_s`) and deleted.

Beside the nodes' telemetry, `series` keeps what the control loop measured and predicted each
period (per device: measured, forecast, P95 and cap, W; the rack's measured bus, V) with the
same retention and roll-ups, so a dashboard opened late still shows the last minutes, hours
or days.

The audit log keeps every write to the API for `audit_retention_s` and at most
`audit_max_rows` entries; entries of callers that did not authenticate have their own,
smaller budget (`audit_max_anonymous`), so a flood of refused requests can neither fill
the disk nor push the operators' own entries out. Bodies are stored as data, capped at
`AUDIT_BODY_CHARS`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS telemetry (node INTEGER NOT NULL, metric TEXT NOT NULL,
                                      t REAL NOT NULL, value REAL NOT NULL);
CREATE INDEX IF NOT EXISTS telemetry_nmt ON telemetry (node, metric, t);
CREATE TABLE IF NOT EXISTS telemetry_1m (node INTEGER NOT NULL, metric TEXT NOT NULL,
                                         t REAL NOT NULL, value REAL NOT NULL,
                                         vmin REAL NOT NULL, vmax REAL NOT NULL, n INTEGER NOT NULL,
                                         PRIMARY KEY (node, metric, t));
CREATE TABLE IF NOT EXISTS series (source TEXT NOT NULL, metric TEXT NOT NULL,
                                   t REAL NOT NULL, value REAL NOT NULL);
CREATE INDEX IF NOT EXISTS series_t ON series (t);
CREATE TABLE IF NOT EXISTS series_1m (source TEXT NOT NULL, metric TEXT NOT NULL,
                                      t REAL NOT NULL, value REAL NOT NULL,
                                      vmin REAL NOT NULL, vmax REAL NOT NULL, n INTEGER NOT NULL,
                                      PRIMARY KEY (source, metric, t));
CREATE TABLE IF NOT EXISTS events (t REAL NOT NULL, node INTEGER, kind TEXT NOT NULL,
                                   detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (t REAL NOT NULL, who TEXT NOT NULL, role TEXT NOT NULL,
                                  method TEXT NOT NULL, path TEXT NOT NULL, body TEXT NOT NULL,
                                  status INTEGER NOT NULL);
"""


AUDIT_BODY_CHARS = 2000
ANONYMOUS = "-"  # the `who` of an entry whose caller did not authenticate


@dataclass(frozen=True)
class Point:
    t: float
    value: float


class TelemetryStore:
    def __init__(self, path: str | Path, retention_s: float = 3600.0,
                 rollup_retention_s: float = 7 * 86400.0,
                 audit_retention_s: float = 90 * 86400.0, audit_max_rows: int = 100_000,
                 audit_max_anonymous: int = 10_000) -> None:
        self.path = str(path)
        self.audit_retention_s = audit_retention_s
        self.audit_max_rows = audit_max_rows
        self.audit_max_anonymous = audit_max_anonymous
        self._audit_since_prune = 0
        self.retention_s = retention_s
        self.rollup_retention_s = rollup_retention_s
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        self._tx = threading.Lock()  # one transaction at a time on the shared connection
        self._pending: list[tuple[int, str, float, float]] = []
        self._events: list[tuple[float, int | None, str, str]] = []
        self._series: list[tuple[str, str, float, float]] = []
        self.acked = 0  # rows committed
        # the audit log has its own connection: each entry is committed before the API
        # answers, whatever the telemetry batches are doing
        self._audit = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0,
                                      isolation_level=None)
        self._audit_lock = threading.Lock()

    def add(self, node: int, t: float, metrics: dict[str, float]) -> None:
        """Queue one frame's metrics (committed by the next `flush`)."""
        with self._lock:
            self._pending.extend((node, m, t, float(v)) for m, v in metrics.items())

    def add_series(self, source: str, t: float, metrics: dict[str, float]) -> None:
        """Queue one period's values of a source (a device id, or "rack")."""
        with self._lock:
            self._series.extend((source, m, t, float(v)) for m, v in metrics.items())

    def event(self, t: float, node: int | None, kind: str, detail: str = "") -> None:
        with self._lock:
            self._events.append((t, node, kind, detail))

    def flush(self) -> int:
        """Commit what is queued; returns the rows committed now."""
        with self._lock:
            rows, self._pending = self._pending, []
            evs, self._events = self._events, []
            ser, self._series = self._series, []
        if not rows and not evs and not ser:
            return 0
        db = self._db
        with self._tx:  # flushes come from the flusher task and from API calls alike
            db.execute("BEGIN")
            db.executemany("INSERT INTO telemetry VALUES (?, ?, ?, ?)", rows)
            db.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", evs)
            db.executemany("INSERT INTO series VALUES (?, ?, ?, ?)", ser)
            db.execute("COMMIT")
        self.acked += len(rows)
        return len(rows)

    def query(self, node: int, metric: str, since: float, until: float | None = None
              ) -> list[Point]:
        """Raw points where kept, one-minute averages before that; oldest first."""
        until = time.time() if until is None else until
        raw = self._db.execute("SELECT t, value FROM telemetry WHERE node=? AND metric=? AND t>=? "
                               "AND t<=? ORDER BY t", (node, metric, since, until)).fetchall()
        first = raw[0][0] if raw else until
        rolled = self._db.execute("SELECT t, value FROM telemetry_1m WHERE node=? AND metric=? "
                                  "AND t>=? AND t<? ORDER BY t",
                                  (node, metric, since, first)).fetchall()
        return [Point(t, v) for t, v in rolled + raw]

    def query_series(self, since: float, until: float | None = None, max_points: int = 600
                     ) -> tuple[float, dict[str, dict[str, list[tuple[float, float]]]]]:
        """Every series between two instants as (bucket s, {source: {metric: [(t, value)]}}):
        one-minute averages where the raw rows are gone, then averaged into buckets so no
        series has more than `max_points` points (bucket 0: the points as stored)."""
        until = time.time() if until is None else until
        first = self._db.execute("SELECT MIN(t) FROM series").fetchone()[0]
        first = until if first is None else max(first, since)
        rows = self._db.execute(
            "SELECT source, metric, t, value FROM series_1m WHERE t>=? AND t<? UNION ALL "
            "SELECT source, metric, t, value FROM series WHERE t>=? AND t<=? ORDER BY 3",
            (since, first, since, until)).fetchall()
        step = 0.0
        span = until - since
        out: dict[str, dict[str, list[tuple[float, float]]]] = {}
        by: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for src, m, t, v in rows:
            by.setdefault((src, m), []).append((t, v))
        if any(len(pts) > max_points for pts in by.values()):
            step = span / max_points
        for (src, m), pts in by.items():
            if step:
                buckets: dict[int, list[float]] = {}
                for t, v in pts:
                    b = int((t - since) / step)
                    acc = buckets.setdefault(b, [0.0, 0.0, 0.0])
                    acc[0] += t
                    acc[1] += v
                    acc[2] += 1
                pts = [(a[0] / a[2], a[1] / a[2]) for _, a in sorted(buckets.items())]
            out.setdefault(src, {})[m] = pts
        return step, out

    def metrics(self, node: int) -> list[str]:
        return [r[0] for r in self._db.execute(
            "SELECT DISTINCT metric FROM telemetry WHERE node=? UNION "
            "SELECT DISTINCT metric FROM telemetry_1m WHERE node=?", (node, node))]

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM telemetry").fetchone()[0])

    def recent_events(self, since: float) -> list[tuple[float, int | None, str, str]]:
        return self._db.execute("SELECT t, node, kind, detail FROM events WHERE t>=? ORDER BY t",
                                (since,)).fetchall()

    def audit(self, t: float, who: str, role: str, method: str, path: str, body: str,
              status: int) -> None:
        """Record one write to the API (committed when this returns)."""
        with self._audit_lock:
            self._audit.execute("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?)",
                                (t, who[:200], role[:20], method[:10], path[:500],
                                 body[:AUDIT_BODY_CHARS], status))
            self._audit_since_prune += 1
            # pruned as it grows, not only by `maintain`: a flood is bounded between runs
            if self._audit_since_prune >= max(1, min(self.audit_max_anonymous, 1000) // 10):
                self._prune_audit(t)

    def _prune_audit(self, now: float) -> int:
        """Drop audit entries past their age or their row budget; returns how many."""
        self._audit_since_prune = 0
        db = self._audit
        n = db.execute("DELETE FROM audit WHERE t < ?", (now - self.audit_retention_s,)).rowcount
        for cond, keep in (("who = ?", self.audit_max_anonymous),
                           ("who != ?", self.audit_max_rows)):
            n += db.execute(f"DELETE FROM audit WHERE rowid IN (SELECT rowid FROM audit WHERE "
                            f"{cond} ORDER BY rowid DESC LIMIT -1 OFFSET ?)",
                            (ANONYMOUS, keep)).rowcount
        return n

    def prune_audit(self, now: float | None = None) -> int:
        with self._audit_lock:
            return self._prune_audit(time.time() if now is None else now)

    def audit_log(self, since: float = 0.0) -> list[tuple]:
        with self._audit_lock:
            return self._audit.execute("SELECT t, who, role, method, path, body, status FROM audit "
                                       "WHERE t>=? ORDER BY t", (since,)).fetchall()

    def maintain(self, now: float | None = None) -> tuple[int, int]:
        """Roll raw rows older than the retention into minute averages; drop old averages.
        Returns (raw rows folded, minute rows dropped)."""
        now = time.time() if now is None else now
        cut = now - self.retention_s
        db = self._db
        with self._tx:
            db.execute("BEGIN")
            folded = dropped = 0
            for table, key in (("telemetry", "node"), ("series", "source")):
                db.execute(f"""INSERT INTO {table}_1m
                          SELECT {key}, metric, CAST(t / 60 AS INTEGER) * 60.0 AS m, AVG(value),
                                 MIN(value), MAX(value), COUNT(*)
                          FROM {table} WHERE t < ? GROUP BY {key}, metric, m
                          ON CONFLICT ({key}, metric, t) DO UPDATE SET
                            value = (value * n + excluded.value * excluded.n) / (n + excluded.n),
                            vmin = MIN(vmin, excluded.vmin), vmax = MAX(vmax, excluded.vmax),
                            n = n + excluded.n""", (cut,))
                n = db.execute(f"DELETE FROM {table} WHERE t < ?", (cut,)).rowcount
                folded += n if table == "telemetry" else 0
                dropped += db.execute(f"DELETE FROM {table}_1m WHERE t < ?",
                                      (now - self.rollup_retention_s,)).rowcount
            db.execute("COMMIT")
        self.prune_audit(now)
        return folded, dropped

    def close(self) -> None:
        self.flush()
        self._db.close()
        self._audit.close()

