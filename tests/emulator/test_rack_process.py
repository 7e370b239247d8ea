"""The emulated rack in full-process mode: four MicroPython node processes (two over ptys
opened with pyserial, two over loopback TCP) against the rack physics, driven by the host."""

from __future__ import annotations

import asyncio

import pytest

from pfproto import defs as d
from powerflow.emulator.rack_emulator import EmulatedRack
from powerflow.link.session import NodeSession
from powerflow.link.transport import open_link
from powerflow.model.rack import load_rack
from tests.conftest import ROOT


async def _connect(addr, deadline: float):
    loop = asyncio.get_running_loop()
    while True:
        try:
            return await open_link(addr)
        except OSError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)  # the node process is still starting


async def _until(cond, sessions, timeout: float, latest: dict) -> bool:
    """Drain telemetry into `latest` until `cond(latest)` holds or `timeout` passes."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        for nid, s in sessions.items():
            while not s.inbox.empty():
                rx = s.inbox.get_nowait()
                if rx.frame.type == d.MSG_TELEMETRY:
                    latest[nid] = rx.frame.body
            s.heartbeat(0)
        if len(latest) == len(sessions) and cond(latest):
            return True
        await asyncio.sleep(0.05)
    return False


async def bring_up(rack, addrs, config: dict) -> dict[int, NodeSession]:
    """Sessions with every node, `config` sent, normally-closed ties closed, 12 V everywhere."""
    loop = asyncio.get_running_loop()
    sessions = {}
    for nid, addr in addrs.items():
        r, w = await _connect(addr, loop.time() + 15)
        sessions[nid] = s = NodeSession(r, w)
        await s.wait_hello()
        await s.open_session()
        await s.command(d.MSG_CONFIG, config)
    for b in rack.branches:
        if b.port and b.closed:
            await sessions[b.port[0]].command(d.MSG_PORT_SWITCH, {d.K_PORT: b.port[1],
                                                                   d.K_CLOSE: True})
    await asyncio.gather(*[s.command(d.MSG_SETPOINT, {d.K_VOUT_COMMAND: 12.0, d.K_LEASE_MS: 30000})
                           for s in sessions.values()])
    return sessions


async def scenario() -> dict:
    rack = load_rack(ROOT / "examples" / "racks" / "small.toml")
    emu = EmulatedRack(rack)
    addrs = emu.start()
    out: dict = {}
    try:
        # droop matched to the converters' own (ORv3-like)
        sessions = await bring_up(rack, addrs, {d.K_VOUT_DROOP: 0.012, d.K_TELEMETRY_PERIOD_MS: 100,
                                                d.K_TON_RISE: 0.5})
        out["kinds"] = sorted(a.kind for a in addrs.values())
        latest: dict = {}

        def settled(t):
            return all(b[d.K_MODE] == d.MODE_CV and b[d.K_READ_IOUT] > 5 for b in t.values())

        out["settled"] = await _until(settled, sessions, 15, latest)
        out["normal"] = {nid: dict(b) for nid, b in latest.items()}
        out["physics_v"] = list(emu.physics.v)
        out["served_w"] = float(emu.physics.served.sum())
        emu.fail_converter(1)
        out["after_failure"] = await _until(
            lambda t: t[1][d.K_READ_IOUT] < 0.5 and all(t[i][d.K_READ_IOUT] > 25 for i in (2, 3, 4)),
            sessions, 15, latest)
        out["failure"] = {nid: dict(b) for nid, b in latest.items()}
        for s in sessions.values():
            await s.close()
    finally:
        emu.stop()
    return out


@pytest.fixture(scope="module")
def run() -> dict:
    return asyncio.run(scenario())


def test_nodes_reach_regulation_and_share_load(run) -> None:
    assert run["kinds"] == ["serial", "serial", "tcp", "tcp"]
    assert run["settled"], run["normal"]
    cur = [b[d.K_READ_IOUT] for b in run["normal"].values()]
    assert max(cur) - min(cur) < 0.1 * max(cur)  # droop shares within 10 %
    for b in run["normal"].values():
        # what the firmware measures is the physics' bus voltage, near 12 V less its droop
        assert 11.6 < b[d.K_READ_VOUT] < 12.0
    total = sum(b[d.K_READ_VOUT] * b[d.K_READ_IOUT] for b in run["normal"].values())
    assert total == pytest.approx(run["served_w"], rel=0.05)


def test_failed_converter_load_moves_to_the_others(run) -> None:
    assert run["after_failure"], run["failure"]
    assert all(b[d.K_READ_VOUT] > 11.4 for b in run["failure"].values())
