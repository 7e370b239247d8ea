"""`powerflow run`: the host controller's main job.

Loads the rack file, starts the emulated rack when asked (`--emulate`), runs the node
manager (links, sessions, leases, telemetry into SQLite) and the HTTP API on
127.0.0.1, brings the rack up (ties in their normal state, every converter at the
bus voltage) unless told not to, and shows the nodes live.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import uvicorn
from rich.console import Console
from rich.live import Live

from powerflow.api.app import create_app
from powerflow.ui import DEFAULT_PORT, node_table
from powerflow.link.transport import LinkAddress
from powerflow.manager import NodeManager
from powerflow.rack import Rack, RackError, load_rack
from powerflow.store import TelemetryStore



def node_addresses(rack: Rack) -> dict[int, LinkAddress]:
    """Where each node of a real (not emulated) rack is reached; RackError if not said."""
    out = {}
    for n in rack.nodes:
        if n.link in ("pty", "tcp"):
            raise RackError(f"{rack.path}: node {n.id}: link {n.link!r} names an emulated link; "
                            "give serial:DEVICE or tcp:HOST:PORT for a real rack, or use --emulate")
        try:
            out[n.id] = LinkAddress.parse(n.link)
        except ValueError as e:
            raise RackError(f"{rack.path}: node {n.id}: {e}") from None
    return out


async def _script(emu: Any, faults: list[dict[str, Any]], t0: float, console: Console) -> None:
    """Apply scripted faults at their times (seconds after the host started)."""
    from powerflow.emulator.faults import apply_fault

    for f in faults:
        await asyncio.sleep(max(0.0, t0 + f["at_s"] - time.monotonic()))
        try:
            apply_fault(emu, f)
            console.print(f"[yellow]t={f['at_s']:.1f} s: fault {f['kind']}"
                          f"{' on node ' + str(f['node']) if f.get('node') else ''}[/]")
        except ValueError as e:
            console.print(f"[red]fault at {f['at_s']} s not applied: {e}[/]")


async def run_host(rack_path: str | Path, emulate: bool = False, duration: float | None = None,
                   port: int = DEFAULT_PORT, db: str | Path | None = None, start: bool = True,
                   console: Console | None = None, telemetry_ms: int = 500,
                   faults: list[dict[str, Any]] | None = None, control: bool = True,
                   tokens: Any = None, bind: str = "127.0.0.1",
                   physics_log: str | Path | None = None) -> dict[str, Any]:
    console = console or Console(width=max(110, Console().width))
    rack = load_rack(rack_path)
    emu = None
    if emulate:
        from powerflow.emulator.rack_service import RackService

        emu = RackService(rack, log_path=physics_log)
        addresses = emu.start()
    else:
        addresses = node_addresses(rack)
    db = db or Path(os.environ.get("POWERFLOW_DB", f"{rack.name}-telemetry.sqlite3"))
    store = TelemetryStore(db)
    manager = NodeManager(rack, addresses, store, telemetry_ms=telemetry_ms)
    if start:
        for b in rack.branches:
            if b.port is not None and b.closed:
                manager.nodes[b.port[0]].ports[b.port[1]] = True
        for ns in manager.nodes.values():
            ns.vout = rack.bus_voltage
    manager.start()
    loop_ = None
    if control and start:
        from powerflow.control.controller import RackController
        from powerflow.control.devices import EmulatorDevices, PrometheusDevices, Scrape
        from powerflow.control.live import ControlLoop

        scrapes = [Scrape(dv.id, dv.exporter, dv.exporter_kind, dv.gpu)
                   for dv in rack.devices if dv.exporter]
        loop_ = ControlLoop(manager, RackController(rack),
                            EmulatorDevices(emu) if emu is not None else None,
                            scraper=PrometheusDevices(scrapes) if scrapes else None)
        loop_.start()
    server = uvicorn.Server(uvicorn.Config(create_app(manager, store, emu, loop_, tokens),
                                           host=bind,
                                           port=port, log_level="warning", lifespan="off"))
    server_task = asyncio.create_task(server.serve())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    url = f"http://{'127.0.0.1' if bind in ('127.0.0.1', '0.0.0.0') else bind}:{port}"
    console.print(f"PowerFlow host for rack [bold]{rack.name}[/] ({len(rack.nodes)} nodes"
                  f"{', emulated' if emu else ''}); API at {url}/api/v1; telemetry in {db}")
    console.print(f"Dashboard: [bold]{url}/[/]   Prometheus metrics: {url}/metrics")
    t0 = time.monotonic()
    if faults and emu is not None:
        asyncio.create_task(_script(emu, faults, t0, console))
    try:
        with Live(node_table(manager.snapshot(), rack.name), console=console,
                  refresh_per_second=2, transient=False) as live:
            while not stop.is_set():
                if duration is not None and time.monotonic() - t0 >= duration:
                    break
                if server_task.done():
                    raise RuntimeError(f"the API server stopped: port {port} in use?")
                title = f"{rack.name}, {time.monotonic() - t0:.0f} s, {store.acked} rows stored"
                if loop_ is not None and loop_.ctrl.last is not None:
                    a = loop_.ctrl.last
                    capped = sum(1 for c in a.caps.values() if c is not None)
                    title += (f"\ncontrol: {sum(1 for v in a.vref.values() if v is not None)}/"
                              f"{len(a.vref)} converters on, predicted loss "
                              f"{a.predicted['loss_conversion_w'] + a.predicted['loss_distribution_w']:.1f} W,"
                              f" {capped} device(s) capped, {a.elapsed_ms:.1f} ms/cycle;"
                              f" state {a.state.upper()}"
                              f"{', SAFE ALLOCATION' if a.fallback else ''}")
                    alarms = loop_.ctrl.alarms.listing()
                    if alarms:
                        title += f"\nALARMS: " + "; ".join(
                            f"{al.severity} {al.kind}"
                            + (f" node {al.node}" if al.node is not None else "")
                            for al in alarms[:4])
                rows = manager.snapshot()
                if loop_ is not None:
                    rows = [{**r, **loop_.ctrl.exclusion(r["id"])} for r in rows]
                live.update(node_table(rows, title))
                try:
                    await asyncio.wait_for(stop.wait(), 0.5)
                except TimeoutError:
                    pass
        return {"nodes": manager.snapshot(), "stored": store.acked}
    finally:
        server.should_exit = True
        await asyncio.gather(server_task, return_exceptions=True)
        if loop_ is not None:
            await loop_.stop()
        await manager.stop()
        store.close()
        if emu is not None:
            emu.stop()
