"""`powerflow site run`: a site controller (active or standby) and its read-only web service;
with `--emulate`, its own Mosquitto and the racks too: each rack with a rack file a process
of its own (`powerflow.site.emulated`: the rack in fast mode under its own rack controller,
obeying its lease), each rack without one a stand-in that speaks the site protocol over a
demand trace."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import uvicorn

from powerflow.logs import kv
from powerflow.model.site import Site, load_site
from powerflow.process import StopDeadline
from powerflow.site.agent import SiteAgent
from powerflow.site.broker import Mosquitto
from powerflow.site.controller import SiteController
from powerflow.site.mqtt import BrokerAddress
from powerflow.site.standin import StandIn, diurnal
from powerflow.site.web import create_site_app

log = logging.getLogger("powerflow.site")
DEFAULT_SITE_PORT = 8480


async def run_site(site_path: str | Path, addr: BrokerAddress | None, cid: str,
                   emulate: bool = False, duration: float | None = None,
                   sock: socket.socket | None = None, period_s: float | None = None,
                   deadline: StopDeadline | None = None) -> dict[str, Any]:
    """Run until `duration` s (None: until SIGINT/SIGTERM). Without `addr`, `emulate` starts
    a broker of its own (with generated passwords and the site's ACL). `deadline`, if
    given, is armed as the stop begins (the caller disarms it once the process may end)."""
    site: Site = load_site(site_path)
    if period_s is not None:
        site = replace(site, policy=replace(site.policy, period_s=period_s,
                                            lease_s=max(site.policy.lease_s * period_s
                                                        / site.policy.period_s, period_s)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as up:
        tasks: list[asyncio.Task[None]] = []
        standins: list[StandIn] = []
        if addr is None:
            tmp = Path(up.enter_context(tempfile.TemporaryDirectory(prefix="pf-site-")))
            broker = Mosquitto(tmp, site.name, [cid], [r.client for r in site.racks])
            broker.start()
            up.callback(broker.close)
            addr = BrokerAddress.parse(broker.url, cid, str(broker.password_file(cid)))
            log.info(kv(event="broker", url=broker.url, logs=str(tmp)))
            if emulate:
                racks: list[subprocess.Popen[bytes]] = []
                up.callback(_stop_processes, racks)  # all told at once, then waited for
                for k, r in enumerate(site.racks):
                    if r.rack_file is not None:
                        racks.append(_start_rack(r.rack_file, broker, site.name, r.client,
                                                 site.policy.period_s, k, tmp))
                        continue
                    s = StandIn(r, diurnal(0.75, 0.2, 60.0, phase=k))
                    standins.append(s)
                    ra = BrokerAddress.parse(broker.url, r.client,
                                             str(broker.password_file(r.client)))
                    agent = SiteAgent(ra, site.name, r.client, s.budget, s.demand,
                                      site.policy.period_s)
                    tasks.append(asyncio.create_task(agent.run(stop)))
        ctrl = SiteController(site, addr, cid)
        tasks.append(asyncio.create_task(ctrl.run(stop)))
        server = None
        if sock is not None:
            server = uvicorn.Server(uvicorn.Config(create_site_app(ctrl), log_level="warning",
                                                   lifespan="off", timeout_graceful_shutdown=5))
            tasks.append(asyncio.create_task(server.serve(sockets=[sock])))
            host, port = sock.getsockname()[:2]
            log.info(kv(event="started", site=site.name, controller=cid, racks=len(site.racks),
                        api=f"http://{host}:{port}/api/v1/site", dashboard=f"http://{host}:{port}/",
                        metrics=f"http://{host}:{port}/metrics"))
        t0 = time.monotonic()
        try:
            while not stop.is_set():
                if duration is not None and time.monotonic() - t0 >= duration:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
        finally:
            stop.set()
            if deadline is not None:
                deadline.arm()
            if server is not None:
                server.should_exit = True
            for t in tasks[:-1] if server is not None else tasks:
                t.cancel()  # the MQTT sessions wait on the broker: cancel, do not wait
            await asyncio.gather(*tasks, return_exceptions=True)
        return ctrl.tree_state()
    raise AssertionError("unreachable")


def _start_rack(rack_file: str, broker: Mosquitto, site: str, client: str, period_s: float,
                seed: int, logdir: Path) -> subprocess.Popen[bytes]:
    """An emulated rack under the site: a process of its own, logging to `logdir`."""
    out = (logdir / f"{client}.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "powerflow.site.emulated", rack_file, "--broker", broker.url,
         "--site", site, "--client", client,
         "--password-file", str(broker.password_file(client)), "--period", str(period_s),
         "--seed", str(seed)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True)
    out.close()
    log.info(kv(event="rack-started", client=client, rack=rack_file, pid=proc.pid,
                log=str(logdir / f"{client}.log")))
    return proc


def _stop_processes(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to every process group at once, then SIGKILL to any that has not ended
    within 5 s of it: the stop takes the slowest rack's time, not the sum of them all."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    until = time.monotonic() + 5.0
    for proc in procs:
        try:
            proc.wait(max(0.0, until - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
