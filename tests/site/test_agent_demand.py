"""What a rack tells the site of its demand (`rack_demand`): the P95 of its devices by
priority, except that a device the supply holds below its ceiling counts at its ceiling (it
draws its cap, so its forecast says nothing of what it wants), while an operator's p_max_w
cap is the most it wants."""

from __future__ import annotations

from powerflow.control.allocate import Allocator, Memory
from powerflow.control.policy import Policy
from powerflow.model.rack import load_rack
from powerflow.site.agent import rack_demand
from tests.conftest import ROOT
from tests.control.test_allocate import view

POD = load_rack(ROOT / "examples" / "racks" / "small-pod.toml")


def class_p95(a, prio: int) -> float:
    """The P95 the class would report with every device at its forecast's (device side, W)."""
    return sum(a.devices[d.id]["p95_w"] for d in POD.devices if d.priority == prio)


def test_a_supply_capped_device_counts_at_its_ceiling_for_the_site() -> None:
    def at(frac: float):  # every device at `frac` of its ceiling (the supply: 1.2 kW)
        dem = {d.id: d.p_max_w * frac for d in POD.devices}
        return Allocator(POD).allocate(view(POD, demand=dem), Policy(), Memory())

    free, tight = at(0.5), at(0.7)
    capped = {d.id for d in POD.devices if tight.devices[d.id]["cap_w"] is not None}
    assert capped and not any(free.devices[d]["cap_w"] for d in free.devices)
    for a in (free, tight):
        for p, c in rack_demand(POD, a, measured_w=1000.0).classes.items():
            # the feed/device ratio, as the class's mean shows it
            ratio = c.mean_w / sum(a.devices[d.id]["forecast_w"] for d in POD.devices
                                   if d.priority == p)
            want = sum(POD.devices[k].p_max_w if d.id in capped and a is tight
                       else a.devices[d.id]["p95_w"]
                       for k, d in enumerate(POD.devices) if d.priority == p)
            assert abs(c.p95_w - want * ratio) < 0.02 * want, (p, c, want)
    lowest = max(d.priority for d in POD.devices)
    # the class the supply caps asks the site for more than its forecast says
    assert rack_demand(POD, tight, 1000.0).classes[lowest].p95_w > class_p95(tight, lowest)


def test_an_operators_cap_is_the_most_a_device_wants() -> None:
    dem = {d.id: d.p_max_w * 0.5 for d in POD.devices}  # within supply
    pol = Policy(p_max_w={"cpu1": 60.0})
    a = Allocator(POD).allocate(view(POD, demand=dem), pol, Memory())
    assert a.devices["cpu1"]["cap_w"] == 60.0 and a.devices["cpu1"]["ceiling_w"] == 60.0
    lone = [d for d in POD.devices if d.priority == POD.devices[3].priority]
    p95 = sum(a.devices[d.id]["p95_w"] for d in lone)
    got = rack_demand(POD, a, 1000.0).classes[POD.devices[3].priority]
    ratio = got.mean_w / sum(a.devices[d.id]["forecast_w"] for d in lone)
    assert abs(got.p95_w - p95 * ratio) < 0.02 * p95
