"""The operator commands of the CLI: clients of the host's HTTP API (like any other tool)."""

from __future__ import annotations

import csv
import json
import os
import re
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


def call(method: str, url: str, path: str, **kw: Any) -> Any:
    try:
        r = httpx.request(method, url + API + path, timeout=10.0, **kw)
    except httpx.HTTPError as e:
        raise ClientError(f"no PowerFlow host at {url} ({e.__class__.__name__}); "
                          "is `powerflow run` running?") from None
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail")
        except ValueError:
            detail = r.text
        if isinstance(detail, list):  # FastAPI validation errors
            detail = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', [])[1:])}: {e.get('msg')}"
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
        "device", "watts", "seconds") and v is not None}
    out = call("POST", host_url(args.host), "/emulator/faults", json=body)
    print(json.dumps(out) if args.json else f"injected {out['applied']}")
    return 0
