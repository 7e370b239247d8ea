"""A rack under the site, emulated: one process per rack for `powerflow site run --emulate`.

The rack file's rack runs in fast mode (the node firmware in-process on the rack physics, as
`powerflow scenario run` runs it) paced to the wall clock: each control period one period of
rack time, then the rack controller decides (forecast, allocate, dispatch) on what the
physics measured. The controller has joined the site (`RackController.join_site`), so its
allocator obeys the site's budget lease as a feed limit, and falls to the rack file's safe
budget without one; the site agent reports what the rack measured at its feed and what it
forecasts per priority. So the site sees racks that draw what a rack controller under its
lease lets them, not a trace.

    python -m powerflow.site.emulated RACK.toml --broker URL --site NAME --client ID \\
        --password-file FILE [--period S] [--seed N] [--load-scale X]

It logs a status line (`key=value`) every `STATUS_EVERY` periods and each alarm the rack
controller raises, and stops on SIGTERM or SIGINT. Units: W, s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time

from powerflow.control.policy import load_rack_checked, rack_policy
from powerflow.logs import kv
from powerflow.model.rack import RackError
from powerflow.scenario.runner import ScenarioRun
from powerflow.scenario.spec import Scenario
from powerflow.site.agent import SiteAgent, rack_demand
from powerflow.site.mqtt import AddressError, BrokerAddress

log = logging.getLogger("powerflow.site.rack")
STATUS_EVERY = 10  # periods between status lines


def build(rack_path: str, seed: int = 0, load_scale: float = 1.0) -> ScenarioRun:
    """The rack of `rack_path` in fast mode under its own controller, joined to a site."""
    rack = load_rack_checked(rack_path)
    policy, _ = rack_policy(rack)
    sc = Scenario(name=rack.name, rack=rack, duration_s=float("inf"), period_s=policy.period_s,
                  seed=seed, load_scale=load_scale, trace_speed=1.0, ambient_c=25.0,
                  policy=policy, path=str(rack_path))
    run = ScenarioRun(sc, "controlled")
    assert run.ctrl is not None
    run.ctrl.join_site()
    return run


async def serve(run: ScenarioRun, agent: SiteAgent, stop: asyncio.Event) -> int:
    """Step the rack in time with the wall clock until `stop`; the periods run."""
    ctrl = run.ctrl
    assert ctrl is not None and ctrl.site is not None
    period = run.sc.period_s
    task = asyncio.create_task(agent.run(stop))
    run.start()
    t0, p = time.monotonic(), 0
    seen: set[str] = set()
    try:
        while not stop.is_set():
            # the firmware and the allocator are CPU work: off the loop, so budgets are
            # taken and acknowledged while a period runs
            alloc = await asyncio.to_thread(run.step, p, time.time())
            p += 1
            now = time.time()
            active = {a.kind for a in ctrl.alarms.listing()}
            for kind in sorted(active - seen):
                log.warning(kv(event="alarm", kind=kind))
            seen = active
            if p % STATUS_EVERY == 0 and alloc is not None:
                log.info(kv(event="status", period=p, feed_w=f"{run.io.feed_w():.1f}",
                            limit_w=f"{ctrl.site.limit_w(now):.1f}",
                            lease=ctrl.site.valid(now), state=alloc.state))
            wait = t0 + p * period - time.monotonic()
            if wait < -period:  # more than a period behind (a starved machine): no burst
                t0 = time.monotonic() - p * period
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(wait, 0.0))
    finally:
        stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m powerflow.site.emulated",
                                 description="an emulated rack (fast mode) under a site")
    ap.add_argument("rack", help="rack file (.toml)")
    ap.add_argument("--broker", required=True, metavar="URL", help="mqtt://HOST:PORT")
    ap.add_argument("--site", required=True, metavar="NAME", help="the site's name")
    ap.add_argument("--client", required=True, metavar="ID", help="this rack's client id")
    ap.add_argument("--password-file", required=True, metavar="FILE",
                    help="file holding the client's MQTT password")
    ap.add_argument("--period", type=float, default=2.0, metavar="S",
                    help="how often to report to the site (s, default 2)")
    ap.add_argument("--seed", type=int, default=0, metavar="N", help="the physics' seed")
    ap.add_argument("--load-scale", type=float, default=1.0, metavar="X",
                    help="multiplies every device's demand (default 1)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run = build(args.rack, args.seed, args.load_scale)
        addr = BrokerAddress.parse(args.broker, args.client, args.password_file)
    except (RackError, AddressError, ValueError) as e:
        print(f"powerflow: error: {e}", file=sys.stderr)
        return 2
    assert run.ctrl is not None and run.ctrl.site is not None
    agent = SiteAgent(addr, args.site, args.client, run.ctrl.site,
                      lambda now: rack_demand(run.sc.rack, run.ctrl.last  # type: ignore[union-attr]
                                              if run.ctrl is not None else None,
                                              run.io.feed_w()), args.period)

    async def go() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info(kv(event="started", rack=run.sc.rack.name, client=args.client,
                    period_s=run.sc.period_s, floor_w=run.ctrl.site.floor_w,  # type: ignore[union-attr]
                    safe_budget_w=run.ctrl.site.safe_w))  # type: ignore[union-attr]
        return await serve(run, agent, stop)

    periods = asyncio.run(go())
    log.info(kv(event="stopped", periods=periods))
    return 0


if __name__ == "__main__":
    sys.exit(main())
