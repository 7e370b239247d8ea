"""The firmware as a real process: MicroPython on the sim HAL, reached by the host over a
pseudo-terminal opened with pyserial and over loopback TCP, in a keyed session."""

from __future__ import annotations

import asyncio
import io

import pytest
from rich.console import Console

from pfproto import defs as d
from powerflow.demo import run_demo
from powerflow.link.session import check_outgoing


@pytest.mark.parametrize("link", ["pty", "tcp"])
def test_host_drives_a_node_process(link: str) -> None:
    out = io.StringIO()
    summary = asyncio.run(run_demo(duration=3.0, link=link, console=Console(file=out, width=120)))
    last = summary["last"]
    assert summary["telemetry"] >= 4, out.getvalue()
    # the voltage step half way through reached the node and shows in its telemetry
    assert last[d.K_VOUT_COMMAND] == 11.0 and abs(last[d.K_READ_VOUT] - 11.0) < 0.01
    assert last[d.K_MODE] == d.MODE_CV
    assert sum(last[d.K_REJECTS]) == 0 and summary["host_rejects"] == 0
    assert "boot" in summary["events"]


def test_out_of_range_setpoint_refused_before_sending() -> None:
    hello = {d.K_MFR_VOUT_MAX: 14.0}
    with pytest.raises(ValueError, match="VOUT_COMMAND.*rating of 14.0 V"):
        check_outgoing(d.MSG_SETPOINT, {d.K_VOUT_COMMAND: 20.0, d.K_LEASE_MS: 1000}, hello)
    with pytest.raises(ValueError, match=r"LEASE_MS: range \(allowed 100..600000\)"):
        check_outgoing(d.MSG_SETPOINT, {d.K_VOUT_COMMAND: 12.0, d.K_LEASE_MS: 5}, hello)
    with pytest.raises(ValueError, match="VOUT_COMMAND: missing"):
        check_outgoing(d.MSG_SETPOINT, {d.K_LEASE_MS: 500}, hello)
    check_outgoing(d.MSG_SETPOINT, {d.K_VOUT_COMMAND: 12.0, d.K_LEASE_MS: 500}, hello)
