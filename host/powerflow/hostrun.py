"""`powerflow run`: the host controller's main job.

Loads the rack file, starts the emulated rack when asked (`--emulate`), runs the node
manager (links, sessions, leases, telemetry into SQLite) and the HTTP API on
127.0.0.1, brings the rack up (ties in their normal state, every converter at the
bus voltage) unless told not to, and shows the nodes live.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from rich.console import Console
from rich.live import Live

from powerflow.api.app import create_app
from powerflow.api.auth import AuthConfigError, Tokens
from powerflow.api.sessions import DEFAULT_MAX_SESSIONS, DEFAULT_TIMEOUT_S
from powerflow.emulator.faults import Fault
from powerflow.emulator.workloads import JobPlan
from powerflow.ui import DEFAULT_PORT, node_table
from powerflow.link.transport import LinkAddress
from powerflow.manager import NodeManager
from powerflow.control.policy import load_rack_checked
from powerflow.logs import kv
from powerflow.model.rack import Rack, RackError
from powerflow.process import StopDeadline, default_db, listen, state_dir
from powerflow.service import HostService, ServiceError
from powerflow.store import TelemetryStore


class OptionsError(ValueError):
    """API options that do not fit together (said as a usage error)."""


def load_tokens(path: Path) -> Tokens:
    """The API's token file (see `api.auth.Tokens`); OptionsError names what is wrong."""
    try:
        return Tokens.load(path)
    except AuthConfigError as e:
        raise OptionsError(str(e)) from None


def is_loopback(addr: str) -> bool:
    if addr == "localhost":
        return True
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


@dataclass(frozen=True)
class SiteOptions:
    """Under a site controller (`--site mqtt://HOST:PORT/SITE`): the broker, the site's
    name, this rack's client id (its MQTT user name) and the site period (s)."""

    addr: Any  # powerflow.site.mqtt.BrokerAddress
    site: str
    client: str
    period_s: float = 2.0


