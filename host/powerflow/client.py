"""The operator commands of the CLI: clients of the host's HTTP API (like any other tool)."""

from __future__ import annotations

import csv
import json
import os
import re
import ssl
import sys
import time
from typing import Any

import httpx
from rich.console import Console

from powerflow.ui import DEFAULT_PORT, node_table

API = "/api/v1"


class ClientError(Exception):
    """Something the user should read: no host, or the host refused."""


def host_url(arg: str | None) -> str:
    return (arg or os.environ.get("POWERFLOW_HOST") or f"http://127.0.0.1:{DEFAULT_PORT}").rstrip("/")


def tls_verify() -> ssl.SSLContext | bool:
    """What an HTTPS host's certificate is checked against: $POWERFLOW_CACERT (a PEM file of
    the CA that signed it) if set, else the system's trusted CAs."""
    ca = os.environ.get("POWERFLOW_CACERT")
    if not ca:
        return True
    try:
        return ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as e:
        raise ClientError(f"POWERFLOW_CACERT={ca}: cannot read a CA certificate from it "
                          f"({e})") from None


def call(method: str, url: str, path: str, **kw: Any) -> Any:
    token = os.environ.get("POWERFLOW_TOKEN")
    if token:
        kw.setdefault("headers", {})["Authorization"] = f"Bearer {token}"
    try:
        r = httpx.request(method, url + API + path, timeout=10.0, verify=tls_verify(), **kw)
    except httpx.ConnectError as e:
        if "CERTIFICATE_VERIFY_FAILED" in str(e):
            raise ClientError(f"the host at {url} has a certificate this client does not "
                              "trust: set POWERFLOW_CACERT to the CA's PEM file") from None
        raise ClientError(f"no PowerFlow host at {url} ({e.__class__.__name__}); "
                          "is `powerflow run` running?") from None
    except httpx.HTTPError as e:
        raise ClientError(f"no PowerFlow host at {url} ({e.__class__.__name__}); "
                          "is `powerflow run` running?") from None
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail")
        except ValueError:
            detail = r.text
        if isinstance(detail, list):  # 422: [{type, loc, msg}, ...]
            detail = "; ".join((f"{'.'.join(str(x) for x in e.get('loc', [])[1:])}: "
                                if len(e.get("loc", [])) > 1 else "") + str(e.get("msg"))
                               for e in detail)
        raise ClientError(f"{detail} (HTTP {r.status_code})")
    return r.json()


