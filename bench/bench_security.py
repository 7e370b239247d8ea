"""Security and reliability figures of a running host, as a user runs it.

    .venv/bin/python bench/bench_security.py [--json]

Starts `powerflow run examples/racks/small.toml --emulate` with a tokens file (a read and
an operator token) over HTTPS (a CA made here with trustme), then:

- the authorisation campaign (`powerflow.testing.campaign`): every native route from
  /openapi.json and every Redfish resource found by a crawl × {no token, bad token, read,
  operator} × method; requests tried, refused as expected, failures;
- a bounded, seeded schemathesis run (every operation, 10 examples each): test cases and
  failures;
- password guessing: 600 bad Redfish logins as fast as one client can send them, counting
  401s (guesses actually checked) and 429s;
- an audit flood: 1,000 unauthenticated writes with 4 KB bodies, and the audit table's
  growth in bytes;
- a 20 MiB body: its status and how long the refusal took.

Whole commands and real HTTPS requests on loopback; figures in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trustme

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "host"))

from powerflow.testing.campaign import run_campaign  # noqa: E402

READ, OPS = "bench-viewer-secret-1", "bench-operator-secret-2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pf-sec-"))
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    (tmp / "chain.pem").write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(tmp / "key.pem"))
    (tmp / "tokens.toml").write_text(
        f'[[token]]\nname = "viewer"\nrole = "read"\n'
        f'sha256 = "{hashlib.sha256(READ.encode()).hexdigest()}"\n'
        f'[[token]]\nname = "admin"\nrole = "operator"\n'
        f'sha256 = "{hashlib.sha256(OPS.encode()).hexdigest()}"\n')
    port = free_port()
    db = tmp / "t.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-m", "powerflow.cli", "run", str(ROOT / "examples/racks/small.toml"),
         "--emulate", "--port", str(port), "--db", str(db), "--tokens", str(tmp / "tokens.toml"),
         "--tls-cert", str(tmp / "chain.pem"), "--tls-key", str(tmp / "key.pem")],
        cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"https://127.0.0.1:{port}"
    verify = ssl.create_default_context(cafile=str(tmp / "ca.pem"))
    out: dict[str, Any] = {}
    try:
        c = httpx.Client(base_url=url, verify=verify, timeout=15.0)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                if c.get("/api/v1/status", headers={"Authorization": f"Bearer {READ}"}
                         ).json()["online"] == 4:
                    break
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            time.sleep(0.2)
        camp = run_campaign(url, READ, OPS, verify=verify)
        out["campaign"] = {k: v for k, v in camp.items() if k != "failures"}
        out["campaign"]["failure_list"] = camp["failures"][:10]

        # password guessing from one client
        guess = httpx.Client(base_url=url, verify=verify, timeout=15.0,
                             transport=httpx.HTTPTransport(local_address="127.0.77.1",
                                                           verify=verify))
        t0 = time.perf_counter()
        codes = [guess.post("/redfish/v1/SessionService/Sessions",
                            json={"UserName": "admin", "Password": f"guess{k}"}).status_code
                 for k in range(600)]
        dt = time.perf_counter() - t0
        out["guessing"] = {"attempts": 600, "seconds": round(dt, 2),
                           "checked_401": codes.count(401), "throttled_429": codes.count(429)}

        # the audit flood
        def audit_bytes() -> int:
            with sqlite3.connect(db) as q:
                return int(q.execute("SELECT COALESCE(SUM(LENGTH(body) + LENGTH(path) + "
                                     "LENGTH(who) + 40), 0) FROM audit").fetchone()[0])

        b0 = audit_bytes()
        flood = httpx.Client(base_url=url, verify=verify, timeout=15.0)
        t0 = time.perf_counter()
        for _ in range(1000):
            flood.put("/api/v1/policy", content=b'{"x": "' + b"a" * 4000 + b'"}',
                      headers={"Content-Type": "application/json"})
        out["audit_flood"] = {"requests": 1000, "seconds": round(time.perf_counter() - t0, 2),
                              "audit_growth_bytes": audit_bytes() - b0}

        t0 = time.perf_counter()
        r = c.put("/api/v1/policy", content=b"x" * (20 * 1024 * 1024),
                  headers={"Authorization": f"Bearer {OPS}", "Content-Type": "application/json"})
        out["big_body"] = {"bytes": 20 * 1024 * 1024, "status": r.status_code,
                           "seconds": round(time.perf_counter() - t0, 3)}

        st = subprocess.run(
            [str(Path(sys.executable).with_name("schemathesis")), "run", url + "/openapi.json",
             "-H", f"Authorization: Bearer {OPS}", "--tls-verify", str(tmp / "ca.pem"),
             "-n", "10", "--seed", "1", "-c",
             "not_a_server_error,status_code_conformance,content_type_conformance,"
             "response_schema_conformance,response_headers_conformance,negative_data_rejection",
             "--request-timeout", "10", "--max-time", "240", "--warnings", "off",
             "--generation-database", "none"], capture_output=True, text=True, timeout=400)
        generated = [ln for ln in st.stdout.splitlines() if " generated" in ln]
        out["schemathesis"] = {"rc": st.returncode,
                               "summary": generated[-1].strip() if generated else None}
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    cp = out["campaign"]
    print(f"campaign: {cp['api_routes']} native routes, {cp['redfish_resources']} Redfish "
          "resources")
    for surface in ("api", "redfish"):
        t = cp[surface]
        print(f"  {surface:8s} tried {t['tried']:5d}  refused as expected "
              f"{t['refused_as_expected']:5d}  allowed as expected {t['allowed_as_expected']:5d}"
              f"  failures {t['failures']}")
    g = out["guessing"]
    print(f"guessing: {g['attempts']} bad logins in {g['seconds']} s: {g['checked_401']} "
          f"checked, {g['throttled_429']} throttled (429)")
    a = out["audit_flood"]
    print(f"audit flood: {a['requests']} unauthenticated 4-KB writes in {a['seconds']} s: "
          f"audit grew {a['audit_growth_bytes']} bytes")
    b = out["big_body"]
    print(f"20 MiB body: HTTP {b['status']} in {b['seconds']} s")
    s = out["schemathesis"]
    print(f"schemathesis: rc {s['rc']}; {s['summary']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