@dataclass(frozen=True)
class ApiOptions:
    """How the API is served: who may call it (tokens), where (bind), over what (TLS), and
    the Redfish session limits."""

    tokens: Tokens | None = None
    bind: str = "127.0.0.1"
    tls_cert: str | None = None
    tls_key: str | None = None
    insecure_http: bool = False
    session_timeout_s: float = DEFAULT_TIMEOUT_S
    max_sessions: int = DEFAULT_MAX_SESSIONS

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def check(self) -> None:
        """Refuse combinations that would expose the rack; load the certificate once so a
        bad one is said now, not by the server thread."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise OptionsError("--tls-cert and --tls-key go together")
        if self.tls:
            try:
                ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                    str(self.tls_cert), str(self.tls_key))
            except (OSError, ssl.SSLError) as e:
                raise OptionsError(f"--tls-cert/--tls-key: cannot load the certificate and "
                                   f"key: {e}") from None
        if not is_loopback(self.bind):
            if self.tokens is None:
                raise OptionsError("--bind to a non-loopback address needs --tokens: the API "
                                   "would be open to the network")
            if not self.tls and not self.insecure_http:
                raise OptionsError("--bind to a non-loopback address needs --tls-cert and "
                                   "--tls-key (or --insecure-http, which sends tokens in "
                                   "clear text)")


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


log = logging.getLogger("powerflow.host")
node_log = logging.getLogger("powerflow.node")
control_log = logging.getLogger("powerflow.control")
STATUS_EVERY_S = 60.0  # without a terminal: a status line this often (the log's heartbeat)
# node events an operator must act on: a link that cannot open or was lost, latched faults
NODE_WARNINGS = {"link-error", "lost", "fault", "failsafe"}


async def _script(svc: HostService, faults: list[tuple[float, Fault]], t0: float) -> None:
    """Apply scripted faults at their times (seconds after the host started)."""
    for at_s, f in faults:
        await asyncio.sleep(max(0.0, t0 + at_s - time.monotonic()))
        try:
            svc.inject_fault(f)
            log.warning(kv(event="fault-injected", t_s=f"{at_s:.1f}", kind=f.kind,
                           node=f.node if f.node else "-"))
        except ServiceError as e:
            log.error(kv(event="fault-not-applied", t_s=at_s, why=e))


def _log_node_event(ev: dict[str, Any]) -> None:
    level = logging.WARNING if ev["kind"] in NODE_WARNINGS else logging.INFO
    node_log.log(level, kv(node=ev["node"], event=ev["kind"], detail=ev["detail"]))


async def run_host(rack_path: str | Path, emulate: bool = False, duration: float | None = None,
                   port: int = DEFAULT_PORT, db: str | Path | None = None, start: bool = True,
                   live: bool = False, telemetry_ms: int = 500,
                   faults: list[tuple[float, Fault]] | None = None, control: bool = True,
                   api: ApiOptions | None = None,
                   physics_log: str | Path | None = None, sock: socket.socket | None = None,
                   state: str | Path | None = None,
                   site: SiteOptions | None = None,
                   deadline: StopDeadline | None = None,
                   jobs: JobPlan | None = None) -> dict[str, Any]:
    """Run the host until `duration` s have passed (None: forever) or SIGINT/SIGTERM. `sock`
    is the API's listening socket if the caller bound it already (the CLI binds it before
    anything else, so a port in use fails at once); `state` the state directory (see
    `process.state_dir`) where the database goes unless `db` names one. With `live` the
    nodes are drawn as a table on stdout (a terminal) and the log lines go above it; without,
    the log (stderr) has a status line every STATUS_EVERY_S. Whatever was started is
    stopped again on every way out, errors included; `deadline`, if given, is armed as the
    stop begins (the caller disarms it once the process may end). `jobs`: the emulated
    rack's devices follow a scenario's jobs, not their traces."""
    api = api or ApiOptions()
    api.check()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # from the start: a stop while starting counts
        loop.add_signal_handler(sig, stop.set)
    console = Console(width=max(110, Console().width)) if live else None
    if console is not None:  # log lines above the live table, not through it
        from rich.logging import RichHandler

        root = logging.getLogger("powerflow")
        root.handlers[:] = [RichHandler(console=console, show_path=False, markup=False)]
    rack = load_rack_checked(rack_path)
    async with contextlib.AsyncExitStack() as up:
        sock = sock or listen(api.bind, port)
        up.callback(sock.close)
        emu = None
        if emulate:
            from powerflow.emulator.rack_service import RackService

            emu = RackService(rack, log_path=physics_log, jobs=jobs)
            up.callback(emu.stop)
            addresses = emu.start()
        else:
            addresses = node_addresses(rack)
        db = db or os.environ.get("POWERFLOW_DB") or default_db(rack.name, emu is not None,
                                                               state_dir(state))
        store = TelemetryStore(db)
        up.callback(store.close)
        manager = NodeManager(rack, addresses, store, telemetry_ms=telemetry_ms)
        manager.on_event = _log_node_event
        if start:
            for b in rack.branches:
                if b.port is not None and b.closed:
                    manager.nodes[b.port[0]].ports[b.port[1]] = True
            for ns in manager.nodes.values():
                # nominal until the first plan: a soft-start into an unloaded bus may run up
                # to 1.6 % over its reference (pfnode/control.py), and the safe output's rise
                # on top of that left the small rack's boot at 12.47 V, over its band (measured)
                ns.vout = rack.bus_voltage
        manager.start()
        up.push_async_callback(manager.stop)
        loop_, io = None, None
        if control and start:
            loop_, io = _start_control(rack, manager, store, emu)
            up.push_async_callback(io.close)
            up.push_async_callback(loop_.stop)
            if site is not None:
                up.callback(_join_site(rack, loop_, io, site, stop).cancel)
        svc = HostService(manager, store, control=loop_, emulator=emu,
                          agents=io.agents if io is not None else None)
        app = create_app(svc, api.tokens, session_timeout_s=api.session_timeout_s,
                         max_sessions=api.max_sessions)
        server = uvicorn.Server(uvicorn.Config(app, host=api.bind, port=port,
                                               log_level="warning", lifespan="off",
                                               ssl_certfile=api.tls_cert,
                                               ssl_keyfile=api.tls_key,
                                               # a request still running at a stop (a
                                               # slow client) gets this long, no more
                                               timeout_graceful_shutdown=5))
        server_task = asyncio.create_task(server.serve(sockets=[sock]))

        async def stop_server() -> None:
            server.should_exit = True
            await asyncio.gather(server_task, return_exceptions=True)

        up.push_async_callback(stop_server)
        shown = "127.0.0.1" if api.bind in ("127.0.0.1", "0.0.0.0") else api.bind
        url = f"{api.scheme}://{shown}:{port}"
        log.info(kv(event="started", rack=rack.name, nodes=len(rack.nodes),
                    emulated=emu is not None, api=f"{url}/api/v1", dashboard=f"{url}/",
                    metrics=f"{url}/metrics", db=db))
        t0 = time.monotonic()
        if faults and emu is not None:
            script = asyncio.create_task(_script(svc, faults, t0))
            up.callback(script.cancel)
        view = (Live(node_table(manager.snapshot(), rack.name), console=console,
                     refresh_per_second=2, transient=False)
                if console is not None else contextlib.nullcontext())
        next_status = t0 + STATUS_EVERY_S
        with view as live_view, _armed_on_exit(deadline):
            while not stop.is_set():
                now = time.monotonic()
                if duration is not None and now - t0 >= duration:
                    break
                if server_task.done():
                    raise RuntimeError("the API server stopped")
                title = _title(svc, rack.name, t0, store.acked)
                if live_view is not None:
                    live_view.update(node_table(svc.nodes(), title))
                elif now >= next_status:
                    next_status += STATUS_EVERY_S
                    log.info(kv(event="status", **_status(svc)))
                try:
                    await asyncio.wait_for(stop.wait(), 0.5)
                except TimeoutError:
                    pass
        log.info(kv(event="stopping", after_s=f"{time.monotonic() - t0:.1f}",
                    why="signal" if stop.is_set() else "duration"))
        return {"nodes": manager.snapshot(), "stored": store.acked}
    raise AssertionError("unreachable")  # the exit stack does not swallow exceptions


@contextlib.contextmanager
def _armed_on_exit(deadline: StopDeadline | None) -> Iterator[None]:
    """Arm `deadline` however the run's main loop is left (signal, duration or error)."""
    try:
        yield
    finally:
        if deadline is not None:
            deadline.arm()


