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
from rich.table import Table

from powerflow.api.app import create_app
from powerflow.link.transport import LinkAddress
from powerflow.manager import NodeManager
from powerflow.rack import Rack, RackError, load_rack
from powerflow.store import TelemetryStore

DEFAULT_PORT = 8470


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


def node_table(rows: list[dict[str, Any]], title: str) -> Table:
    t = Table(title=title)
    for col in ("node", "state", "mode", "Vout V", "Iout A", "P W", "T °C", "Ilim A", "faults",
                "lease ms", "rejects"):
        t.add_column(col, justify="right")

    def f(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    for r in rows:
        style = {"online": "", "lost": "red", "connecting": "yellow"}.get(r["state"], "")
        t.add_row(str(r["id"]), r["state"], r["mode"], f(r["vout"], ".3f"), f(r["iout"], ".2f"),
                  f(r["pout"], ".1f"), f(r["temperature"], ".1f"), f(r["iout_limit"], ".1f"),
                  f(r["faults"], "#06x"), f(r["lease_left_ms"], "d"), str(r["rejects"]),
                  style=style)
    return t


async def run_host(rack_path: str | Path, emulate: bool = False, duration: float | None = None,
                   port: int = DEFAULT_PORT, db: str | Path | None = None, start: bool = True,
                   console: Console | None = None) -> dict[str, Any]:
    console = console or Console(width=max(110, Console().width))
    rack = load_rack(rack_path)
    emu = None
    if emulate:
        from powerflow.emulator.rack_emulator import EmulatedRack

        emu = EmulatedRack(rack)
        addresses = emu.start()
    else:
        addresses = node_addresses(rack)
    db = db or Path(os.environ.get("POWERFLOW_DB", f"{rack.name}-telemetry.sqlite3"))
    store = TelemetryStore(db)
    manager = NodeManager(rack, addresses, store)
    if start:
        for b in rack.branches:
            if b.port is not None and b.closed:
                manager.nodes[b.port[0]].ports[b.port[1]] = True
        for ns in manager.nodes.values():
            ns.vout = rack.bus_voltage
    manager.start()
    server = uvicorn.Server(uvicorn.Config(create_app(manager, store, emu), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="off"))
    server_task = asyncio.create_task(server.serve())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    url = f"http://127.0.0.1:{port}"
    console.print(f"PowerFlow host for rack [bold]{rack.name}[/] ({len(rack.nodes)} nodes"
                  f"{', emulated' if emu else ''}); API at {url}; telemetry in {db}")
    t0 = time.monotonic()
    try:
        with Live(node_table(manager.snapshot(), rack.name), console=console,
                  refresh_per_second=2, transient=False) as live:
            while not stop.is_set():
                if duration is not None and time.monotonic() - t0 >= duration:
                    break
                if server_task.done():
                    raise RuntimeError(f"the API server stopped: port {port} in use?")
                live.update(node_table(manager.snapshot(), f"{rack.name}, "
                                       f"{time.monotonic() - t0:.0f} s, {store.acked} rows stored"))
                try:
                    await asyncio.wait_for(stop.wait(), 0.5)
                except TimeoutError:
                    pass
        return {"nodes": manager.snapshot(), "stored": store.acked}
    finally:
        server.should_exit = True
        await asyncio.gather(server_task, return_exceptions=True)
        await manager.stop()
        store.close()
        if emu is not None:
            emu.stop()
