"""The security building blocks on their own: sessions, the throttle, audit retention, the
body limit's arithmetic, and the purity of a plan preview."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from pfproto import defs as d
from powerflow.api.auth import Principal
from powerflow.api.sessions import SessionsFull, SessionStore
from powerflow.api.throttle import AuthThrottle
from powerflow.control.controller import NodeObs, RackController
from powerflow.link.session import check_outgoing
from powerflow.model.rack import load_rack
from powerflow.store import ANONYMOUS, AUDIT_BODY_CHARS, TelemetryStore
from tests.conftest import ROOT

WHO = Principal("viewer", "read")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_sessions_expire_after_inactivity_not_after_creation() -> None:
    clk = Clock()
    st = SessionStore(timeout_s=10.0, max_sessions=2, clock=clk)
    tok, s = st.create(WHO)
    for _ in range(5):  # used every 8 s: lives past 4 timeouts
        clk.t += 8.0
        assert st.lookup(tok) is s
    clk.t += 10.5
    assert st.lookup(tok) is None and st.get(s.id) is None
    assert st.lookup("") is None and st.lookup("x" * 43) is None


def test_sessions_are_bounded_and_only_digests_are_kept() -> None:
    st = SessionStore(timeout_s=60.0, max_sessions=2, clock=Clock())
    toks = [st.create(WHO)[0] for _ in range(2)]
    with pytest.raises(SessionsFull):
        st.create(WHO)
    assert all(t not in pickle.dumps(st.listing()).decode("latin-1") for t in toks)
    assert st.remove(st.lookup(toks[0]).id)  # type: ignore[union-attr]
    st.create(WHO)


def test_the_throttle_locks_after_free_failures_and_doubles() -> None:
    clk = Clock()
    th = AuthThrottle(free=3, base_s=1.0, max_s=8.0, clock=clk)
    assert th.failed("10.0.0.1", "admin") == [] and th.failed("10.0.0.1", "admin") == []
    lk = th.failed("10.0.0.1", "admin")
    assert {x.key for x in lk} == {("addr", "10.0.0.1"), ("user", "admin")}
    assert th.retry_after("10.0.0.1") == 1 and th.retry_after("10.9.9.9", "admin") == 1
    assert th.retry_after("10.9.9.9", "other") is None
    secs = [th.failed("10.0.0.1")[0].seconds for _ in range(5)]
    assert secs == [2.0, 4.0, 8.0, 8.0, 8.0]  # doubling, capped
    clk.t += 8.5
    assert th.retry_after("10.0.0.1") is None
    th.succeeded("10.0.0.1", "admin")  # clears the user, not the address
    assert th.retry_after(None, "admin") is None
    assert th.failed("10.0.0.1")[0].seconds == 8.0


def test_the_throttle_table_is_bounded() -> None:
    th = AuthThrottle(max_keys=100, clock=Clock())
    for k in range(1000):
        th.failed(f"10.0.{k // 250}.{k % 250}")
    assert len(th._t) <= 100


def test_audit_retention_by_age_and_rows_with_a_budget_for_the_anonymous(tmp_path: Path) -> None:
    st = TelemetryStore(tmp_path / "a.sqlite3", audit_retention_s=100.0, audit_max_rows=5,
                        audit_max_anonymous=10)
    for k in range(8):
        st.audit(1000.0 + k, "admin", "operator", "PUT", "/api/v1/policy", "x" * 5000, 200)
    for k in range(300):  # a flood of refused callers
        st.audit(1010.0 + k * 0.01, ANONYMOUS, ANONYMOUS, "PUT", "/api/v1/policy", "", 401)
    st.prune_audit(1020.0)
    rows = st.audit_log()
    mine = [r for r in rows if r[1] == "admin"]
    assert len(mine) == 5 and [r[0] for r in mine] == [1003.0, 1004.0, 1005.0, 1006.0, 1007.0]
    assert all(len(r[5]) == AUDIT_BODY_CHARS for r in mine)
    assert len([r for r in rows if r[1] == ANONYMOUS]) == 10
    st.prune_audit(1200.0)  # everything past 100 s old
    assert st.audit_log() == []
    st.close()


def test_values_are_checked_after_float32_rounding() -> None:
    hello = {d.K_MFR_VOUT_MAX: 14.0}
    with pytest.raises(ValueError, match="VOUT_COMMAND"):
        check_outgoing(d.MSG_SETPOINT, {d.K_VOUT_COMMAND: 14.00001, d.K_LEASE_MS: 1000}, hello)
    with pytest.raises(ValueError, match="float32"):
        check_outgoing(d.MSG_SETPOINT, {d.K_VOUT_COMMAND: 1e39, d.K_LEASE_MS: 1000}, hello)
    # 14.0000001 V is 14 V as a float32: what the node will see, so within its rating
    check_outgoing(d.MSG_SETPOINT, {d.K_VOUT_COMMAND: 14.0000001, d.K_LEASE_MS: 1000}, hello)


def test_a_preview_writes_no_controller_state() -> None:
    rack = load_rack(ROOT / "examples" / "racks" / "small.toml")
    ctrl = RackController(rack)
    nodes = {n.id: NodeObs(True, {"MODE": d.MODE_CV, "VOUT_COMMAND": 12.2, "READ_VOUT": 12.2,
                                  "READ_IOUT": 20.0, "FAULTS": 0}, 0.1) for n in rack.nodes}
    t = 1000.0
    for _ in range(3):
        t += 1.0
        ctrl.supervise(t, nodes)
        ctrl.step(t, nodes, {})

    def state() -> bytes:
        return pickle.dumps((ctrl.memory, ctrl.health.nodes, ctrl.run_s, ctrl.planned_on,
                             ctrl.last_power, ctrl.forecasts, ctrl.policy,
                             ctrl.supervisor.safe, sorted(ctrl.alarms.active), ctrl.last))

    before = state()
    for k in range(5):
        ctrl.preview(t + 0.1 * k, nodes)
    assert state() == before