def _start_control(rack: Rack, manager: NodeManager, store: TelemetryStore, emu: Any
                   ) -> tuple[Any, Any]:
    """The control loop over the boards (or the emulated rack) and their device sources."""
    from powerflow.adapters.boards import BoardsIO
    from powerflow.adapters.devices import EmulatorDevices, PrometheusDevices, Scrape
    from powerflow.control.alarms import Event
    from powerflow.control.allocate import Allocation
    from powerflow.control.controller import RackController
    from powerflow.control.loop import ControlLoop

    scrapes = [Scrape(dv.id, dv.exporter, dv.exporter_kind, dv.gpu)
               for dv in rack.devices if dv.exporter]
    io = BoardsIO(manager, EmulatorDevices(emu) if emu is not None else None,
                  scraper=PrometheusDevices(scrapes) if scrapes else None)

    def record(events: list[Event]) -> None:
        for ev in events:
            store.event(ev.t, ev.node, ev.kind, ev.detail)
            control_log.info(kv(event=ev.kind, node=ev.node if ev.node is not None else "-",
                                detail=ev.detail))

    def keep(a: Allocation) -> None:
        """The period's measured and predicted values, for the dashboard's history."""
        for dev, v in a.devices.items():
            store.add_series(dev, a.t, {k: v[k] for k in ("measured_w", "forecast_w", "p95_w",
                                                          "cap_w") if v.get(k) is not None})
        m = a.measured or {}
        store.add_series("rack", a.t, {f"bus_{k}": m[k] for k in ("vmin", "vmax")
                                       if m.get(k) is not None})

    loop_ = ControlLoop(io, RackController(rack), on_events=record, on_period=keep)
    loop_.start()
    return loop_, io


def _join_site(rack: Rack, loop_: Any, io: Any, site: SiteOptions,
               stop: asyncio.Event) -> asyncio.Task[None]:
    """Put the rack under the site controller: its allocator obeys the budget lease (the
    rack file's safe budget until the first arrives) and the agent reports every site
    period what the rack measures and forecasts."""
    from powerflow.site.agent import SiteAgent, rack_demand

    budget = loop_.ctrl.join_site()
    agent = SiteAgent(site.addr, site.site, site.client, budget,
                      lambda now: rack_demand(rack, loop_.ctrl.last, io.feed_w()),
                      site.period_s)
    log.info(kv(event="site", broker=f"{site.addr.host}:{site.addr.port}", site=site.site,
                client=site.client, floor_w=budget.floor_w, safe_budget_w=budget.safe_w))
    return asyncio.create_task(agent.run(stop))


def _status(svc: HostService) -> dict[str, Any]:
    """The status line's facts, as measured: links online, converters on, alarms."""
    nodes = svc.nodes()
    out: dict[str, Any] = {"online": f"{sum(1 for n in nodes if n['state'] == 'online')}/"
                                     f"{len(nodes)}"}
    a = svc.allocation()
    if a is not None:
        out["state"] = a.state
        out["converters_on"] = sum(1 for v in a.vref.values() if v is not None)
    out["alarms"] = ",".join(al.kind for al in svc.alarms()) or "none"
    return out


def _title(svc: HostService, name: str, t0: float, stored: int) -> str:
    """The console's heading: run time, rows stored, what the control loop did, the alarms."""
    title = f"{name}, {time.monotonic() - t0:.0f} s, {stored} rows stored"
    a = svc.allocation()
    if a is None:
        return title
    capped = sum(1 for c in a.caps.values() if c is not None)
    loss = a.predicted["loss_conversion_w"] + a.predicted["loss_distribution_w"]
    title += (f"\ncontrol: {sum(1 for v in a.vref.values() if v is not None)}/{len(a.vref)} "
              f"converters on, predicted loss {loss:.1f} W, {capped} device(s) capped, "
              f"{a.elapsed_ms:.1f} ms/cycle; state {a.state.upper()}"
              f"{', SAFE ALLOCATION' if a.fallback else ''}")
    alarms = svc.alarms()
    if alarms:
        title += "\nALARMS: " + "; ".join(
            f"{al.severity} {al.kind}" + (f" node {al.node}" if al.node is not None else "")
            for al in alarms[:4])
    return title
