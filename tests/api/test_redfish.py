"""The Redfish service: DMTF's redfish-service-validator, run offline against the CSDL in
../shared/redfish, passes; DMTF's `redfish` client library reads and writes it; writes go
through the allocator's policy checks and refusals are Redfish error messages."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redfish

from tests.conftest import SHARED
from tests.emulator.test_host_end_to_end import Host, wait_for

CSDL = SHARED / "redfish" / "csdl"
READ, OPS = "viewer-secret-0001", "operator-secret-0002"


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rf")
    (tmp / "tokens.toml").write_text(
        f'[[token]]\nname = "viewer"\nrole = "read"\n'
        f'sha256 = "{hashlib.sha256(READ.encode()).hexdigest()}"\n'
        f'[[token]]\nname = "admin"\nrole = "operator"\n'
        f'sha256 = "{hashlib.sha256(OPS.encode()).hexdigest()}"\n')
    h = Host(tmp, "--tokens", str(tmp / "tokens.toml"))
    try:
        client = redfish.redfish_client(base_url=h.url, username="viewer", password=READ)

        def up() -> bool:
            try:
                client.login(auth="basic")
                return True
            except Exception:  # the library's own connection errors, while the host starts
                return False

        wait_for(up, 30, "the Redfish service up")
        wait_for(lambda: client.get("/redfish/v1/Chassis/Rack/PowerSubsystem").dict["Allocation"]
                 ["AllocatedWatts"], 40, "an allocation in the PowerSubsystem")
        yield h
    finally:
        h.stop()


def host_api(h: Host, path: str) -> dict:
    import httpx

    return httpx.get(h.url + "/api/v1" + path, timeout=5,
                     headers={"Authorization": f"Bearer {READ}"}).json()


def test_dmtf_service_validator_passes_offline(host: Host, tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("rf_service_validator")
    r = subprocess.run([str(exe), "--ip", host.url, "-u", "viewer", "-p", READ,
                        "--schema_directory", str(CSDL), "--logdir", str(tmp_path)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    out = r.stdout + r.stderr
    table = out[out.rindex("PASS"):]
    row = table.splitlines()[2].split("|")
    passed, warned, failed = (int(x) for x in row[1:4])
    assert failed == 0, out[-3000:]
    assert passed > 500  # it walked the whole tree: rack, 4 supplies, 16 sensors, 8 devices
    assert "/redfish/v1/Chassis/Rack/PowerSubsystem/PowerSupplies/Node4/Metrics" in out
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_client_library_reads_the_rack(host: Host) -> None:
    c = redfish.redfish_client(base_url=host.url, username="viewer", password=READ)
    c.login(auth="session")
    try:
        ps = c.get("/redfish/v1/Chassis/Rack/PowerSubsystem").dict
        assert ps["CapacityWatts"] == 2400.0
        assert ps["Allocation"]["RequestedWatts"] > 0
        sup = c.get("/redfish/v1/Chassis/Rack/PowerSubsystem/PowerSupplies/Node2").dict
        assert sup["PowerSupplyType"] == "DCRegulator"
        assert sup["EfficiencyRatings"][1] == {"LoadPercent": 50.0, "EfficiencyPercent": 96.5}
        m = c.get(sup["Metrics"]["@odata.id"]).dict
        assert 10 < m["RailVoltage"][0]["Reading"] < 13
        s = c.get("/redfish/v1/Chassis/Rack/Sensors/Node1Temp").dict
        assert s["ReadingUnits"] == "Cel" and s["Thresholds"]["UpperCritical"]["Reading"] == 115
        bus = "/redfish/v1/PowerEquipment/ElectricalBuses"
        assert c.get(bus).dict["Members@odata.count"] == 4
        assert c.get(bus + "/D/Branches/D-A").dict["PowerState"] == "Off"  # normally open tie
        assert c.get(bus + "/A/Branches/A-B").dict["PowerState"] == "On"
        mains = c.get(bus + "/B/Mains/Node2").dict
        assert mains["CircuitType"] == "Mains" and mains["NominalVoltage"] == "DC12V"
        missing = c.get("/redfish/v1/Chassis/nope/EnvironmentMetrics")
        assert missing.status == 404
        assert missing.dict["error"]["@Message.ExtendedInfo"][0]["MessageId"].endswith(
            "ResourceNotFound")
        legacy = c.get("/redfish/v1/Chassis/Rack/Power").dict
        assert legacy["PowerControl"][0]["PowerConsumedWatts"] > 100
    finally:
        c.logout()
    anon = redfish.redfish_client(base_url=host.url, username="", password="")
    assert anon.get("/redfish/v1/Chassis").status == 401


def test_power_limit_writes_go_through_the_policy(host: Host) -> None:
    viewer = redfish.redfish_client(base_url=host.url, username="viewer", password=READ)
    viewer.login(auth="basic")
    r = viewer.patch("/redfish/v1/Chassis/gpu1/Controls/PowerLimit", body={"SetPoint": 200})
    assert r.status == 403
    admin = redfish.redfish_client(base_url=host.url, username="admin", password=OPS)
    admin.login(auth="session")
    try:
        r = admin.patch("/redfish/v1/Chassis/gpu1/Controls/PowerLimit", body={"SetPoint": 9000})
        assert r.status == 400
        info = r.dict["error"]["@Message.ExtendedInfo"][0]
        assert info["MessageId"].endswith("PropertyValueOutOfRange")
        env = admin.get("/redfish/v1/Chassis/gpu1/EnvironmentMetrics").dict
        assert env["PowerLimitWatts"]["ControlMode"] in ("Automatic", "Override")
        r = admin.patch("/redfish/v1/Chassis/gpu1/Controls/PowerLimit", body={"SetPoint": 210})
        assert r.status == 200 and r.dict["SetPoint"] == 210 and r.dict["ControlMode"] == "Override"

        def applied():
            env = admin.get("/redfish/v1/Chassis/gpu1/EnvironmentMetrics").dict
            return env["PowerLimitWatts"]["SetPoint"] <= 210 and env
        wait_for(applied, 10, "the limit in force")
        out = "/redfish/v1/Chassis/Rack/Controls/Node1Output"
        r = admin.patch(out, body={"SetPoint": 900})  # above the converter's rating
        assert r.status == 400 and "node_output_w" in r.dict["error"]["message"]
        r = admin.patch(out, body={"SetPoint": 120})
        assert r.status == 200 and r.dict["ControlMode"] == "Override", r.dict
        wait_for(lambda: abs(admin.get(out).dict["SetPoint"] - 120) < 1e-6
                 and host_api(host, "/allocation")["nodes"]["1"]["share_w"] < 130, 10,
                 "node 1 planned at its pinned output")
        r = admin.patch(out, body={"ControlMode": "Automatic"})
        assert r.status == 200 and r.dict["ControlMode"] == "Automatic"
    finally:
        admin.patch("/redfish/v1/Chassis/gpu1/Controls/PowerLimit", body={"SetPoint": 300})
        admin.logout()
