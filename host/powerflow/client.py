"""The operator commands of the CLI: clients of the host's HTTP API (like any other tool).

The transport is the standard library's `urllib` (an operator's command starts in well
under 0.3 s; an HTTP client library and `asyncio` cost more to import than the call takes),
and `rich` is imported only by the commands that draw a table.
"""

from __future__ import annotations

import csv
import json
import os
import re
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from powerflow.ui import DEFAULT_PORT

API = "/api/v1"
TIMEOUT_S = 10.0


class ClientError(Exception):
    """Something the user should read: no host, or the host refused."""


def host_url(arg: str | None) -> str:
    return (arg or os.environ.get("POWERFLOW_HOST") or f"http://127.0.0.1:{DEFAULT_PORT}").rstrip("/")


def tls_context() -> ssl.SSLContext:
    """What an HTTPS host's certificate is checked against: $POWERFLOW_CACERT (a PEM file of
    the CA that signed it) if set, else the system's trusted CAs."""
    ca = os.environ.get("POWERFLOW_CACERT")
    try:
        return ssl.create_default_context(cafile=ca or None)
    except (OSError, ssl.SSLError) as e:
        raise ClientError(f"POWERFLOW_CACERT={ca}: cannot read a CA certificate from it "
                          f"({e})") from None


def _detail(raw: bytes) -> str:
    """The host's reason from an error body: `detail` as a string, or pydantic's list."""
    try:
        detail = json.loads(raw).get("detail")
    except (ValueError, AttributeError):
        return raw.decode("utf-8", "replace").strip()
    if isinstance(detail, list):  # 422: [{type, loc, msg}, ...]
        return "; ".join((f"{'.'.join(str(x) for x in e.get('loc', [])[1:])}: "
                          if len(e.get("loc", [])) > 1 else "") + str(e.get("msg"))
                         for e in detail)
    return str(detail)


def call(method: str, url: str, path: str, json_body: Any = None,
         params: dict[str, Any] | None = None) -> Any:
    """One API request; the decoded JSON answer, or ClientError saying what went wrong."""
    full = url + API + path + ("?" + urllib.parse.urlencode(params) if params else "")
    headers = {"Accept": "application/json"}
    token = os.environ.get("POWERFLOW_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if json_body is not None:
        data = json.dumps(json_body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(full, data=data, headers=headers, method=method)
    ctx = tls_context() if full.startswith("https:") else None
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S, context=ctx) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise ClientError(f"{_detail(e.read())} (HTTP {e.code})") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, ssl.SSLCertVerificationError):
            raise ClientError(f"the host at {url} has a certificate this client does not "
                              "trust: set POWERFLOW_CACERT to the CA's PEM file") from None
        why = getattr(e.reason, "strerror", None) or str(e.reason)
        raise ClientError(f"no PowerFlow host at {url} ({why}); is `powerflow run` "
                          "running?") from None
    except (TimeoutError, ConnectionError) as e:
        raise ClientError(f"no answer from the host at {url} ({e.__class__.__name__})") from None
    except ValueError:
        raise ClientError(f"the host at {url} did not answer JSON: is it a PowerFlow "
                          "host?") from None


def _console() -> Any:
    from rich.console import Console

    return Console(width=max(110, Console().width))


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
        from powerflow.ui import node_table

        _console().print(node_table(rows, "nodes"))
    return 0


def cmd_watch(args: Any) -> int:
    from rich.live import Live

    from powerflow.ui import node_table

    url = host_url(args.host)
    console = _console()
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
        done.append(call("POST", url, f"/nodes/{args.node}/setpoint", json_body=body))
    if args.port is not None:
        done.append(call("POST", url, f"/nodes/{args.node}/port",
                         json_body={"port": args.port, "close": bool(args.close)}))
    for d in done:
        if args.json:
            print(json.dumps(d))
        elif d.get("pinned_tie"):
            print(f"tie {d['pinned_tie']} (node {args.node} port {d['port']}) pinned "
                  f"{'closed' if d['closed'] else 'open'} in the policy; the control loop "
                  "switches it (make-before-break). Release it with "
                  "`powerflow policy --set tie_override={}`")
        else:
            print(f"node {args.node}: acknowledged " + ", ".join(
                f"{k} {round(v, 4) if isinstance(v, float) else v}" for k, v in d.items()
                if k not in ("node", "pinned_tie")))
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
    out = call("POST", host_url(args.host), "/emulator/faults", json_body=body)
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
              f"{'-' if dv['cap_w'] is None else format(dv['cap_w'], '.1f'):>8}  {dv['binding']}"
              + ("" if dv.get("room_w") is None else
                 f"; room kept {dv['room_w']:.0f} W (a hint: it stays low)"))
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
    out = call("PUT", url, "/policy", json_body=changes) if changes else call("GET", url, "/policy")
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"profile {out['policy']['profile']} (profiles: {', '.join(out['profiles'])})")
    for k, v in out["policy"].items():
        if k != "profile":
            print(f"  {k:22} {v}")
    return 0


