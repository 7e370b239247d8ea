"""Site tier figures: allocation time for 100, 1,000 and 10,000 racks (in-process, p50/p99 of
the whole period's work: allocate + break-before-make dispatch), and over a real Mosquitto
the budget message rate a site controller sustains and the failover time after the active
controller is SIGKILLed (whole processes as a user runs them), and the reaction from a
demand surge in one rack to new budgets in its neighbours (the row-surge site scenario: a
real broker, controllers as processes, stand-ins), in s and in site periods.

    .venv/bin/python bench/bench_site.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from powerflow.model.site import load_site, parse_site
from powerflow.site.agent import SiteAgent
from powerflow.site.allocate import allocate, compile_tree, dispatch
from powerflow.site.broker import Mosquitto
from powerflow.site.mqtt import BrokerAddress
from powerflow.site.standin import StandIn, diurnal

ROOT = Path(__file__).resolve().parents[1]


def big_site(n_racks: int) -> dict:
    """utility -> 2 switchboards -> PDUs of 20 racks (Dynamo-like), three classes."""
    n_pdu = max(n_racks // 20, 1)
    raw: dict = {"site": {"name": "bench", "hysteresis_w": 20.0},
                 "class": [{"name": "hi", "priorities": [1, 2, 3]},
                           {"name": "mid", "priorities": [4, 5, 6]},
                           {"name": "lo", "priorities": [7, 8, 9, 10]}],
                 "feed": [{"id": "utility", "limit_w": 2.2e3 * n_racks}], "breaker": [], "rack": []}
    for s in range(2):
        raw["breaker"].append({"id": f"sb{s}", "parent": "utility", "limit_w": 1.3e3 * n_racks})
    for p in range(n_pdu):
        raw["breaker"].append({"id": f"pdu{p}", "parent": f"sb{p % 2}", "limit_w": 45e3})
    for r in range(n_racks):
        raw["rack"].append({"id": f"r{r}", "parent": f"pdu{r % n_pdu}", "client": f"c{r}",
                            "feed_limit_w": 3000.0, "floor_w": 500.0})
    return raw


def bench_allocation(n_racks: int, periods: int) -> tuple[float, float]:
    site = parse_site(big_site(n_racks))
    tree = compile_tree(site)
    rng = np.random.default_rng(1)
    floor = np.array([r.floor_w for r in site.racks])
    p95 = rng.uniform(0, 1200, size=(n_racks, 3))
    prev = committed = None
    times = []
    for _ in range(periods):
        p95 = np.clip(p95 * rng.uniform(0.9, 1.1, size=p95.shape), 0, 1200)
        mn = p95 * 0.3
        t0 = time.perf_counter()
        a = allocate(tree, tree.limit_w, floor, mn, p95, "headroom", prev, 20.0)
        send = dispatch(tree, tree.limit_w, a.budget_w,
                        a.budget_w if committed is None else committed)
        times.append((time.perf_counter() - t0) * 1000)
        prev, committed = a.budget_w, send
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


async def bench_messages(broker: Mosquitto, n_racks: int, seconds: float) -> float:
    """Budgets per second delivered to `n_racks` stand-ins by an in-process controller at
    a 0.1 s period (acks included in the broker's load)."""
    from powerflow.site.controller import SiteController

    site = load_site(Path(broker.workdir) / "site.toml")
    site = replace(site, policy=replace(site.policy, period_s=0.1, lease_s=0.5))
    stop = asyncio.Event()
    standins = [StandIn(r, diurnal(0.7, 0.2, 5.0, k)) for k, r in enumerate(site.racks)]
    agents = [SiteAgent(BrokerAddress.parse(broker.url, s.rack.client,
                                            str(broker.password_file(s.rack.client))),
                        site.name, s.rack.client, s.budget, s.demand, 0.1) for s in standins]
    ctrl = SiteController(site, BrokerAddress.parse(broker.url, "site-a",
                                                    str(broker.password_file("site-a"))), "site-a")
    tasks = [asyncio.create_task(a.run(stop)) for a in agents]
    tasks.append(asyncio.create_task(ctrl.run(stop)))
    for _ in range(300):
        if all(s.budget.lease is not None for s in standins):
            break
        await asyncio.sleep(0.05)
    n0, t0 = sum(a.budgets_seen for a in agents), time.monotonic()
    await asyncio.sleep(seconds)
    rate = (sum(a.budgets_seen for a in agents) - n0) / (time.monotonic() - t0)
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return rate


async def bench_failover(broker: Mosquitto, site_file: Path) -> float:
    site = load_site(site_file)
    stop = asyncio.Event()
    standins = [StandIn(r, diurnal(0.7, 0.2, 5.0, k)) for k, r in enumerate(site.racks)]
    agents = [SiteAgent(BrokerAddress.parse(broker.url, s.rack.client,
                                            str(broker.password_file(s.rack.client))),
                        site.name, s.rack.client, s.budget, s.demand, 0.5) for s in standins]
    tasks = [asyncio.create_task(a.run(stop)) for a in agents]
    procs = []
    for cid in ("site-a", "site-b"):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "powerflow.cli", "site", "run", str(site_file), "--broker",
             broker.url, "--id", cid, "--password-file", str(broker.password_file(cid)),
             "--no-api", "--period", "0.5"], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True))
        for _ in range(400):
            if all(s.budget.controller == "site-a" and s.budget.valid(time.time())
                   for s in standins):
                break
            await asyncio.sleep(0.05)
    await asyncio.sleep(2.0)  # the standby settled
    t0 = time.monotonic()
    os.killpg(procs[0].pid, signal.SIGKILL)
    took = float("nan")
    for _ in range(2000):
        if all(s.budget.controller == "site-b" for s in standins):
            took = time.monotonic() - t0
            break
        await asyncio.sleep(0.005)
    for p in procs:
        with __import__("contextlib").suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    periods = 20 if args.quick else 200
    print("site allocation (in-process: allocate + dispatch), ms")
    for n in (100, 1000, 10000):
        p50, p99 = bench_allocation(n, periods if n < 10000 else max(periods // 2, 10))
        print(f"  {n:6d} racks: p50 {p50:7.2f}  p99 {p99:7.2f}")
    two = ROOT / "examples" / "sites" / "two-pdus.toml"
    n_msg = 50
    with tempfile.TemporaryDirectory() as d:
        wd = Path(d)
        (wd / "site.toml").write_text(site_toml(n_msg))
        clients = [f"c{r}" for r in range(n_msg)]
        with Mosquitto(wd / "broker", "bench", ["site-a"], clients) as broker:
            (broker.workdir / "site.toml").write_text(site_toml(n_msg))
            rate = asyncio.run(bench_messages(broker, n_msg, 3.0 if args.quick else 10.0))
        print(f"budgets delivered over Mosquitto ({n_msg} stand-ins, 0.1 s period, each "
              f"with its report and ack): {rate:.0f} /s (x{rate / (n_msg / 0.1):.2f} of the "
              "period's demand)")
        site = load_site(two)
        with Mosquitto(wd / "broker2", site.name, ["site-a", "site-b"],
                       [r.client for r in site.racks]) as broker:
            took = asyncio.run(bench_failover(broker, two))
        print(f"failover: active site controller SIGKILLed -> every rack on the standby's "
              f"budget: {took:.2f} s (whole processes, 0.5 s period)")
        from powerflow.site.scenario import load_site_scenario, run_site_scenario
        sc = load_site_scenario(ROOT / "examples" / "site-scenarios" / "row-surge.toml")
        for period in (0.5,) if args.quick else (0.5, 2.0):
            run = replace(sc, period_s=period, duration_s=sc.duration_s * period / 0.5,
                          events=tuple(replace(e, at_s=e.at_s * period / 0.5)
                                       for e in sc.events))
            out = run_site_scenario(run, wd / f"surge-{period}")
            print(f"reaction: surge in one rack -> new budgets for its neighbours, "
                  f"{period} s period: {out['reactions_s']} s, worst "
                  f"{out['max_reaction_periods']} periods (goal <= 2)")


def site_toml(n: int) -> str:
    """A site file of `n` racks under PDUs of 10 (for the message-rate figure)."""
    out = ['[site]', 'name = "bench"', "", "[[feed]]", 'id = "utility"',
           f"limit_w = {2000.0 * n}", ""]
    for p in range((n + 9) // 10):
        out += ["[[breaker]]", f'id = "pdu{p}"', 'parent = "utility"', "limit_w = 18000.0", ""]
    for r in range(n):
        out += ["[[rack]]", f'id = "r{r}"', f'parent = "pdu{r // 10}"', f'client = "c{r}"',
                "feed_limit_w = 2400.0", "floor_w = 300.0", ""]
    return "\n".join(out)


if __name__ == "__main__":
    main()
