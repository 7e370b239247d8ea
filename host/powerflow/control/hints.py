"""Job hints: what a scheduler knows in advance, told to the controller (pure computation).

A scheduler's prolog and epilog (Slurm, a Kubernetes hook) say "devices X… start job J at
time T with about W watts each for D seconds" and "job J ends at T"; a training framework's
checkpoint or evaluation hook says "job J pauses at T for D seconds at about W watts each"
(the job's devices wait on storage or run forward passes only, then return to the job's
watts). The controller folds them into the forecasts and the allocator prepares supply —
see `RackController`. Hints are advisory:

- what *raises* the forecast only raises: the hinted watts are a floor under a device's
  forecast (mean and bound) over the horizons a start or a return from a pause falls in (so
  lower classes are capped for the job from the period it starts or returns in), under its
  bound for START_HOLD_S after the job first reaches them (while the forecaster learns the
  job's steps), and
  converters are kept on for them from HINT_LEAD_S before a start and through a pause
  (`prepare`, the allocator's `ready_w`: supply, not a forecast, so nothing is capped that
  early);
- what *lowers* it needs measurement to agree: inside a pause, and for END_HOLD_S after a
  job's end, a device is held near what it draws only while its measured power is down there
  (within HINT_TOLERANCE of its p_max_w); a device drawing more than the hint said is left to
  its forecast, so a wrong hint costs at most the period in which it is found wrong; the
  same devices, while the pause or the hold lasts past the next two periods, free the rest
  of their p_max_w for lower classes while those are capped (`room`, the allocator's
  `room_w`: room kept, never a cap on the device);
- they expire: a hint is dropped at its end (start + duration, or the end a later hint gave),
  and the book holds at most MAX_HINTS jobs of MAX_PAUSES pauses each (MAX_ALL_PAUSES in
  all);
- a hint for an unknown device or job, a time in the past or beyond HINT_HORIZON_S, a power
  outside the devices' [0, p_max_w], a duration not in (0, HINT_MAX_DURATION_S], a pause
  outside its job or overlapping another is refused with HintError, and nothing is stored.

Times are on the controller's clock (s; Unix time in the live host, rack time in scenarios).
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from powerflow.model.arrays import Floats

HINT_HORIZON_S = 3600.0  # how far ahead a hint may say a job starts or ends (s)
HINT_MAX_DURATION_S = 7 * 86400.0  # the longest job a hint may announce (s)
HINT_LEAD_S = 30.0  # how long before a hinted start the allocator prepares for it (s)
PAST_TOLERANCE_S = 5.0  # a hint this late is taken as "now" (clocks of two machines differ)
MAX_HINTS = 1000  # hints held at once: the book is bounded whatever a scheduler sends
MAX_HINT_DEVICES = 10000  # device entries over all hints held (each is work every period)
HINT_TOLERANCE = 0.05  # "about W": how near (share of p_max_w) a device is held to a hint
MAX_PAUSES = 256  # pauses held per job ...
MAX_ALL_PAUSES = 10000  # ... and over all jobs
# after a hinted end, how long a device that stays idle is forecast at what it draws (s): the
# forecaster's band still holds the job's errors for minutes (its window is 300 periods)
END_HOLD_S = 120.0
# once a hinted job's devices first reach its watts, how long its bound is held at them (s):
# the forecaster has not yet learnt the job's steps, and would read its first all-reduce dips
# as the job's level (measured: training-jobs, bench/RESULTS.md)
START_HOLD_S = 30.0
JOB_NAME = re.compile(r"[A-Za-z0-9_.:@/-]{1,128}")


class HintError(ValueError):
    """A hint that is refused; the message says which field and why."""


@dataclass(frozen=True)
class Pause:
    """A stretch of a job at lower power (a checkpoint, an evaluation): from `start_t` to
    `end_t` (s, controller clock) each of its devices draws about `watts` (W)."""
    start_t: float
    end_t: float
    watts: float

    def as_dict(self) -> dict[str, float]:
        return {"start": self.start_t, "end": self.end_t, "watts": self.watts}


@dataclass(frozen=True)
class Hint:
    job: str
    devices: tuple[str, ...]
    start_t: float  # s, controller clock
    end_t: float  # s
    watts: float | None  # W per device, about (None: each device's p_max_w)
    pauses: tuple[Pause, ...] = ()  # by start, none overlapping (so by end too)

    def pause_at(self, t: float) -> tuple[Pause | None, float]:
        """The pause time `t` (s) falls in (None: none), and when the job last started or
        came back from a pause at or before `t` (s). Bisection: a job may hold many."""
        k = bisect.bisect_right(self.pauses, t, key=lambda p: p.start_t) - 1
        inside = self.pauses[k] if k >= 0 and t < self.pauses[k].end_t else None
        back = [p.end_t for p in self.pauses[max(k - 1, 0):k + 1] if p.end_t <= t]
        return inside, max([self.start_t] + back)

    def as_dict(self) -> dict[str, object]:
        return {"job": self.job, "devices": list(self.devices), "start": self.start_t,
                "end": self.end_t, "watts": self.watts,
                "pauses": [p.as_dict() for p in self.pauses]}


class HintBook:
    """The hints in force, checked against the rack's devices ({id: (p_min_w, p_max_w)})."""

    def __init__(self, devices: dict[str, tuple[float, float]]) -> None:
        self.devices = devices
        self.hints: dict[str, Hint] = {}
        self.ramped: dict[str, float] = {}  # job -> when its devices first reached its watts
        self.ended: dict[str, Hint] = {}  # jobs ended less than END_HOLD_S ago, oldest first

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
        self.ramped.pop(job, None)  # a new start: its ramp is still to come
        return h

    def _held(self, now: float, job: str) -> Hint:
        """The hint held for `job` (after expiring what ended), or HintError."""
        self.expire(now)
        h = self.hints.get(job)
        if h is None:
            raise HintError(f"hint: field 'job': no hinted job {job!r} (hints: "
                            f"{', '.join(sorted(self.hints)) or 'none'})")
        return h

    def end(self, now: float, job: str, at: float) -> Hint:
        """Record that `job` ends at `at` (s)."""
        h = self._held(now, job)
        end = self._when(now, at, "end")
        pauses = tuple(Pause(p.start_t, min(p.end_t, end), p.watts) for p in h.pauses
                       if p.start_t < end)
        h = Hint(h.job, h.devices, min(h.start_t, end), end, h.watts, pauses)
        self.hints[job] = h
        return h

    def pause(self, now: float, job: str, at: float, duration_s: float, watts: float) -> Hint:
        """Record that `job` pauses (a checkpoint, an evaluation) from `at` (s) for
        `duration_s` (s), its devices drawing about `watts` (W) each, then returns to the
        job's watts."""
        h = self._held(now, job)
        start = self._when(now, at, "start")
        if not (math.isfinite(duration_s) and 0.0 < duration_s):
            raise HintError(f"hint: field 'duration_s': expected more than 0 s; got "
                            f"{duration_s!r}")
        end = start + duration_s
        if start < h.start_t or end > h.end_t:
            raise HintError("hint: a pause must lie within its job (the job runs from "
                            f"{h.start_t - now:+.0f} s to {h.end_t - now:+.0f} s from now)")
        top = min(self.devices[dv][1] for dv in h.devices)
        if not (math.isfinite(watts) and 0.0 <= watts <= top):
            raise HintError(f"hint: field 'watts': expected 0 to {top:g} W (the least p_max_w "
                            f"of the job's devices); got {watts!r}")
        kept = [p for p in h.pauses if p.end_t + HINT_LEAD_S > now]  # prepare still reads
        if any(p.start_t < end and start < p.end_t for p in kept):
            raise HintError("hint: the pause overlaps one already hinted for the job")
        if len(kept) >= MAX_PAUSES:
            raise HintError(f"hint: the job holds {MAX_PAUSES} pauses already")
        if sum(len(x.pauses) for j, x in self.hints.items() if j != job) + len(kept) \
                >= MAX_ALL_PAUSES:
            raise HintError(f"hint: the jobs hold {MAX_ALL_PAUSES} pauses in all already")
        pauses = tuple(sorted(kept + [Pause(start, end, float(watts))],
                              key=lambda p: p.start_t))
        h = Hint(h.job, h.devices, h.start_t, h.end_t, h.watts, pauses)
        self.hints[job] = h
        return h

    def expire(self, now: float) -> None:
        """Drop the hints that ended; keep each END_HOLD_S among the ended (as many jobs and
        device entries as the book holds at most, the oldest dropped first)."""
        for job in [j for j, h in self.hints.items() if h.end_t <= now]:
            self.ended.pop(job, None)
            self.ended[job] = self.hints.pop(job)
            self.ramped.pop(job, None)
        for job in [j for j, h in self.ended.items() if h.end_t + END_HOLD_S <= now]:
            del self.ended[job]
        while self.ended and (len(self.ended) > MAX_HINTS or sum(
                len(h.devices) for h in self.ended.values()) > MAX_HINT_DEVICES):
            del self.ended[next(iter(self.ended))]

    @property
    def active(self) -> bool:
        """Whether any hint can move a forecast now (held, or ended within END_HOLD_S)."""
        return bool(self.hints or self.ended)

    def listing(self, now: float) -> list[Hint]:
        self.expire(now)
        return sorted(self.hints.values(), key=lambda h: (h.start_t, h.job))

    def fold(self, now: float, period_s: float, index: dict[str, int],
             means: dict[int, Floats], uppers: dict[int, Floats],
             measured: Floats | None = None, caps: Mapping[str, float | None] | None = None
             ) -> tuple[dict[int, Floats], dict[int, Floats]]:
        """The forecasts (per horizon in periods, W per device in `index` order) with the
        hints folded in, as new arrays. Over a horizon h (time t = now + h periods):

        - a job starting, or returning from a pause, at or before t and still running then
          raises its devices' mean and upper bound to at least the hinted watts, until a
          period after that start (by then the forecaster has seen a period of it); and for
          START_HOLD_S from when its devices were first measured at its watts, their upper
          bound (outside pauses);
        - inside a pause, a device whose `measured` power (W, this period) is down to the
          pause's watts (within the tolerance) is held there: mean at most the pause's
          watts, upper bound at most those plus the tolerance;
        - for END_HOLD_S after a job's end, a device no other hint names whose measured power
          is below the job's watts is held at it: mean at most the measured power, upper
          bound at most that plus the tolerance.

        Without `measured`, nothing is lowered; nor for a device held at one of `caps` (the
        caps in force while it was measured, W per device, None: uncapped): its measured power
        is its cap's, not what it would draw. (The book notes when each job's devices first
        reach its watts: the one state a fold keeps.)"""
        self.expire(now)
        means = {h: m.copy() for h, m in means.items()}
        uppers = {h: m.copy() for h, m in uppers.items()}
        named = self._named()
        if measured is not None:
            self._note_ramps(now, index, measured)
        for hz in means:
            t = now + hz * period_s
            for h in self.hints.values():
                if not h.start_t <= t < h.end_t:
                    continue
                inside, rise = h.pause_at(t)
                for dv in h.devices:
                    k = index[dv]
                    if inside is not None:
                        if (measured is not None and measured[k] <= inside.watts + self.tol(dv)
                                and self.free(dv, float(measured[k]), caps)):
                            means[hz][k] = min(means[hz][k], inside.watts)
                            uppers[hz][k] = min(uppers[hz][k], inside.watts + self.tol(dv))
                    elif now < rise + period_s:
                        w = self.watts(h, dv)
                        means[hz][k] = max(means[hz][k], w)
                        uppers[hz][k] = max(uppers[hz][k], w)
                    elif h.job in self.ramped and now < self.ramped[h.job] + START_HOLD_S:
                        uppers[hz][k] = max(uppers[hz][k], self.watts(h, dv))
            if measured is None:
                continue
            for h in self.ended.values():
                if not t < h.end_t + END_HOLD_S:
                    continue
                for dv in h.devices:
                    k = index[dv]
                    if (self._idle_after(h, dv, float(measured[k]), named)
                            and self.free(dv, float(measured[k]), caps)):
                        means[hz][k] = min(means[hz][k], measured[k])
                        uppers[hz][k] = min(uppers[hz][k], measured[k] + self.tol(dv))
        return means, uppers

    def room(self, now: float, period_s: float, index: dict[str, int], measured: Floats,
             caps: Mapping[str, float | None] | None = None) -> dict[str, float]:
        """W of room the caps need keep for a device that a hint says stays low until at
        least two periods from `now` (s) and whose `measured` power (W, this period, in
        `index` order) agrees — the rest of its p_max_w is free for lower classes:

        - inside a pause that lasts past then, a device at the pause's watts (within the
          tolerance) is kept those watts plus the tolerance;
        - within END_HOLD_S of a job's end, a device no held hint names that draws less than
          the job's watts is kept what it draws plus the tolerance.

        A device held at one of `caps` (in force while it was measured) is kept none: what it
        draws is its cap's, and says nothing of whether it is paused or idle (a capped device
        that came back early would otherwise be taken for paused until the hint ran out).

        Room, not a cap: a device that draws more than it is kept is not held back, and the
        next period finds the hint wrong and keeps it its whole p_max_w again."""
        self.expire(now)
        out: dict[str, float] = {}
        until = now + 2.0 * period_s
        named = self._named()
        for h in self.hints.values():
            if not h.start_t <= now or until >= h.end_t:
                continue
            inside, _ = h.pause_at(now)
            if inside is None or until >= inside.end_t:
                continue
            for dv in h.devices:
                w = float(measured[index[dv]])
                if w <= inside.watts + self.tol(dv) and self.free(dv, w, caps):
                    out[dv] = inside.watts + self.tol(dv)
        for h in self.ended.values():
            if until >= h.end_t + END_HOLD_S:
                continue
            for dv in h.devices:
                w = float(measured[index[dv]])
                if self._idle_after(h, dv, w, named) and self.free(dv, w, caps):
                    out[dv] = min(out.get(dv, math.inf), w + self.tol(dv))
        return out

    def free(self, device: str, measured_w: float,
             caps: Mapping[str, float | None] | None) -> bool:
        """Whether `device`'s measured power (W) is its own choice: no cap in force holds it
        there (it draws less than its cap by the tolerance)."""
        cap = None if caps is None else caps.get(device)
        return cap is None or measured_w < cap - self.tol(device)

    def _named(self) -> set[str]:
        """The devices the held hints name."""
        return {dv for h in self.hints.values() for dv in h.devices}

    def _idle_after(self, h: Hint, device: str, measured_w: float, named: set[str]) -> bool:
        """Whether `device` of ended job `h`, drawing `measured_w` (W), went idle: no held
        hint (`named`) names it and it draws less than the job's watts by the tolerance."""
        return device not in named and measured_w + self.tol(device) <= self.watts(h, device)

    def _note_ramps(self, now: float, index: dict[str, int], measured: Floats) -> None:
        for h in self.hints.values():
            if h.job not in self.ramped and h.start_t <= now and any(
                    measured[index[dv]] >= self.watts(h, dv) - self.tol(dv) for dv in h.devices):
                self.ramped[h.job] = now

    def tol(self, device: str) -> float:
        """W a device may differ from a hint and still be taken to follow it."""
        return HINT_TOLERANCE * self.devices[device][1]

    def watts(self, h: Hint, device: str) -> float:
        """W the hint says `device` will draw: its watts, or the device's p_max_w if none."""
        return self.devices[device][1] if h.watts is None else h.watts

    def next_end(self, now: float) -> float | None:
        """s until the first end of a job running now (started, not ended); None: none runs.
        The rack's demand first eases then: what the allocator spreads the battery over."""
        left = [h.end_t - now for h in self.hints.values() if h.start_t <= now < h.end_t]
        return min(left) if left else None

    def prepare(self, now: float) -> dict[str, float]:
        """W per device the allocator should have supply ready for now: the hinted watts of a
        job from HINT_LEAD_S before its start until HINT_LEAD_S after it (by then the
        forecaster has seen the job), and through each of its pauses until HINT_LEAD_S after
        the return (the converters a pause would let go are needed when it ends)."""
        out: dict[str, float] = {}
        for h in self.hints.values():
            ready = h.start_t - HINT_LEAD_S <= now < min(h.end_t, h.start_t + HINT_LEAD_S)
            ready = ready or any(p.start_t <= now < min(h.end_t, p.end_t + HINT_LEAD_S)
                                 for p in h.pauses)
            if ready:
                for dv in h.devices:
                    out[dv] = max(out.get(dv, 0.0), self.watts(h, dv))
        return out
