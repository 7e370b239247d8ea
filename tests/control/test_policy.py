"""Policies: every value checked, nothing half applied, profiles from the rack file."""

from __future__ import annotations

import pytest

from powerflow.control.controller import RackController
from powerflow.control.policy import Policy, PolicyError, load_rack_checked, policy_from_config
from powerflow.model.rack import RackError, load_rack
from tests.conftest import ROOT

DEVS = {"gpu0": (80.0, 300.0), "cpu0": (40.0, 150.0)}


@pytest.mark.parametrize("change,field", [
    ({"reserve_frac": -0.1}, "reserve_frac"),
    ({"power_saving": "yes"}, "power_saving"),
    ({"ties": "sometimes"}, "ties"),
    ({"no_such": 1}, "no_such"),
    ({"priorities": {"gpu0": 0}}, "priorities.gpu0"),
    ({"priorities": {"gpu9": 1}}, "priorities"),
    ({"p_min_w": {"gpu0": 310.0}}, "gpu0"),
    ({"uncap_below": 0.99, "cap_at": 0.95}, "uncap_below"),
    ({"v_target_pu": 1.05}, "v_target_pu"),
])
def test_bad_values_are_refused_naming_the_field(change, field) -> None:
    base = Policy()
    with pytest.raises(PolicyError, match=field):
        base.changed(change, DEVS)
    assert base == Policy()  # unchanged


def test_profiles_are_the_base_with_their_overrides() -> None:
    base, named = policy_from_config({"reserve_frac": 0.2},
                                     {"eco": {"power_saving": True, "min_saving_w": 0.5},
                                      "performance": {"power_saving": False}}, DEVS)
    assert named["eco"].reserve_frac == 0.2 and named["eco"].min_saving_w == 0.5
    assert named["performance"].power_saving is False and base.power_saving is True


def test_controller_switches_profile_at_run_time_and_refuses_unknown_ones(tmp_path) -> None:
    text = (ROOT / "examples" / "racks" / "small.toml").read_text()
    p = tmp_path / "r.toml"
    p.write_text(text + '\n[policy]\nreserve_frac = 0.15\n[profile.night]\nrotation_period_s = 60\n')
    ctrl = RackController(load_rack(p))
    assert ctrl.policy.reserve_frac == 0.15
    ctrl.set_policy({"profile": "night"})
    assert ctrl.policy.rotation_period_s == 60 and ctrl.policy.profile == "night"
    with pytest.raises(PolicyError, match="no profile 'day'"):
        ctrl.set_policy({"profile": "day"})
    assert ctrl.policy.profile == "night"


def test_a_bad_policy_in_a_rack_file_names_the_file(tmp_path) -> None:
    p = tmp_path / "r.toml"
    p.write_text((ROOT / "examples" / "racks" / "small.toml").read_text()
                 + "\n[policy]\ncap_at = 7\n")
    with pytest.raises(RackError, match=r"r\.toml: policy: field 'cap_at'"):
        load_rack_checked(p)
    # the rack description alone is data: the policy is control's to check
    assert load_rack(p).policy_table == {"cap_at": 7}
