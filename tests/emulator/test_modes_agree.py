"""Full-process mode and fast mode run the same firmware on the same physics: the same
commands bring the same rack to the same operating point."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from pfproto import defs as d
from powerflow.emulator.fast import FastRack
from powerflow.emulator.rack_emulator import EmulatedRack
from powerflow.model.rack import load_rack
from tests.conftest import ROOT
from tests.emulator.test_rack_process import _until, bring_up

CONFIG = {d.K_VOUT_DROOP: 0.012, d.K_TON_RISE: 0.5, d.K_TELEMETRY_PERIOD_MS: 100}


def steady_rack():
    rack = load_rack(ROOT / "examples" / "racks" / "small.toml")
    return dataclasses.replace(rack, devices=tuple(dataclasses.replace(dv, trace="steady")
                                                   for dv in rack.devices))


def fast_mode(rack) -> dict[int, tuple[float, float]]:
    fr = FastRack(rack)
    fr.open_sessions()
    for nid in fr.nodes:
        fr.command(nid, d.MSG_CONFIG, CONFIG)
    for b in rack.branches:
        if b.port and b.closed:
            fr.command(b.port[0], d.MSG_PORT_SWITCH, {d.K_PORT: b.port[1], d.K_CLOSE: True})
    for nid in fr.nodes:
        fr.command(nid, d.MSG_SETPOINT, {d.K_VOUT_COMMAND: 12.0, d.K_LEASE_MS: 60000})
    fr.run(4.0)
    return {n: (b[d.K_READ_VOUT], b[d.K_READ_IOUT]) for n, b in fr.telemetry.items()}


async def process_mode(rack) -> dict[int, tuple[float, float]]:
    emu = EmulatedRack(rack)
    addrs = emu.start()
    try:
        sessions = await bring_up(rack, addrs, CONFIG)
        latest: dict = {}
        history: dict[int, list[float]] = {n: [] for n in sessions}

        def settled(t: dict) -> bool:
            """Every node regulating, its last five current readings within 0.2 A."""
            for n, b in t.items():
                h = history[n]
                if not h or h[-1] != b[d.K_READ_IOUT]:
                    h.append(b[d.K_READ_IOUT])
                del h[:-5]
            return all(b[d.K_MODE] == d.MODE_CV for b in t.values()) and all(
                len(h) == 5 and max(h) - min(h) < 0.2 for h in history.values())

        assert await _until(settled, sessions, 30, latest), latest
        for s in sessions.values():
            await s.close()
        return {n: (b[d.K_READ_VOUT], b[d.K_READ_IOUT]) for n, b in latest.items()}
    finally:
        emu.stop()


def test_fast_and_full_process_modes_agree() -> None:
    rack = steady_rack()
    fast = fast_mode(rack)
    full = asyncio.run(process_mode(rack))
    assert set(fast) == set(full) == {1, 2, 3, 4}
    for nid in fast:
        vf, i_f = fast[nid]
        vp, ip = full[nid]
        assert vf == pytest.approx(vp, abs=0.02), (nid, fast, full)
        assert i_f == pytest.approx(ip, rel=0.05, abs=0.5), (nid, fast, full)
