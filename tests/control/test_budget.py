"""The rack's site budget lease: stale and absurd offers refused or clamped with a counted
reason, the fallback on expiry (never above the last grant, never below the floor), and the
allocator holding the planned feed under the budget with the caps in priority order."""

from __future__ import annotations

import copy
import math

import pytest

from powerflow.control.alarms import AlarmBook
from powerflow.control.allocate import Allocator, DeviceView, Memory, NodeView, RackView
from powerflow.control.budget import SiteBudget
from powerflow.control.controller import RackController
from powerflow.control.policy import Policy
from powerflow.model.rack import RackError, load_rack, parse_rack
from powerflow.tomlfile import read_toml
from tests.conftest import ROOT

SMALL = load_rack(ROOT / "examples" / "racks" / "small.toml")


def budget(**kw: float) -> tuple[SiteBudget, AlarmBook]:
    book = AlarmBook()
    args = {"floor_w": 500.0, "safe_w": 1200.0, "feed_limit_w": 2400.0} | kw
    return SiteBudget(alarms=book, **args), book


def test_a_lease_holds_until_it_expires_then_the_rack_falls_to_its_safe_budget() -> None:
    b, book = budget()
    assert b.limit_w(0.0) == 1200.0  # never granted: the safe budget, alarmed
    assert book.is_active("site_budget")
    v = b.offer(1.0, 1800.0, 6.0, epoch=1, controller="site-a", seq=1)
    assert v.accepted and v.budget_w == 1800.0 and v.reason == ""
    assert not book.is_active("site_budget")
    assert b.limit_w(6.9) == 1800.0
    assert b.limit_w(7.0) == 1200.0  # expired: safe budget (below the last grant)
    assert book.is_active("site_budget")
    kinds = [e.kind for e in book.drain()]
    assert "site_lease_expired" in kinds
    # a grant below the safe budget: the fallback never goes above it
    b.offer(8.0, 700.0, 2.0, epoch=1, controller="site-a", seq=2)
    assert b.limit_w(20.0) == 700.0
    # rejoins without a restart: the next grant holds again and clears the alarm
    b.offer(21.0, 2000.0, 2.0, epoch=1, controller="site-a", seq=3)
    assert b.limit_w(21.5) == 2000.0 and not book.is_active("site_budget")


def test_the_fallback_never_goes_below_the_floor() -> None:
    b, _ = budget(floor_w=500.0, safe_w=100.0)
    assert b.safe_w == 500.0 and b.limit_w(0.0) == 500.0


@pytest.mark.parametrize(("offer", "reason"), [
    ((math.nan, 2.0), "not_finite"), ((1000.0, math.inf), "not_finite"),
    ((1000.0, 0.0), "lease_not_positive"), ((1000.0, -1.0), "lease_not_positive"),
])
def test_absurd_offers_are_refused_counted_and_change_nothing(offer, reason) -> None:
    b, book = budget()
    b.offer(0.0, 1500.0, 10.0, epoch=2, controller="a", seq=5)
    book.drain()
    before = (b.lease, b.epoch, b.seq)
    v = b.offer(1.0, *offer, epoch=3, controller="a", seq=6)
    assert not v.accepted and v.reason == reason
    assert (b.lease, b.epoch, b.seq) == before and b.refused == {reason: 1}
    assert [e.kind for e in book.drain()] == ["site_budget_refused"]


def test_stale_epochs_and_sequence_numbers_are_refused() -> None:
    b, _ = budget()
    assert b.offer(0.0, 1500.0, 10.0, epoch=2, controller="b", seq=5).accepted
    assert b.offer(1.0, 900.0, 10.0, epoch=1, controller="z", seq=99).reason == "stale_epoch"
    # same epoch: the controller id breaks the tie, so two controllers cannot alternate
    assert b.offer(1.0, 900.0, 10.0, epoch=2, controller="a", seq=99).reason == "stale_epoch"
    assert b.offer(1.0, 900.0, 10.0, epoch=2, controller="b", seq=5).reason == "stale_seq"
    assert b.offer(1.0, 900.0, 10.0, epoch=2, controller="b", seq=4).reason == "stale_seq"
    assert b.limit_w(2.0) == 1500.0
    assert b.refused == {"stale_epoch": 2, "stale_seq": 2}
    # a higher epoch is followed whatever its sequence number
    assert b.offer(3.0, 900.0, 10.0, epoch=3, controller="a", seq=0).accepted
    assert b.limit_w(3.0) == 900.0