def parse_since(text: str) -> float:
    """'90s', '10m', '2h', '1d' ago, or an absolute Unix time."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if m:
        return time.time() - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    try:
        return float(text)
    except ValueError:
        raise ClientError(f"--since {text!r}: expected a duration like 10m or a Unix time") from None


def cmd_nodes(args: Any) -> int:
    rows = call("GET", host_url(args.host), "/nodes")
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        Console(width=max(110, Console().width)).print(node_table(rows, "nodes"))
    return 0


def cmd_watch(args: Any) -> int:
    from rich.live import Live

    url = host_url(args.host)
    console = Console(width=max(110, Console().width))
    end = None if args.duration is None else time.monotonic() + args.duration
    with Live(node_table(call("GET", url, "/nodes"), "watching"), console=console,
              refresh_per_second=4) as live:
        while end is None or time.monotonic() < end:
            if args.json:
                print(json.dumps(call("GET", url, "/nodes")), flush=True)
            else:
                live.update(node_table(call("GET", url, "/nodes"), f"watching {url}"))
            time.sleep(args.interval)  # polling period of a display, not synchronisation
    return 0


def cmd_set(args: Any) -> int:
    url = host_url(args.host)
    done = []
    if args.vout is not None or args.on or args.off:
        body: dict[str, Any] = {}
        if args.vout is not None:
            body["vout"] = args.vout
        if args.on or args.off:
            body["on"] = bool(args.on)
        done.append(call("POST", url, f"/nodes/{args.node}/setpoint", json=body))
    if args.port is not None:
        done.append(call("POST", url, f"/nodes/{args.node}/port",
                         json={"port": args.port, "close": bool(args.close)}))
    for d in done:
        print(json.dumps(d) if args.json else f"node {args.node}: acknowledged " +
              ", ".join(f"{k} {v}" for k, v in d.items() if k != "node"))
    return 0


def cmd_clear(args: Any) -> int:
    out = call("POST", host_url(args.host), f"/nodes/{args.node}/clear-faults")
    print(json.dumps(out) if args.json else f"node {args.node}: faults cleared")
    return 0


def cmd_history(args: Any) -> int:
    since = parse_since(args.since)
    out = call("GET", host_url(args.host), "/history",
               params={"node": args.node, "metric": args.metric, "since": since})
    if args.json:
        print(json.dumps(out))
    elif args.csv:
        w = csv.writer(sys.stdout)
        w.writerow(["t", args.metric])
        w.writerows(out["points"])
    else:
        for t, v in out["points"]:
            print(f"{time.strftime('%H:%M:%S', time.localtime(t))}.{int(t % 1 * 1000):03d}  {v:g}")
    return 0


def cmd_fault(args: Any) -> int:
    body = {k: v for k, v in vars(args).items() if k in (
        "kind", "node", "sensor", "value", "drift_per_s", "bit_error_rate", "drop_rate", "celsius",
        "device", "watts", "seconds", "scale") and v is not None}
    out = call("POST", host_url(args.host), "/emulator/faults", json=body)
    print(json.dumps(out) if args.json else f"injected {out['applied']}")
    return 0


def cmd_plan(args: Any) -> int:
    """The next allocation from the host's present forecasts, not applied, and why."""
    a = call("GET", host_url(args.host), "/plan")
    if args.json:
        print(json.dumps(a, indent=1))
        return 0
    p = a["predicted"]
    m = a.get("measured") or {}
    measured = ("no fresh reading" if m.get("vmin") is None else
                f"{m['vmin']:.3f}..{m['vmax']:.3f} V")
    print(f"state: {a['state'].upper()}; measured bus {measured}"
          + (f", current-limited: node {', '.join(map(str, m['current_limited']))}"
             if m.get("current_limited") else "")
          + (f"; {a['alarms']} alarm(s) active (powerflow alarms)" if a.get("alarms") else ""))
    print(f"plan ({'checked by the load flow' if a['ok'] else 'NOT checked'}"
          f"{', safe allocation' if a['fallback'] else ''}): {a['reason']}")
    print(f"  demand P95 {p['demand_p95_w']:.0f} W of {p['supply_w']:.0f} W supply; feed "
          f"{p['feed_w']:.0f} W; loss {p['loss_conversion_w']:.1f} W conversion + "
          f"{p['loss_distribution_w']:.2f} W distribution; predicted bus "
          f"{p['vmin']:.3f}..{p['vmax']:.3f} V"
          + (f"; battery {a['battery_w']:+.0f} W" if a["battery_w"] else ""))
    print(f"  {'node':>5} {'on':>4} {'Vref V':>8} {'share W':>8} {'limit W':>8}  why / binding")
    for nid, n in a["nodes"].items():
        print(f"  {nid:>5} {'yes' if n['on'] else 'no':>4} "
              f"{'-' if n['vref'] is None else format(n['vref'], '.3f'):>8} {n['share_w']:8.1f} "
              f"{n['plan_limit_w']:8.1f}  {n['why']}; {n['binding']}")
    print(f"  {'device':>8} {'mean W':>8} {'P95 W':>8} {'cap W':>8}  binding")
    for dev, dv in a["devices"].items():
        print(f"  {dev:>8} {dv['forecast_w']:8.1f} {dv['p95_w']:8.1f} "
              f"{'-' if dv['cap_w'] is None else format(dv['cap_w'], '.1f'):>8}  {dv['binding']}")
    return 0


def cmd_alarms(args: Any) -> int:
    """The active alarms, most severe first."""
    rows = call("GET", host_url(args.host), "/alarms")
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("no active alarms")
        return 0
    now = time.time()
    for al in rows:
        where = "rack" if al["node"] is None else f"node {al['node']}"
        print(f"{al['severity'].upper():>8}  {al['kind']:<16} {where:<8} "
              f"for {now - al['since']:6.1f} s  {al['detail']}")
    return 0


def _policy_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare word, e.g. ties=optimise


def cmd_policy(args: Any) -> int:
    url = host_url(args.host)
    changes: dict[str, Any] = {}
    for item in args.set:
        if "=" not in item:
            raise ClientError(f"--set {item!r}: expected FIELD=VALUE")
        k, v = item.split("=", 1)
        changes[k.strip()] = _policy_value(v.strip())
    if args.profile is not None:
        if changes:
            raise ClientError("--profile switches the whole policy; give it without --set")
        changes = {"profile": args.profile}
    out = call("PUT", url, "/policy", json=changes) if changes else call("GET", url, "/policy")
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"profile {out['policy']['profile']} (profiles: {', '.join(out['profiles'])})")
    for k, v in out["policy"].items():
        if k != "profile":
            print(f"  {k:22} {v}")
    return 0
