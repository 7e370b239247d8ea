"""The hardened interfaces of a real host: HTTPS with the tests' own CA, tokens with a read
and an operator role, Redfish sessions, throttling, body limits, the audit log, values
after float32 rounding, the OpenAPI's documented errors, and the whole authorisation
campaign (every route × every kind of caller)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redfish
import trustme

from powerflow.testing.campaign import run_campaign
from powerflow.testing.chaos import wait_for as until
from tests.conftest import ROOT

RACK = ROOT / "examples" / "racks" / "small.toml"
READ, OPS = "viewer-secret-7f3a9c2e", "operator-secret-1b8d4e6f"
RF = "/redfish/v1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def basic(user: str, pw: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@dataclass
class TlsHost:
    url: str
    ca: Path
    proc: subprocess.Popen
    tmp: Path

    @property
    def ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self.ssl, timeout=15.0, **kw)

    def api(self, path: str, secret: str = READ) -> Any:
        with self.client() as c:
            return c.get("/api/v1" + path, headers=bearer(secret)).json()


def tokens_file(folder: Path) -> Path:
    p = folder / "tokens.toml"
    p.write_text(f'[[token]]\nname = "viewer"\nrole = "read"\n'
                 f'sha256 = "{hashlib.sha256(READ.encode()).hexdigest()}"\n'
                 f'[[token]]\nname = "admin"\nrole = "operator"\n'
                 f'sha256 = "{hashlib.sha256(OPS.encode()).hexdigest()}"\n')
    return p


def certificates(folder: Path) -> tuple[Path, Path, Path]:
    """The tests' own CA and a certificate for 127.0.0.1 signed by it: (ca, chain, key)."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = folder / "ca.pem", folder / "chain.pem", folder / "key.pem"
    ca.cert_pem.write_to_path(str(paths[0]))
    with open(paths[1], "wb") as f:
        for pem in cert.cert_chain_pems:
            f.write(pem.bytes())
    cert.private_key_pem.write_to_path(str(paths[2]))
    return paths


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsHost]:
    tmp = tmp_path_factory.mktemp("sec")
    ca, chain, key = certificates(tmp)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "powerflow.cli", "run", str(RACK), "--emulate", "--port",
         str(port), "--db", str(tmp / "t.sqlite3"), "--tokens", str(tokens_file(tmp)),
         "--tls-cert", str(chain), "--tls-key", str(key), "--session-timeout", "3",
         "--max-sessions", "4"], cwd=tmp, stdout=subprocess.DEVNULL,
        stderr=open(tmp / "host.log", "wb"))
    h = TlsHost(f"https://127.0.0.1:{port}", ca, proc, tmp)
    try:
        until(lambda: h.api("/status")["online"] == 4, 60, "four nodes online over HTTPS")
        until(lambda: h.api("/allocation").get("state") == "optimal", 40, "an optimal allocation")
        yield h
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