def test_budgets_outside_floor_and_feed_limit_are_clamped_with_a_reason() -> None:
    b, book = budget()
    v = b.offer(0.0, 10.0, 5.0, epoch=1, controller="a", seq=1)
    assert v.accepted and v.budget_w == 500.0 and v.reason == "below_floor"
    v = b.offer(0.0, 1e9, 5.0, epoch=1, controller="a", seq=2)
    assert v.accepted and v.budget_w == 2400.0 and v.reason == "above_feed_limit"
    assert b.clamped == {"below_floor": 1, "above_feed_limit": 1}
    assert sum(e.kind == "site_budget_clamped" for e in book.drain()) == 2


def view(rack, demand_frac: float, budget_w: float | None) -> RackView:
    nodes = [NodeView(n.id, True, True, n.iout_max * rack.bus_voltage, 30.0) for n in rack.nodes]
    devs = [DeviceView(d.id, d.p_max_w * demand_frac, d.p_max_w * demand_frac * 1.05)
            for d in rack.devices]
    return RackView(0.0, nodes, devs, None, 0.0, "", budget_w)


@pytest.mark.parametrize("budget_w", [600.0, 900.0, 1300.0, 1800.0])
def test_the_allocator_holds_the_planned_feed_under_the_budget_by_priority(budget_w) -> None:
    rack = copy.deepcopy(SMALL)
    pol = Policy()
    a = Allocator(rack).allocate(view(rack, 0.9, budget_w), pol, Memory())
    assert a.predicted["feed_limit_w"] == budget_w
    assert a.predicted["feed_w"] <= budget_w + 1e-6
    prio = {d.id: d.priority for d in rack.devices}
    pmin = {d.id: d.p_min_w for d in rack.devices}
    throttled = [d for d, dv in a.devices.items()
                 if dv["cap_w"] is not None and dv["cap_w"] < dv["p95_w"] - 1e-6]
    assert throttled  # the budget binds: the rack's demand is over each of these
    for d in throttled:
        for o, dv in a.devices.items():
            if prio[o] > prio[d]:
                assert dv["cap_w"] is not None and dv["cap_w"] <= pmin[o] + 1e-6
    # without a budget the same demand is not capped this hard
    free = Allocator(rack).allocate(view(rack, 0.9, None), pol, Memory())
    assert free.predicted["feed_w"] > a.predicted["feed_w"]


def test_a_rack_under_a_site_plans_under_its_lease_and_falls_back_when_it_expires() -> None:
    ctrl = RackController(SMALL)
    site = ctrl.join_site()
    assert (site.floor_w, site.safe_w) == (SMALL.floor_w, SMALL.safe_budget_w) == (600.0, 1200.0)
    assert site.feed_limit_w == SMALL.breaker_limit_w
    assert ctrl.preview(99.0, {}).predicted["feed_limit_w"] == 1200.0  # before any lease
    site.offer(100.0, 1500.0, 4.0, epoch=1, controller="site", seq=1)
    a = ctrl.preview(101.0, {})
    assert a.predicted["feed_limit_w"] == 1500.0
    a = ctrl.preview(105.0, {})
    assert a.predicted["feed_limit_w"] == 1200.0  # expired: the rack file's safe budget
    assert ctrl.alarms.is_active("site_budget")


def test_rack_file_floor_and_safe_budget_are_checked(tmp_path) -> None:
    raw = read_toml(ROOT / "examples" / "racks" / "small.toml", RackError)
    raw["feed"].update(floor_w=400.0, safe_budget_w=900.0)
    rack = parse_rack(raw, "x.toml")
    assert (rack.floor_w, rack.safe_budget_w) == (400.0, 900.0)
    raw["feed"]["safe_budget_w"] = 300.0
    with pytest.raises(RackError, match=r"\[feed\].*safe_budget_w"):
        parse_rack(raw, "x.toml")
    raw["feed"].update(floor_w=5000.0, safe_budget_w=5000.0)
    with pytest.raises(RackError, match=r"\[feed\].*floor_w"):
        parse_rack(raw, "x.toml")