def _duration(text: str, what: str) -> float:
    """90s, 10m, 2h, 1d or plain seconds -> s."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*", text)
    if not m:
        raise ClientError(f"{what} {text!r}: expected a duration like 90s, 10m, 2h or seconds")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2) or "s"]


def _when(text: str) -> dict[str, float]:
    """now, +30s / +5m (from now) or a Unix time -> the hint's at / in_s field."""
    t = text.strip()
    if t == "now":
        return {"in_s": 0.0}
    if t.startswith("+"):
        return {"in_s": _duration(t[1:], "--at")}
    try:
        return {"at": float(t)}
    except ValueError:
        raise ClientError(f"--at {text!r}: expected now, +30s, +5m or a Unix time (s)") from None


def _device_list(text: str) -> list[str]:
    """gpu0,gpu1 or gpu0..gpu3 (a range of one prefix's numbers), or both, comma-separated."""
    out: list[str] = []
    for item in (x.strip() for x in text.split(",")):
        m = re.fullmatch(r"([A-Za-z_][\w-]*?)(\d+)\.\.\1(\d+)", item)
        if m:
            lo, hi = int(m.group(2)), int(m.group(3))
            if hi < lo or hi - lo > 4096:
                raise ClientError(f"--devices {item!r}: the range runs backwards or is too long")
            out += [f"{m.group(1)}{k}" for k in range(lo, hi + 1)]
        elif item:
            out.append(item)
    if not out:
        raise ClientError("--devices: give at least one device id")
    return out


def cmd_hint(args: Any) -> int:
    """Job hints: start, pause, end, list."""
    url = host_url(args.host)
    if args.hint_command == "list":
        out: Any = call("GET", url, "/hints")
    elif args.hint_command == "start":
        out = call("POST", url, "/hints", json_body={
            "kind": "start", "job": args.job, "devices": _device_list(args.devices),
            **({} if args.watts is None else {"watts": args.watts}),
            "duration_s": _duration(args.duration, "--for"),
            **_when(args.at)})
    elif args.hint_command == "pause":
        out = call("POST", url, "/hints", json_body={
            "kind": "pause", "job": args.job, "watts": args.watts,
            "duration_s": _duration(args.duration, "--for"), **_when(args.at)})
    else:
        out = call("POST", url, "/hints", json_body={"kind": "end", "job": args.job,
                                                      **_when(args.at)})
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    rows = out if isinstance(out, list) else [out]
    if not rows:
        print("no hints in force")
    now = time.time()
    for h in rows:
        power = "up to p_max_w" if h["watts"] is None else f"about {h['watts']:g} W"
        print(f"job {h['job']}: {', '.join(h['devices'])} at {power} each, "
              f"from {h['start'] - now:+.0f} s to {h['end'] - now:+.0f} s from now")
        for p in h.get("pauses", []):
            print(f"  pause at about {p['watts']:g} W each, from {p['start'] - now:+.0f} s to "
                  f"{p['end'] - now:+.0f} s from now")
    return 0


def cmd_control(args: Any) -> int:
    """Pause, resume or show the control loop."""
    url = host_url(args.host)
    if args.control_command == "status":
        out = call("GET", url, "/control")
    else:
        out = call("PUT", url, "/control",
                   json_body={"enabled": args.control_command == "resume"})
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    state = "running" if out["enabled"] else "PAUSED (setpoints are the operator's)"
    print(f"control loop {state}: {out['periods']} periods of {out['period_s']:g} s, "
          f"{out['late_periods']} late, {out['dispatch_errors']} dispatch errors"
          + (f"; SAFE MODE: {out['safe_mode_why']}" if out["safe_mode"] else ""))
    return 0