# ---- TLS and the options that guard it ----------------------------------------------------
def test_https_with_the_tests_ca_for_the_api_cli_and_dmtf_client(host: TlsHost) -> None:
    with pytest.raises(httpx.ConnectError):  # the system's CAs do not know ours
        httpx.get(host.url + "/api/v1/status", headers=bearer(READ), timeout=5)
    env = dict(os.environ, POWERFLOW_TOKEN=READ, POWERFLOW_CACERT=str(host.ca))
    r = subprocess.run([sys.executable, "-m", "powerflow.cli", "nodes", "--json", "--host",
                        host.url], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert sorted(n["id"] for n in json.loads(r.stdout)) == [1, 2, 3, 4]
    env.pop("POWERFLOW_CACERT")
    r = subprocess.run([sys.executable, "-m", "powerflow.cli", "nodes", "--host", host.url],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode != 0 and "POWERFLOW_CACERT" in r.stderr and "Traceback" not in r.stderr
    client = redfish.redfish_client(base_url=host.url, username="viewer", password=READ,
                                    cafile=str(host.ca))
    client.login(auth="session")
    try:
        rack = client.get(RF + "/Chassis/Rack")
        assert rack.status == 200 and rack.dict["ChassisType"] == "Rack"
        supplies = client.get(RF + "/Chassis/Rack/PowerSubsystem/PowerSupplies").dict
        assert supplies["Members@odata.count"] == 4
    finally:
        client.logout()


@pytest.mark.parametrize("args,msg", [
    (["--bind", "0.0.0.0"], "needs --tokens"),
    (["--bind", "0.0.0.0", "--tokens", "TOKENS"], "needs --tls-cert"),
    (["--tls-cert", "CHAIN"], "go together"),
    (["--tls-cert", "KEY", "--tls-key", "KEY"], "cannot load"),
])
def test_exposing_the_api_needs_tokens_and_tls(tmp_path: Path, args: list[str], msg: str) -> None:
    ca, chain, key = certificates(tmp_path)
    subst = {"TOKENS": str(tokens_file(tmp_path)), "CHAIN": str(chain), "KEY": str(key)}
    r = subprocess.run([sys.executable, "-m", "powerflow.cli", "run", str(RACK),
                        *[subst.get(a, a) for a in args]],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr


# ---- Redfish sessions ---------------------------------------------------------------------
def login(c: httpx.Client, user: str, pw: str) -> httpx.Response:
    return c.post(RF + "/SessionService/Sessions", json={"UserName": user, "Password": pw})


def test_only_the_operator_or_the_owner_ends_a_session_and_it_is_audited(host: TlsHost) -> None:
    with host.client() as c:
        op = login(c, "admin", OPS)
        assert op.status_code == 201
        tok, loc = op.headers["X-Auth-Token"], op.headers["Location"]
        r = c.delete(loc, headers=basic("viewer", READ))  # the review's attack
        assert r.status_code == 403
        assert c.get(RF + "/Chassis/Rack", headers={"X-Auth-Token": tok}).status_code == 200
        mine = login(c, "viewer", READ)
        r = c.delete(mine.headers["Location"], headers={"X-Auth-Token": mine.headers["X-Auth-Token"]})
        assert r.status_code == 204  # one's own session
        assert c.delete(loc, headers=basic("admin", OPS)).status_code == 204
        assert c.get(RF + "/Chassis/Rack", headers={"X-Auth-Token": tok}).status_code == 401
    audit = host.api("/audit")
    deletes = [a for a in audit if a["method"] == "DELETE" and "/Sessions/" in a["path"]]
    assert [(a["who"], a["status"]) for a in deletes[-3:]] == [
        ("viewer", 403), ("viewer", 204), ("admin", 204)]


def test_sessions_expire_when_unused_and_are_bounded(host: TlsHost) -> None:
    with host.client() as c:
        r = login(c, "viewer", READ)
        assert r.status_code == 201
        tok = r.headers["X-Auth-Token"]
        svc = c.get(RF + "/SessionService", headers={"X-Auth-Token": tok}).json()
        assert svc["SessionTimeout"] == 3
        # used (here every 0.5 s for 4.5 s, past the 3-s timeout), it lives on
        t_used = time.monotonic()
        while time.monotonic() - t_used < 4.5:
            assert c.get(RF + "/Chassis", headers={"X-Auth-Token": tok}).status_code == 200
            time.sleep(0.5)
        # left alone for the timeout, it ends (watched with other credentials, which do
        # not touch it)
        left = time.monotonic()
        until(lambda: c.get(r.headers["Location"], headers=basic("admin", OPS)).status_code
              == 404, 15, "the unused session to end")
        assert time.monotonic() - left >= 2.5
        assert c.get(RF + "/Chassis", headers={"X-Auth-Token": tok}).status_code == 401
        toks = [login(c, "viewer", READ) for _ in range(4)]
        assert all(t.status_code == 201 for t in toks)
        full = login(c, "viewer", READ)  # --max-sessions 4
        assert full.status_code == 503
        assert full.json()["error"]["@Message.ExtendedInfo"][0]["MessageId"].endswith(
            "ServiceTemporarilyUnavailable")
        for t in toks:
            c.delete(t.headers["Location"], headers={"X-Auth-Token": t.headers["X-Auth-Token"]})
        assert login(c, "viewer", READ).status_code == 201


def test_a_user_name_cannot_write_into_the_audit_record(host: TlsHost) -> None:
    evil = 'x", "admin": true, "y": "'
    with host.client() as c:
        assert login(c, evil, "wrong").status_code == 401
    entry = [a for a in host.api("/audit") if a["path"].endswith("/Sessions")
             and a["method"] == "POST"][-1]
    assert json.loads(entry["body"]) == {"UserName": evil}
    assert "wrong" not in entry["body"]  # never the password


# ---- bodies and the audit log -------------------------------------------------------------
def test_big_bodies_are_refused_before_they_are_read(host: TlsHost) -> None:
    with host.client() as c:
        r = c.put("/api/v1/policy", content=b"x" * (20 * 1024 * 1024),
                  headers={**bearer(OPS), "Content-Type": "application/json"})
        assert r.status_code == 413

        def chunks() -> Iterator[bytes]:
            for _ in range(200):
                yield b" " * 1024

        r = c.put("/api/v1/policy", content=chunks(),
                  headers={**bearer(OPS), "Content-Type": "application/json"})
        assert r.status_code == 413


def test_refused_callers_are_audited_without_their_body(host: TlsHost) -> None:
    marker = "m" * 500
    with host.client() as c:
        r = c.put("/api/v1/policy", json={"reserve_frac": 0.1, "note": marker})
        assert r.status_code == 401
        r = c.put("/api/v1/policy", json={"nope": marker}, headers=bearer(OPS))
        assert r.status_code == 422
    rows = [a for a in host.api("/audit") if a["path"] == "/api/v1/policy"][-2:]
    assert rows[0]["who"] == "-" and rows[0]["body"] == ""
    assert rows[1]["who"] == "admin" and marker in rows[1]["body"]


# ---- the API's answers ---------------------------------------------------------------------
def test_values_are_judged_as_the_node_will_see_them(host: TlsHost) -> None:
    with host.client(headers=bearer(OPS)) as c:
        assert c.put("/api/v1/control", json={"enabled": False}).status_code == 200
        try:
            r = c.post("/api/v1/nodes/1/setpoint", json={"vout": 1e-300})
            assert r.status_code == 422
            assert "as sent: 0 V" in r.json()["detail"][0]["msg"]
            r = c.post("/api/v1/nodes/1/setpoint", json={"vout": 12.0, "volts": 12})
            assert r.status_code == 422 and r.json()["detail"][0]["type"] == "extra_forbidden"
            assert host.api("/nodes/1")["vout_command"] > 11.0  # still what it was
        finally:
            c.put("/api/v1/control", json={"enabled": True})


def test_the_openapi_documents_every_error_answer(host: TlsHost) -> None:
    with host.client() as c:
        spec = c.get("/openapi.json").json()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            codes = set(op["responses"])
            assert {"401", "403", "413", "422", "429"} <= codes, (method, path, codes)
            if "{node_id}" in path:
                assert "404" in codes, (method, path)


# ---- throttling (last: it locks this machine's address out for a while) --------------------
def test_failed_logins_are_throttled_then_a_good_one_works(host: TlsHost) -> None:
    # from an address of its own (failures are counted per address and per user name)
    with host.client(transport=httpx.HTTPTransport(local_address="127.0.99.1",
                                                   verify=host.ssl)) as c:
        codes = [login(c, "admin", f"guess-{k}").status_code for k in range(8)]
        assert codes[:5] == [401] * 5 and 429 in codes[5:]
        locked = login(c, "admin", OPS)  # even the right password waits out the lockout
        assert locked.status_code == 429 and int(locked.headers["Retry-After"]) >= 1
        events = host.api("/events")
        assert any(e["kind"] == "auth_lockout" and "user admin" in e["detail"] for e in events)
        wait = int(locked.headers["Retry-After"])
        t0 = time.monotonic()
        ok = until(lambda: login(c, "admin", OPS).status_code == 201, wait + 10,
                   "the lockout to end", poll=0.5)
        assert ok and time.monotonic() - t0 >= wait - 1.0


# ---- the campaign --------------------------------------------------------------------------
def test_no_write_without_the_operator_role_and_no_read_without_a_token(host: TlsHost) -> None:
    out = run_campaign(host.url, READ, OPS, verify=host.ssl)
    assert out["failures"] == [], out["failures"][:20]
    assert out["api_routes"] >= 20 and out["redfish_resources"] >= 30
    assert out["api"]["refused_as_expected"] > 0 and out["redfish"]["refused_as_expected"] > 0


# ---- property-based requests against the OpenAPI (last: it acts as the operator) ----------
SCHEMATHESIS_CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
                       "response_schema_conformance,response_headers_conformance,"
                       "negative_data_rejection")


def schemathesis_run(url: str, ca: Path, secret: str, examples: int = 10
                     ) -> subprocess.CompletedProcess:
    """A bounded, seeded schemathesis run of every operation in the host's OpenAPI."""
    exe = Path(sys.executable).with_name("schemathesis")
    return subprocess.run(
        [str(exe), "run", url + "/openapi.json", "-H", f"Authorization: Bearer {secret}",
         "--tls-verify", str(ca), "-n", str(examples), "--seed", "1", "-c", SCHEMATHESIS_CHECKS,
         "--request-timeout", "10", "--max-time", "50", "--warnings", "off",
         "--generation-database", "none"],
        capture_output=True, text=True, timeout=400)


def test_schemathesis_finds_no_server_error_or_schema_violation(host: TlsHost) -> None:
    r = schemathesis_run(host.url, host.ca, OPS)
    tail = "\n".join(r.stdout.splitlines()[-40:])
    assert r.returncode == 0, tail
    assert " generated" in r.stdout and "failures" not in r.stdout.splitlines()[-1], tail
