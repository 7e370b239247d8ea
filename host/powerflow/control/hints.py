"""Job hints: what a scheduler knows in advance, told to the controller (pure computation).

A scheduler's prolog and epilog (Slurm, a Kubernetes hook) say "devices X… start job J at
time T with about W watts each for D seconds" and "job J ends at T". The controller folds
them into the forecasts and the allocator prepares supply before the start — see
`RackController`. Hints are advisory:

- they can only *raise* what the allocator prepares for: the hinted watts are a floor under
  a device's forecast (mean and bound) over the horizons the start falls in (so lower
  classes are capped for the job from the period it starts in), and converters are kept on
  for them from HINT_LEAD_S before the start (`prepare`, the allocator's `ready_w`: supply,
  not a forecast, so nothing is capped that early); nothing a hint says lowers a forecast
  drawn from measurement (an end hint only ends the hint's own influence);
- they expire: a hint is dropped at its end (start + duration, or the end a later hint gave),
  and the book holds at most MAX_HINTS;
- a hint for an unknown device, a time in the past or beyond HINT_HORIZON_S, a power outside
  the device's [0, p_max_w], a duration not in (0, HINT_MAX_DURATION_S], or an end for a job
  the book does not hold is refused with HintError, and nothing is stored.

Times are on the controller's clock (s; Unix time in the live host, rack time in scenarios).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from powerflow.model.arrays import Floats

HINT_HORIZON_S = 3600.0  # how far ahead a hint may say a job starts or ends (s)
HINT_MAX_DURATION_S = 7 * 86400.0  # the longest job a hint may announce (s)
HINT_LEAD_S = 30.0  # how long before a hinted start the allocator prepares for it (s)
PAST_TOLERANCE_S = 5.0  # a hint this late is taken as "now" (clocks of two machines differ)
MAX_HINTS = 1000  # hints held at once: the book is bounded whatever a scheduler sends
MAX_HINT_DEVICES = 10000  # device entries over all hints held (each is work every period)
JOB_NAME = re.compile(r"[A-Za-z0-9_.:@/-]{1,128}")


class HintError(ValueError):
    """A hint that is refused; the message says which field and why."""


@dataclass(frozen=True)
class Hint:
    job: str
    devices: tuple[str, ...]
    start_t: float  # s, controller clock
    end_t: float  # s
    watts: float | None  # W per device, about (None: each device's p_max_w)

    def as_dict(self) -> dict[str, object]:
        return {"job": self.job, "devices": list(self.devices), "start": self.start_t,
                "end": self.end_t, "watts": self.watts}


class HintBook:
    """The hints in force, checked against the rack's devices ({id: (p_min_w, p_max_w)})."""

    def __init__(self, devices: dict[str, tuple[float, float]]) -> None:
        self.devices = devices
        self.hints: dict[str, Hint] = {}

    def _when(self, now: float, at: float, field: str) -> float:
        if not math.isfinite(at):
            raise HintError(f"hint: field '{field}': expected a finite time (s); got {at!r}")
        if at < now - PAST_TOLERANCE_S:
            raise HintError(f"hint: field '{field}': {now - at:.1f} s in the past")
        if at > now + HINT_HORIZON_S:
            raise HintError(f"hint: field '{field}': {at - now:.0f} s ahead, beyond the "
                            f"{HINT_HORIZON_S:.0f} s horizon of hints")
        return max(at, now)

    def start(self, now: float, job: str, devices: list[str], at: float, watts: float | None,
              duration_s: float) -> Hint:
        """Record that `devices` start `job` at `at` (s) drawing about `watts` (W) each (None:
        as much as each may, its p_max_w) for `duration_s` (s). A hint for a job already held
        replaces it."""
        self.expire(now)
        if not JOB_NAME.fullmatch(job):
            raise HintError("hint: field 'job': 1 to 128 letters, digits or _.:@/-; "
                            f"got {job!r}")
        if not devices:
            raise HintError("hint: field 'devices': give at least one device")
        for dv in devices:
            if dv not in self.devices:
                raise HintError(f"hint: field 'devices': no device {dv!r} in the rack")
        if len(set(devices)) != len(devices):
            raise HintError("hint: field 'devices': a device is named twice")
        start = self._when(now, at, "start")
        if not (math.isfinite(duration_s) and 0.0 < duration_s <= HINT_MAX_DURATION_S):
            raise HintError(f"hint: field 'duration_s': expected more than 0 and at most "
                            f"{HINT_MAX_DURATION_S:.0f} s; got {duration_s!r}")
        top = min(self.devices[dv][1] for dv in devices)
        if watts is not None and not (math.isfinite(watts) and 0.0 <= watts <= top):
            raise HintError(f"hint: field 'watts': expected 0 to {top:g} W (the least p_max_w "
                            f"of the devices); got {watts!r}")
        if job not in self.hints and len(self.hints) >= MAX_HINTS:
            raise HintError(f"hint: {MAX_HINTS} hints are held already; end some first")
        entries = sum(len(h.devices) for j, h in self.hints.items() if j != job)
        if entries + len(devices) > MAX_HINT_DEVICES:
            raise HintError(f"hint: the hints held name {entries} devices; at most "
                            f"{MAX_HINT_DEVICES} in all; end some first")
        h = Hint(job, tuple(devices), start, start + duration_s,
                 None if watts is None else float(watts))
        self.hints[job] = h
        return h

    def end(self, now: float, job: str, at: float) -> Hint:
        """Record that `job` ends at `at` (s)."""
        self.expire(now)
        h = self.hints.get(job)
        if h is None:
            raise HintError(f"hint: field 'job': no hinted job {job!r} (hints: "
                            f"{', '.join(sorted(self.hints)) or 'none'})")
        end = self._when(now, at, "end")
        h = Hint(h.job, h.devices, min(h.start_t, end), end, h.watts)
        self.hints[job] = h
        return h

    def expire(self, now: float) -> None:
        for job in [j for j, h in self.hints.items() if h.end_t <= now]:
            del self.hints[job]

    def listing(self, now: float) -> list[Hint]:
        self.expire(now)
        return sorted(self.hints.values(), key=lambda h: (h.start_t, h.job))

    def fold(self, now: float, period_s: float, index: dict[str, int],
             means: dict[int, Floats], uppers: dict[int, Floats]
             ) -> tuple[dict[int, Floats], dict[int, Floats]]:
        """The forecasts (per horizon in periods, W per device in `index` order) with the
        hints folded in, as new arrays: over a horizon h, a job starting before now + h
        periods (and still running then) raises its devices' mean and upper bound to at
        least the hinted watts, until a period after its start. Never lowers either.
        (Supply readied before a start is not a forecast: see `prepare`.)"""
        self.expire(now)
        means = {h: m.copy() for h, m in means.items()}
        uppers = {h: m.copy() for h, m in uppers.items()}
        for hz in means:
            t = now + hz * period_s
            for h in self.hints.values():
                # over the horizons the start falls in, until a period after it (by then
                # the forecaster has seen a period of the job)
                if h.start_t <= t < h.end_t and now < h.start_t + period_s:
                    for dv in h.devices:
                        k, w = index[dv], self.watts(h, dv)
                        means[hz][k] = max(means[hz][k], w)
                        uppers[hz][k] = max(uppers[hz][k], w)
        return means, uppers

    def watts(self, h: Hint, device: str) -> float:
        """W the hint says `device` will draw: its watts, or the device's p_max_w if none."""
        return self.devices[device][1] if h.watts is None else h.watts

    def prepare(self, now: float) -> dict[str, float]:
        """W per device the allocator should have supply ready for now: the hinted watts of a
        job from HINT_LEAD_S before its start until HINT_LEAD_S after it (by then the
        forecaster has seen the job)."""
        out: dict[str, float] = {}
        for h in self.hints.values():
            if h.start_t - HINT_LEAD_S <= now < min(h.end_t, h.start_t + HINT_LEAD_S):
                for dv in h.devices:
                    out[dv] = max(out.get(dv, 0.0), self.watts(h, dv))
        return out
