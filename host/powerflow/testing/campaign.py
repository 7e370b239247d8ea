"""The authorisation campaign: every route of a running host × every kind of caller.

Routes come from the host itself: the native API's `/openapi.json`, and a crawl of the
Redfish tree from `/redfish/v1` following every `@odata.id`. Each is tried with no
credentials, a wrong one, a read token and an operator token, with its method and (for
Redfish) every write method, and judged:

- a write (anything but GET) never succeeds (2xx) without the operator role;
- a read without credentials, or with wrong ones, is refused (401), except Redfish's
  documented public resources (service root, `$metadata`, `odata`, the version document);
- nothing answers 5xx.

Failed authentications are throttled per client address, so each refused attempt comes
from its own loopback address (127.0.0.0/8): the campaign measures authorisation, and the
throttle is tested on its own. Used by `tests/security/` and `bench/bench_security.py`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

CALLERS = ("none", "bad", "read", "operator")
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
REDFISH_PUBLIC = {"/redfish", "/redfish/v1", "/redfish/v1/", "/redfish/v1/$metadata",
                  "/redfish/v1/odata"}
REDFISH_LOGIN = "/redfish/v1/SessionService/Sessions"
# path parameters of the native API, filled with things that exist on the example racks
PATH_VALUES = {"node_id": "1"}
USERS = {"read": "viewer", "operator": "admin"}  # the token names of the tokens file


@dataclass
class Tally:
    tried: int = 0
    refused_as_expected: int = 0  # 401/403 where credentials or the role were missing
    allowed_as_expected: int = 0
    failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"tried": self.tried, "refused_as_expected": self.refused_as_expected,
                "allowed_as_expected": self.allowed_as_expected,
                "failures": len(self.failures)}


class Callers:
    """HTTP clients for each kind of caller; wrong credentials from a fresh address each."""

    def __init__(self, base: str, read: str, operator: str, verify: Any = True) -> None:
        self.base, self.read, self.operator, self.verify = base.rstrip("/"), read, operator, verify
        self._n = 0
        self.main = httpx.Client(base_url=self.base, verify=verify, timeout=15.0)

    def _fresh(self) -> httpx.Client:
        self._n += 1
        a, b = divmod(self._n, 250)
        addr = f"127.{10 + a // 250}.{a % 250}.{b + 2}"
        return httpx.Client(base_url=self.base, verify=self.verify, timeout=15.0,
                            transport=httpx.HTTPTransport(local_address=addr,
                                                          verify=self.verify))

    def request(self, caller: str, method: str, path: str, redfish: bool,
                body: Any = None) -> httpx.Response:
        headers: dict[str, str] = {}
        secret = {"read": self.read, "operator": self.operator, "bad": "not-a-secret"}.get(caller)
        if secret is not None:
            if redfish:
                user = USERS.get(caller, "viewer")
                cred = base64.b64encode(f"{user}:{secret}".encode()).decode()
                headers["Authorization"] = f"Basic {cred}"
            else:
                headers["Authorization"] = f"Bearer {secret}"
        kw: dict[str, Any] = {"headers": headers}
        if method != "GET" and method != "DELETE":
            kw["json"] = body if body is not None else {}
        if caller == "bad":
            with self._fresh() as c:
                return self._send(c, method, path, kw)
        return self._send(self.main, method, path, kw)

    @staticmethod
    def _send(c: httpx.Client, method: str, path: str, kw: dict[str, Any]) -> httpx.Response:
        r = c.send(c.build_request(method, path, **kw), stream=True)
        try:
            if r.status_code == 200 and r.headers.get("content-type", "").startswith(
                    "text/event-stream"):
                return r  # an event stream never ends: its status is the answer
            r.read()
            return r
        finally:
            r.close()

    def close(self) -> None:
        self.main.close()


def api_routes(spec: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(method, concrete path) of every operation in an OpenAPI document."""
    for path, ops in spec.get("paths", {}).items():
        concrete = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES.get(m.group(1), "1"), path)
        for method in ops:
            if method.upper() in ("GET", "POST", "PUT", "PATCH", "DELETE"):
                yield method.upper(), concrete


def crawl_redfish(c: Callers, limit: int = 500) -> list[str]:
    """Every resource reachable from the service root (as the operator), at most `limit`."""
    seen: list[str] = []
    todo = ["/redfish/v1"]
    while todo and len(seen) < limit:
        uri = todo.pop(0).split("#")[0]
        if uri in seen:
            continue
        seen.append(uri)
        r = c.request("operator", "GET", uri, redfish=True)
        if r.headers.get("content-type", "").startswith("application/json"):
            for ref in re.findall(r'"@odata\.id":\s*"([^"]+)"', r.text):
                ref = ref.split("#")[0]
                if ref not in seen and ref not in todo:
                    todo.append(ref)
    return seen


def judge(t: Tally, what: str, caller: str, method: str, status: int, public: bool) -> None:
    t.tried += 1
    write = method != "GET"
    if status >= 500:
        t.failures.append(f"{what} as {caller}: {status}")
        return
    if write and caller != "operator":
        if 200 <= status < 300:
            t.failures.append(f"{what} as {caller}: {status} (a write without the operator role)")
        elif status in (401, 403, 405):
            t.refused_as_expected += 1
        else:
            t.failures.append(f"{what} as {caller}: {status} (expected 401/403/405)")
        return
    if not write and caller in ("none", "bad") and not public:
        if status == 401:
            t.refused_as_expected += 1
        else:
            t.failures.append(f"{what} as {caller}: {status} (a read without credentials)")
        return
    if status in (401, 403) and not (write and status == 403 and caller == "operator"):
        t.failures.append(f"{what} as {caller}: {status} (refused a caller with the role)")
        return
    t.allowed_as_expected += 1


def run_campaign(base: str, read: str, operator: str, verify: Any = True
                 ) -> dict[str, Any]:
    """Run the whole campaign against a host with tokens; returns the tallies per surface
    and the failures (empty when every answer was as it should be)."""
    c = Callers(base, read, operator, verify)
    try:
        api, rf = Tally(), Tally()
        spec = c.request("operator", "GET", "/openapi.json", redfish=False).json()
        routes = sorted(set(api_routes(spec)))
        routes.append(("GET", "/metrics"))
        for method, path in routes:
            for caller in CALLERS:
                r = c.request(caller, method, path, redfish=False)
                judge(api, f"{method} {path}", caller, method, r.status_code, public=False)
        uris = crawl_redfish(c)
        for uri in uris:
            public = uri in REDFISH_PUBLIC
            owner = None
            if uri.startswith(REDFISH_LOGIN + "/"):
                owner = c.request("operator", "GET", uri, redfish=True).json().get("UserName")
            for method in ("GET", *WRITE_METHODS):
                if uri == REDFISH_LOGIN and method == "POST":
                    continue  # the login itself: judged by the session tests
                for caller in CALLERS:
                    if method == "DELETE" and owner == USERS.get(caller):
                        continue  # ending one's own session is every user's right
                    r = c.request(caller, method, uri, redfish=True)
                    if (uri.startswith(REDFISH_LOGIN + "/") and r.status_code == 404 and c.request(
                            "operator", "GET", uri, redfish=True).status_code == 404):
                        break  # the session expired meanwhile (the tests' hosts expire
                        #        them in seconds): nothing left to judge on it
                    judge(rf, f"{method} {uri}", caller, method, r.status_code, public)
        return {"api_routes": len(routes), "redfish_resources": len(uris),
                "api": api.as_dict(), "redfish": rf.as_dict(),
                "failures": api.failures + rf.failures}
    finally:
        c.close()
