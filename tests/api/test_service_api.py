"""The API in-process: the real app, service, controller and allocator over a fake `RackIO`
(four healthy converters at the bus voltage), called through httpx's ASGI transport.

The end-to-end tests (test_api.py, test_redfish.py, tests/security) prove the same routes on a
real host over real links; these check what needs a controlled rack: typed responses that
validate against real allocations, the one error style, refusals that change nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pfproto import defs as d
from powerflow.api.app import create_app
from powerflow.api.auth import Tokens
from powerflow.control.allocate import BatteryView
from powerflow.control.controller import DeviceObs, NodeObs, RackController
from powerflow.control.loop import ControlLoop
from powerflow.control.rackio import Commanded, Commands
from powerflow.link.transport import LinkAddress
from powerflow.manager import NodeManager
from powerflow.model.rack import Rack, load_rack
from powerflow.service import HostService
from powerflow.store import TelemetryStore

ROOT = Path(__file__).resolve().parents[2]
V1 = "/api/v1"
READ, OPS = "read-secret-1234", "operator-secret-5678"
TOKENS = Tokens([("grafana", "read", hashlib.sha256(READ.encode()).digest()),
                 ("alice", "operator", hashlib.sha256(OPS.encode()).digest())])


class FakeRackIO:
    """Four converters in CV at what they were last told, sharing the load evenly."""

    def __init__(self, rack: Rack) -> None:
        self.rack = rack
        self.vout = {n.id: rack.bus_voltage for n in rack.nodes}
        self.applied: list[Commands] = []

    def observe_nodes(self) -> dict[int, NodeObs]:
        return {n.id: NodeObs(True, {"MODE": d.MODE_CV, "VOUT_COMMAND": self.vout[n.id],
                                     "READ_VOUT": self.rack.bus_voltage, "READ_IOUT": 25.0,
                                     "READ_POUT": 25.0 * self.rack.bus_voltage,
                                     "READ_TEMPERATURE_1": 40.0, "FAULTS": 0,
                                     "PORT_STATE": 1 if n.id < 4 else 0}, 0.05)
                for n in self.rack.nodes}

    def observe_devices(self) -> dict[str, DeviceObs]:
        return {dv.id: DeviceObs(dv.p_nom_w) for dv in self.rack.devices}

    def battery(self) -> BatteryView | None:
        return None

    def feed_w(self) -> float:
        return 0.0

    def commanded(self) -> dict[int, Commanded]:
        return {n.id: Commanded(True, self.vout[n.id], False, 1 if n.id < 4 else 0, n.vout_max)
                for n in self.rack.nodes}

    async def poll(self) -> None:
        return None

    async def apply(self, cmds: Commands) -> int:
        self.applied.append(cmds)
        for nid, v in cmds.setpoints.items():
            if v is not None:
                self.vout[nid] = v
        return 0


def build(tmp_path: Path, tokens: Tokens | None = None
          ) -> tuple[HostService, httpx.AsyncClient, FakeRackIO, TelemetryStore]:
    rack = load_rack(ROOT / "examples" / "racks" / "small.toml")
    store = TelemetryStore(tmp_path / "t.sqlite3")
    manager = NodeManager(rack, {n.id: LinkAddress.parse("tcp:127.0.0.1:9") for n in rack.nodes},
                          store)
    io = FakeRackIO(rack)
    loop = ControlLoop(io, RackController(rack))
    svc = HostService(manager, store, control=loop)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(svc, tokens)),
                               base_url="http://127.0.0.1")
    return svc, client, io, store


@pytest.fixture()
def host(tmp_path: Path) -> Iterator[tuple[HostService, httpx.AsyncClient, FakeRackIO]]:
    svc, client, io, store = build(tmp_path)
    yield svc, client, io
    asyncio.run(client.aclose())
    store.close()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def periods(svc: HostService, n: int = 3) -> None:
    assert svc.control is not None
    for _ in range(n):
        await svc.control.period()


def test_every_response_is_documented_field_by_field(
        host: tuple[HostService, httpx.AsyncClient, FakeRackIO]) -> None:
    _, client, _ = host
    spec = run(client.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    undocumented = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            content = op["responses"].get("200", {}).get("content", {})
            if "text/event-stream" in content:
                continue
            schema = content.get("application/json", {}).get("schema", {})
            if not schema:
                undocumented.append(f"{method.upper()} {path}")
    assert not undocumented, undocumented
    # the allocation is described down to each node's plan, with units
    plan = schemas["NodePlan"]["properties"]
    assert {"on", "vref", "share_w", "plan_limit_w", "loss_w", "why", "binding"} <= set(plan)
    assert "W" in plan["share_w"]["description"]
    assert {"vout", "iout", "excluded", "telemetry_age_s"} <= set(schemas["NodeRow"]["properties"])
    assert "period_s" in schemas["Policy"]["properties"]


def test_the_allocation_as_typed_matches_the_controllers(
        host: tuple[HostService, httpx.AsyncClient, FakeRackIO]) -> None:
    svc, client, io = host

    async def go() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        missing = await client.get(V1 + "/allocation")
        await periods(svc)
        return missing, await client.get(V1 + "/allocation"), await client.get(V1 + "/plan")

    missing, got, plan = run(go())
    assert missing.status_code == 404 and isinstance(missing.json()["detail"], str)
    assert got.status_code == 200, got.text
    a = svc.allocation()
    assert a is not None
    body = got.json()
    assert body["nodes"]["1"]["share_w"] == a.nodes[1]["share_w"]
    assert body["predicted"]["feed_w"] == a.predicted["feed_w"]
    assert body["measured"]["readings"] == 4 and body["state"] == a.state
    assert plan.status_code == 200 and set(plan.json()) == set(body)
    assert io.applied, "the periods dispatched their allocations to the RackIO"


def test_a_refused_policy_change_changes_nothing(
        host: tuple[HostService, httpx.AsyncClient, FakeRackIO]) -> None:
    svc, client, _ = host
    before = svc.policy()

    async def go() -> list[httpx.Response]:
        return [await client.put(V1 + "/policy", json={"v_min_pu": 3.0}),
                await client.put(V1 + "/policy", json={"no_such_field": 1}),
                await client.put(V1 + "/policy", json={}),
                await client.put(V1 + "/policy", json={"reserve_frac": 0.2})]

    bad_range, unknown, empty, good = run(go())
    for r in (bad_range, unknown, empty):
        assert r.status_code == 422, r.text
        issue = r.json()["detail"][0]
        assert set(issue) == {"type", "loc", "msg"} and issue["msg"]
    assert good.status_code == 200 and good.json()["policy"]["reserve_frac"] == 0.2
    assert svc.policy().reserve_frac == 0.2 and before.reserve_frac != 0.2


def test_a_pin_the_check_refuses_is_not_kept(
        host: tuple[HostService, httpx.AsyncClient, FakeRackIO]) -> None:
    """Pinning converters off one by one: the pin that would leave nothing able to carry
    the load is refused (Redfish 409) and the policy is exactly as before it."""
    svc, client, _ = host
    run(periods(svc))
    answers = []

    async def pin(nid: int, body: dict[str, Any]) -> httpx.Response:
        return await client.patch(f"/redfish/v1/Chassis/Rack/Controls/Node{nid}Output", json=body)

    refused = None
    for nid in (1, 2, 3, 4):
        before = svc.policy()
        r = run(pin(nid, {"SetPoint": 0.0}))
        answers.append(r.status_code)
        if r.status_code == 409:
            refused = (nid, before, r)
            break
        assert r.status_code == 200 and r.json()["ControlMode"] == "Override", r.text
    assert refused is not None, f"every pin was kept: {answers}"
    nid, before, r = refused
    assert r.json()["error"]["code"] == "Base.1.19.PropertyValueConflict"
    assert svc.policy() is before and str(nid) not in svc.policy().node_output_w
    # out of range: 400, unchanged; Automatic hands a pinned output back
    assert run(pin(1, {"SetPoint": 1e6})).status_code == 400 and svc.policy() is before
    back = run(pin(1, {"ControlMode": "Automatic"}))
    assert back.status_code == 200 and "1" not in svc.policy().node_output_w


def test_manual_commands_wait_for_a_pause_and_errors_have_one_shape(
        host: tuple[HostService, httpx.AsyncClient, FakeRackIO]) -> None:
    svc, client, _ = host

    async def go() -> dict[str, httpx.Response]:
        out = {"owned": await client.post(V1 + "/nodes/1/setpoint", json={"vout": 12.1})}
        out["pause"] = await client.put(V1 + "/control", json={"enabled": False})
        out["alarms"] = await client.get(V1 + "/alarms")
        out["offline"] = await client.post(V1 + "/nodes/1/setpoint", json={"vout": 12.1})
        out["nothing"] = await client.post(V1 + "/nodes/1/setpoint", json={})
        out["no node"] = await client.get(V1 + "/nodes/99")
        out["no metric"] = await client.get(V1 + "/history",
                                            params={"node": 1, "metric": "x", "since": 0})
        out["resume"] = await client.put(V1 + "/control", json={"enabled": True})
        out["alarms after"] = await client.get(V1 + "/alarms")
        return out

    r = run(go())
    assert r["owned"].status_code == 409 and "pause it first" in r["owned"].json()["detail"]
    assert r["pause"].status_code == 200 and r["pause"].json()["enabled"] is False
    assert [a["kind"] for a in r["alarms"].json()] == ["control_paused"]
    # paused: the command goes to the manager, whose node has no link here
    assert r["offline"].status_code == 409 and isinstance(r["offline"].json()["detail"], str)
    assert r["nothing"].status_code == 422 and r["nothing"].json()["detail"][0]["msg"]
    assert r["no node"].status_code == 404 and "not in rack" in r["no node"].json()["detail"]
    assert r["no metric"].status_code == 404
    assert r["resume"].json()["enabled"] is True and r["alarms after"].json() == []


def test_metrics_read_the_service(host: tuple[HostService, httpx.AsyncClient, FakeRackIO]
                                  ) -> None:
    svc, client, _ = host
    run(periods(svc))
    text = run(client.get("/metrics")).text
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    a = svc.allocation()
    assert a is not None
    planned = {s.labels["node"]: s.value for s in fams["powerflow_node_planned_watts"].samples}
    assert planned == {str(k): v["share_w"] for k, v in a.nodes.items()}
    assert fams["powerflow_control_periods"].samples[0].value == 3


def test_roles_and_refusals_are_enforced_and_audited(tmp_path: Path) -> None:
    svc, client, _, store = build(tmp_path, TOKENS)

    def auth(token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def go() -> dict[str, httpx.Response]:
        out = {"anon": await client.get(V1 + "/nodes"),
               "wrong": await client.get(V1 + "/nodes", headers=auth("wrong")),
               "read": await client.get(V1 + "/nodes", headers=auth(READ)),
               "read writes": await client.put(V1 + "/policy", headers=auth(READ),
                                               json={"reserve_frac": 0.2}),
               "bad value": await client.put(V1 + "/policy", headers=auth(OPS),
                                             json={"reserve_frac": "lots"}),
               "operator": await client.put(V1 + "/policy", headers=auth(OPS),
                                            json={"reserve_frac": 0.2})}
        out["audit"] = await client.get(V1 + "/audit", headers=auth(READ))
        await client.aclose()
        return out

    before = svc.policy()
    try:
        r = run(go())
    finally:
        store.close()
    assert r["anon"].status_code == 401 and r["wrong"].status_code == 401
    assert r["read"].status_code == 200 and len(r["read"].json()) == 4
    assert r["read writes"].status_code == 403 and "read-only" in r["read writes"].json()["detail"]
    assert r["bad value"].status_code == 422
    assert "reserve_frac" in r["bad value"].json()["detail"][0]["msg"]
    assert r["operator"].status_code == 200 and svc.policy().reserve_frac == 0.2
    assert before.reserve_frac != 0.2
    last = [(a["who"], a["method"], a["path"], a["status"]) for a in r["audit"].json()[-3:]]
    assert last == [("grafana", "PUT", "/api/v1/policy", 403),
                    ("alice", "PUT", "/api/v1/policy", 422),
                    ("alice", "PUT", "/api/v1/policy", 200)]
    assert json.loads(r["audit"].json()[-1]["body"]) == {"reserve_frac": 0.2}


def test_a_tie_port_is_pinned_while_the_loop_runs_and_an_unknown_node_is_404(
        host: tuple[HostService, httpx.AsyncClient, FakeRackIO]) -> None:
    svc, client, io = host

    async def go() -> dict[str, Any]:
        await periods(svc, 1)
        out: dict[str, Any] = {
            "setpoint 99": await client.post(V1 + "/nodes/99/setpoint", json={"vout": 12.0}),
            "port 99": await client.post(V1 + "/nodes/99/port", json={"port": 0, "close": True}),
            # node 4's port 0 operates the normally open tie D-A
            "close D-A": await client.post(V1 + "/nodes/4/port", json={"port": 0, "close": True}),
        }
        await periods(svc, 1)
        out["allocation"] = await client.get(V1 + "/allocation")
        return out

    r = run(go())
    # unknown nodes: 404 even while the loop owns the setpoints (not "pause it first")
    for k in ("setpoint 99", "port 99"):
        assert r[k].status_code == 404 and r[k].json()["detail"] == "node 99 is not in rack small"
    assert r["close D-A"].status_code == 200, r["close D-A"].text
    assert r["close D-A"].json() == {"node": 4, "port": 0, "closed": True, "pinned_tie": "D-A"}
    assert svc.policy().tie_override == {"D-A": True}
    flows = {f["id"]: f["closed"] for f in r["allocation"].json()["flows"]}
    assert flows["D-A"] is True  # the loop planned it closed, as pinned
    assert any(c.ports.get((4, 0)) is True for c in io.applied)  # and told node 4 to close it


def test_job_hints_are_for_operators_checked_audited_and_move_the_forecast(tmp_path: Path) -> None:
    svc, client, _, store = build(tmp_path, TOKENS)
    op = {"Authorization": f"Bearer {OPS}"}
    good = {"kind": "start", "job": "slurm-4711", "devices": ["gpu0", "gpu1"], "in_s": 5.0,
            "watts": 290.0, "duration_s": 600.0}
    bad = [{**good, "devices": ["gpu9"]}, {**good, "in_s": 7200.0},
           {**good, "in_s": None, "at": 1.0}, {**good, "watts": 1000.0},
           {**good, "duration_s": None}, {**good, "at": 2e9}, {**good, "extra": 1},
           {"kind": "end", "job": "nope"}, {"kind": "end", "job": "slurm-4711", "watts": 5.0},
           {**good, "kind": "pause"}, {"kind": "pause", "job": "slurm-4711", "in_s": 30.0,
                                       "duration_s": 15.0, "watts": 110.0}]  # no such job yet
    pause = {"kind": "pause", "job": "slurm-4711", "in_s": 30.0, "duration_s": 15.0,
             "watts": 110.0}
    bad_pauses = [{**pause, "in_s": 40.0},  # overlaps the one held
                  {**pause, "in_s": 700.0},  # after the job's end
                  {**pause, "watts": None}, {**pause, "watts": 400.0},
                  {**pause, "devices": ["gpu0"]}]

    async def go() -> dict[str, Any]:
        await periods(svc, 3)
        out: dict[str, Any] = {
            "read": await client.post(V1 + "/hints", json=good,
                                      headers={"Authorization": f"Bearer {READ}"}),
            "bad": [await client.post(V1 + "/hints", json=b, headers=op) for b in bad]}
        out["empty"] = (await client.get(V1 + "/hints", headers=op)).json()
        out["good"] = await client.post(V1 + "/hints", json=good, headers=op)
        await periods(svc, 1)
        out["forecasts"] = (await client.get(V1 + "/forecasts", headers=op)).json()
        out["list"] = (await client.get(V1 + "/hints", headers=op)).json()
        out["pause"] = await client.post(V1 + "/hints", json=pause, headers=op)
        out["bad_pauses"] = [await client.post(V1 + "/hints", json=b, headers=op)
                             for b in bad_pauses]
        out["list_paused"] = (await client.get(V1 + "/hints", headers=op)).json()
        out["end"] = await client.post(V1 + "/hints", headers=op,
                                       json={"kind": "end", "job": "slurm-4711", "in_s": 20.0})
        out["audit"] = (await client.get(V1 + "/audit", headers=op)).json()
        await client.aclose()
        return out

    try:
        r = run(go())
    finally:
        store.close()
    assert r["read"].status_code == 403
    for b, resp in zip(bad, r["bad"], strict=True):
        assert resp.status_code == 422, (b, resp.text)
        assert resp.json()["detail"][0]["msg"], b
    assert r["empty"] == []  # nothing refused was stored
    assert r["good"].status_code == 200, r["good"].text
    h = r["good"].json()
    assert h["devices"] == ["gpu0", "gpu1"] and h["end"] - h["start"] == 600.0
    assert r["list"] == [h] and h["pauses"] == []
    assert r["pause"].status_code == 200, r["pause"].text
    p = r["pause"].json()["pauses"]
    assert len(p) == 1 and p[0]["end"] - p[0]["start"] == 15.0 and p[0]["watts"] == 110.0
    for b, resp in zip(bad_pauses, r["bad_pauses"], strict=True):
        assert resp.status_code == 422, (b, resp.text)
    assert r["list_paused"] == [r["pause"].json()]  # the refused pauses stored nothing
    # the job starts 5 s ahead: the 10-s forecast is the hinted power, the 1-s one is not
    f = r["forecasts"]["gpu0"]
    assert f["mean_w"]["10"] == 290.0 and f["mean_w"]["1"] != 290.0
    assert r["forecasts"]["gpu2"]["mean_w"]["10"] != 290.0
    assert r["end"].status_code == 200 and r["end"].json()["end"] - h["start"] < 20.0
    writes = [(a["who"], a["path"], a["status"]) for a in r["audit"] if a["path"].endswith("/hints")]
    assert writes[0] == ("grafana", "/api/v1/hints", 403)
    assert [s for _, _, s in writes[1:]] == ([422] * len(bad) + [200, 200]
                                             + [422] * len(bad_pauses) + [200])
