"""The rack's side of a site budget: a lease on feed power that the allocator obeys.

A site controller grants each rack a budget (W at the rack's feed) for a lease (s), stamped
with its epoch (raised by every controller that takes over) and a sequence number. The rack
keeps the budget as an extra feed limit while the lease holds. This module decides, with no
I/O, what the rack obeys:

- an offer from an epoch lower than the highest seen, or from the same epoch and controller
  with a sequence number not above the last one, is refused as stale (so two site
  controllers can never both steer a rack: the newest epoch wins, ties broken by the
  controller's id);
- an absurd offer (not finite, lease not positive) is refused; a budget below the rack's
  floor is clamped up to it, one above the rack's own feed limit clamped down to it; each
  refusal and clamp is counted by reason and is an event, and changes nothing else;
- while no lease holds (never granted, expired, broker lost) the rack falls to its safe
  budget, never above the last budget granted and never below its floor, with an alarm
  (`site_budget`) that clears when a lease is granted again.

Units: W, s (the host's clock, Unix time).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

from powerflow.control.alarms import AlarmBook


@dataclass(frozen=True)
class Lease:
    budget_w: float  # W at the rack's feed, after clamping
    expires_at: float  # s (host clock)
    epoch: int
    controller: str
    seq: int
    granted_w: float  # W as offered, before clamping


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    budget_w: float | None  # W in force after the offer (None: refused)
    reason: str  # "" when taken as offered; else why refused or clamped


@dataclass
class SiteBudget:
    """The lease state of one rack under a site controller (see the module docstring)."""

    floor_w: float  # W the rack is always allowed
    safe_w: float  # W it falls to without a lease (clamped to [floor, last granted])
    feed_limit_w: float  # W its own breaker allows
    alarms: AlarmBook | None = None
    lease: Lease | None = None
    last_granted_w: float | None = None  # W of the last lease accepted (after clamping)
    epoch: int = -1  # highest epoch seen
    controller: str = ""  # the controller of that epoch
    seq: int = -1  # its last sequence number taken
    refused: dict[str, int] = field(default_factory=dict)  # reason -> count
    clamped: dict[str, int] = field(default_factory=dict)  # reason -> count
    _lapsed: bool = True
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.floor_w <= self.feed_limit_w:
            raise ValueError(f"floor {self.floor_w} W outside 0..{self.feed_limit_w} W")
        self.safe_w = min(max(self.safe_w, self.floor_w), self.feed_limit_w)

    def _event(self, now: float, kind: str, detail: str) -> None:
        if self.alarms is not None:
            self.alarms.event(now, kind, detail)

    def _refuse(self, now: float, reason: str, detail: str) -> Verdict:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        self._event(now, "site_budget_refused", f"{reason}: {detail}")
        return Verdict(False, None, reason)

    def offer(self, now: float, budget_w: float, lease_s: float, epoch: int, controller: str,
              seq: int) -> Verdict:
        """Take (or refuse) a budget of `budget_w` W for `lease_s` s from `controller`."""
        with self._lock:
            what = f"{budget_w!r} W for {lease_s!r} s from {controller!r} epoch {epoch} seq {seq}"
            if not (isinstance(budget_w, int | float) and isinstance(lease_s, int | float)
                    and math.isfinite(budget_w) and math.isfinite(lease_s)):
                return self._refuse(now, "not_finite", what)
            if lease_s <= 0.0:
                return self._refuse(now, "lease_not_positive", what)
            if (epoch, controller) < (self.epoch, self.controller):
                return self._refuse(now, "stale_epoch",
                                    f"{what}: epoch {self.epoch} of {self.controller!r} seen")
            if (epoch, controller) == (self.epoch, self.controller) and seq <= self.seq:
                return self._refuse(now, "stale_seq", f"{what}: seq {self.seq} already taken")
            w, reason = float(budget_w), ""
            if w < self.floor_w:
                w, reason = self.floor_w, "below_floor"
            elif w > self.feed_limit_w:
                w, reason = self.feed_limit_w, "above_feed_limit"
            if reason:
                self.clamped[reason] = self.clamped.get(reason, 0) + 1
                self._event(now, "site_budget_clamped", f"{reason}: {what} -> {w:.1f} W")
            if (epoch, controller) != (self.epoch, self.controller):
                self._event(now, "site_controller", f"now following {controller!r} epoch {epoch}")
            self.epoch, self.controller, self.seq = epoch, controller, seq
            self.lease = Lease(w, now + float(lease_s), epoch, controller, seq, float(budget_w))
            self.last_granted_w = w
            if self._lapsed and self.alarms is not None:
                self.alarms.clear(now, "site_budget", f"granted {w:.1f} W by {controller!r}")
            self._lapsed = False
            return Verdict(True, w, reason)

    def valid(self, now: float) -> bool:
        """A lease holds now."""
        return self.lease is not None and now < self.lease.expires_at

    def fallback_w(self) -> float:
        """W the rack obeys without a lease: its safe budget, never above the last budget
        granted, never below its floor."""
        w = self.safe_w if self.last_granted_w is None else min(self.safe_w, self.last_granted_w)
        return max(w, self.floor_w)

    def limit_w(self, now: float) -> float:
        """The feed budget in force now (W): the lease's, else the fallback (with an alarm)."""
        with self._lock:
            if self.lease is not None and now < self.lease.expires_at:
                return self.lease.budget_w
            w = self.fallback_w()
            if not self._lapsed:
                self._lapsed = True
                self._event(now, "site_lease_expired",
                            f"lease from {self.controller!r} epoch {self.epoch} ran out: "
                            f"falling to {w:.1f} W")
            if self.alarms is not None:
                self.alarms.set(now, "site_budget", "major",
                                f"no site budget lease: holding the safe budget {w:.1f} W")
            return w

    def state(self, now: float) -> dict[str, object]:
        """What the API and the site report show of the lease (W, s)."""
        lease = self.lease
        return {"budget_w": self.limit_w(now), "lease_valid": self.valid(now),
                "expires_in_s": None if lease is None else round(lease.expires_at - now, 3),
                "epoch": self.epoch, "controller": self.controller or None, "seq": self.seq,
                "floor_w": self.floor_w, "safe_w": self.safe_w,
                "feed_limit_w": self.feed_limit_w,
                "refused": dict(self.refused), "clamped": dict(self.clamped)}
