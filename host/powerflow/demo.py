"""`powerflow demo-node`: one emulated node under the host, its telemetry decoded live.

The node is the real firmware in a MicroPython process on the `sim` HAL; the
host reaches it over a pty cable with pyserial (or loopback TCP), opens a keyed
session, soft-starts the output, renews the setpoint lease every second, steps
the voltage half way through and switches the output off at the end.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from rich.console import Console

from pfproto import defs as d
from pfproto.names import EV_NAMES, MODE_NAMES
from powerflow.emulator.node_process import NodeProcess
from powerflow.emulator.ptybridge import PtyBridge
from powerflow.emulator.rack_emulator import free_port
from powerflow.link.session import NodeSession
from powerflow.link.transport import LinkAddress, open_link
from powerflow.nodeconfig import LEASE_MS


async def _connect(addr: LinkAddress, node: NodeProcess, timeout: float = 10.0) -> Any:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        try:
            return await open_link(addr)
        except OSError:
            if loop.time() > end or not node.alive():
                raise
            await asyncio.sleep(0.05)  # the node is still booting and not yet listening


HEADER = ("   t s  mode       cmd V  Vout V  Iout A  Pout W  Tconv°C  Tamb°C  RH%  "
          "status  Ilim A  lease ms")


def _row(t: float, b: dict[int, Any]) -> str:
    return (f"{t:6.2f}  {MODE_NAMES.get(b[d.K_MODE], '?'):9s} {b[d.K_VOUT_COMMAND]:6.2f} "
            f"{b[d.K_READ_VOUT]:7.3f} {b[d.K_READ_IOUT]:7.2f} {b[d.K_READ_POUT]:7.1f} "
            f"{b[d.K_READ_TEMPERATURE_1]:8.1f} {b[d.K_READ_TEMPERATURE_3]:7.1f} "
            f"{b[d.K_READ_HUMIDITY]:4.0f}  0x{b[d.K_STATUS_WORD]:04x} {b[d.K_IOUT_LIMIT]:7.1f} "
            f"{b[d.K_LEASE_LEFT_MS]:9d}")


async def run_demo(duration: float = 10.0, link: str = "pty", console: Console | None = None,
                   vout: float = 12.0) -> dict[str, Any]:
    """Run the demo; returns a summary (frames, rejects, last telemetry) for tests and scripts."""
    console = console or Console(width=max(110, Console().width))
    key = os.urandom(32)
    bridge = PtyBridge() if link == "pty" else None
    port = free_port()
    conf = {"node_id": 1, "key": key.hex(), "hal": "sim",
            "link": f"pty:{bridge.node_path}" if bridge else f"tcp:127.0.0.1:{port}",
            "ratings": {"vout_max": 14.0, "iout_max": 50.0, "board": "sim"},
            "sim": {"load_ohm": 0.6, "ambient_c": 27.0, "humidity": 45.0}}
    node = NodeProcess(conf)
    node.start()
    addr = LinkAddress("serial", bridge.host_path, 1_000_000) if bridge else \
        LinkAddress("tcp", "127.0.0.1", port)
    console.print(f"node 1: real firmware on MicroPython (sim HAL), link {addr}")
    summary: dict[str, Any] = {"telemetry": 0, "events": []}
    session: NodeSession | None = None
    try:
        reader, writer = await _connect(addr, node)
        session = NodeSession(reader, writer, key=key)
        hello = await session.wait_hello()
        console.print(f"HELLO: node {hello[d.K_NODE_ID]}, firmware {hello[d.K_FW_VERSION]}, "
                      f"{hello[d.K_MFR_VOUT_MAX]} V / {hello[d.K_MFR_IOUT_MAX]} A, "
                      f"keyed={hello[d.K_KEYED]}, {hello[d.K_PORTS]} ports")
        sid = await session.open_session()
        console.print(f"session 0x{sid:04x} open (HMAC-SHA256 tags, fresh counters)")
        await session.command(d.MSG_CONFIG, {d.K_TELEMETRY_PERIOD_MS: 500,
                                             d.K_HEARTBEAT_TIMEOUT_MS: 2000})
        console.print(HEADER, style="bold")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        next_lease = t0
        cmd = vout
        stepped = False
        while (now := loop.time()) - t0 < duration:
            if now >= next_lease:
                if not stepped and now - t0 > duration / 2:
                    cmd, stepped = vout - 1.0, True
                await session.command(d.MSG_SETPOINT, {d.K_VOUT_COMMAND: cmd, d.K_LEASE_MS: LEASE_MS})
                session.heartbeat(int((now - t0) * 1000))
                next_lease = now + 1.0
            try:
                rx = await asyncio.wait_for(session.inbox.get(), 0.2)
            except TimeoutError:
                continue
            if rx.frame.type == d.MSG_TELEMETRY:
                summary["telemetry"] += 1
                summary["last"] = rx.frame.body
                console.print(_row(rx.t - t0, rx.frame.body), highlight=False)
            elif rx.frame.type == d.MSG_EVENT:
                ev = EV_NAMES.get(rx.frame.body[d.K_EVENT], "?")
                summary["events"].append(ev)
                console.print(f"{rx.t - t0:6.2f}  event: {ev}", style="yellow")
        await session.command(d.MSG_SETPOINT, {d.K_VOUT_COMMAND: 0.0, d.K_LEASE_MS: LEASE_MS,
                                               d.K_OPERATION: False})
        summary["host_rejects"] = sum(session.decoder.rejects)
        last = summary.get("last")
        if last:
            console.print(f"{summary['telemetry']} telemetry frames; node rejected "
                          f"{sum(last[d.K_REJECTS])} frames, host rejected "
                          f"{summary['host_rejects']}. Output switched off.")
        return summary
    finally:
        if session is not None:
            await session.close()
        node.close()
        if bridge is not None:
            bridge.close()
