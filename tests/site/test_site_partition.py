"""A real partition: the real emulated rack (`powerflow run --emulate --site`) runs as a host
of its own in a network namespace, the broker and the site controller in this one, and the
link between them is cut with `ip link` — packets lost, no connection reset. The rack must
fall to its safe budget when its lease runs out, with an alarm, and keep to it; the site must
see the rack's death (its MQTT will, sent by the broker when the keepalive runs out) and keep
counting the lease the rack may still obey, so no breaker is promised more than its limit;
when the link heals the rack rejoins under a new lease without a restart."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import httpx
import pytest

from powerflow.model.rack import load_rack
from powerflow.model.site import ancestors, load_site
from powerflow.site.broker import Mosquitto
from tests.conftest import ROOT
from tests.site.netns import NetHost, can_make_namespaces
from tests.site.test_rack_under_site import free_port, poll

SITE = ROOT / "examples" / "sites" / "two-pdus.toml"
RACK = ROOT / "examples" / "racks" / "small.toml"

why_not = can_make_namespaces()
pytestmark = pytest.mark.skipif(why_not is not None, reason=f"no network namespaces: {why_not}")


def promised_within_limits(site, state) -> None:
    """Every feed and breaker: the leases its racks may be obeying fit its limit."""
    limit = {n["id"]: n["limit_w"] for n in state["nodes"]}
    under: dict[str, float] = {}
    for r in state["racks"]:
        for a in ancestors(site, r["id"]):
            under[a] = under.get(a, 0.0) + r["committed_w"]
    for nid, w in under.items():
        if limit.get(nid) is not None:
            assert w <= limit[nid] + 1e-6, (nid, w, limit[nid], state)


def test_a_rack_cut_off_by_a_real_partition_keeps_safe_and_rejoins(tmp_path) -> None:
    site, rack = load_site(SITE), load_rack(RACK)
    host = NetHost(1)
    broker = Mosquitto(tmp_path / "broker", site.name, ["site-a"],
                       [r.client for r in site.racks], also_listen=(host.host_addr,))
    procs: list[subprocess.Popen] = []
    try:
        broker.start()
        site_port, rack_port = free_port(), free_port()
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "powerflow.cli", "site", "run", str(SITE),
             "--broker", broker.url, "--id", "site-a",
             "--password-file", str(broker.password_file("site-a")),
             "--port", str(site_port), "--period", "0.5"],
            stdout=(tmp_path / "site.log").open("ab"), stderr=subprocess.STDOUT,
            start_new_session=True))
        procs.append(subprocess.Popen(host.argv(
            sys.executable, "-m", "powerflow.cli", "run", str(RACK), "--emulate",
            "--port", str(rack_port),
            "--site", f"mqtt://{host.host_addr}:{broker.port}/{site.name}",
            "--site-client", "rack-r1",
            "--site-password-file", str(broker.password_file("rack-r1")),
            "--site-period", "0.5", "--state-dir", str(tmp_path / "state")),
            stdout=(tmp_path / "rack.log").open("ab"), stderr=subprocess.STDOUT,
            start_new_session=True))
        rack_api = f"http://127.0.0.1:{rack_port}/api/v1"  # inside the namespace
        site_api = f"http://127.0.0.1:{site_port}/api/v1/site"

        def rack_state():
            a = host.get_json(f"{rack_api}/allocation")
            alarms = {x["kind"] for x in host.get_json(f"{rack_api}/alarms")}
            return a, alarms

        def granted():
            a, alarms = rack_state()
            s = httpx.get(site_api, timeout=2).json()
            r1 = s["racks"][0]
            if r1["online"] and r1["budget_w"] and "site_budget" not in alarms:
                return a, s
            return None

        a, s = poll(granted, "the rack in its namespace plans under a site lease", 90.0)
        assert rack.floor_w <= a["predicted"]["feed_limit_w"] <= rack.breaker_limit_w
        promised_within_limits(site, s)

        host.cut()

        def fallen():
            a, alarms = rack_state()
            low = a["predicted"]["feed_limit_w"] <= rack.safe_budget_w + 1e-6
            return a if "site_budget" in alarms and low else None

        a = poll(fallen, "the cut-off rack alarms and holds its safe budget", 30.0)
        assert a["predicted"]["feed_limit_w"] >= rack.floor_w - 1e-6
        assert a["predicted"]["feed_w"] <= a["predicted"]["feed_limit_w"] + 1e-6

        def seen_dead():
            st = httpx.get(site_api, timeout=2).json()
            promised_within_limits(site, st)  # at every look, while the rack is away
            r1 = st["racks"][0]
            return st if not r1["online"] and r1["committed_w"] <= rack.safe_budget_w else None

        # the site sees the death certificate, stops renewing the lease, and once the last
        # one has run out counts only the rack's fallback (never above its safe budget)
        poll(seen_dead, "the site sees the rack dead and its last lease run out", 30.0)

        host.heal()
        a, s = poll(granted, "the rack rejoins under a new lease after the link heals", 60.0)
        promised_within_limits(site, s)
        assert all(p.poll() is None for p in procs)  # nothing was restarted
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        broker.close()
        host.close()
