"""Who is calling: the one place that authenticates a request, for the native API and
Redfish alike.

Credentials accepted: `Authorization: Bearer SECRET` (a token of the tokens file),
`Authorization: Basic` with user = token name and password = its secret, and a Redfish
session's `X-Auth-Token`. Failed authentications are counted per client address and per
user name (`AuthThrottle`); a locked client gets `Throttled` (answered 429 with
`Retry-After`) before its credentials are looked at, and every lockout is reported to
`on_lockout` (the host records it as an event).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

from starlette.requests import HTTPConnection

from powerflow.api.auth import LOCAL, Principal, Tokens
from powerflow.api.sessions import SessionStore
from powerflow.api.throttle import AuthThrottle, Lockout


class Throttled(Exception):
    """Too many failed authentications: try again after `retry_after` s."""

    def __init__(self, who: str, retry_after: int) -> None:
        super().__init__(f"too many failed authentications for {who}: try again in "
                         f"{retry_after} s")
        self.retry_after = retry_after


def client_address(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else "-"


class Access:
    def __init__(self, tokens: Tokens, sessions: SessionStore | None = None,
                 throttle: AuthThrottle | None = None,
                 on_lockout: Callable[[Lockout], None] | None = None) -> None:
        self.tokens = tokens
        self.sessions = sessions or SessionStore()
        self.throttle = throttle or AuthThrottle()
        self.on_lockout = on_lockout or (lambda lk: None)
        self.failures = 0  # failed authentications, in all

    def _check_locked(self, addr: str, user: str | None) -> None:
        wait = self.throttle.retry_after(addr, user)
        if wait is not None:
            raise Throttled(f"user {user!r}" if user and self.throttle.retry_after(None, user)
                            else addr, wait)

    def _failed(self, addr: str, user: str | None) -> None:
        self.failures += 1
        for lk in self.throttle.failed(addr, user):
            self.on_lockout(lk)

    def authenticate(self, conn: HTTPConnection) -> Principal | None:
        """The caller's principal; None when it presents no valid credentials. Raises
        Throttled while the client (or the user it names) is locked out."""
        addr = client_address(conn)
        token = conn.headers.get("x-auth-token")
        auth = conn.headers.get("authorization")
        if not self.tokens.enabled and not token:
            return LOCAL  # no tokens file: the local demo, everyone is the local operator
        user = None
        if auth and auth[:6].lower() == "basic ":
            try:
                user, _, pw = base64.b64decode(auth[6:], validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError, binascii.Error):
                user, pw = None, ""
        self._check_locked(addr, user)
        if token:
            s = self.sessions.lookup(token)
            if s is not None:
                self.throttle.succeeded(addr)
                return s.principal
            self._failed(addr, None)
            return None
        if not auth:
            return None  # no credentials at all: nothing was guessed
        if user is not None:
            p = self.tokens.check(f"Bearer {pw}")
            p = p if p is not None and p.name == user else None
        else:
            p = self.tokens.check(auth)
        if p is None:
            self._failed(addr, user)
            return None
        self.throttle.succeeded(addr, user)
        return p

    def login(self, conn: HTTPConnection, user: str, password: str) -> Principal | None:
        """A Redfish login's principal (None: no such user and secret). Raises Throttled."""
        addr = client_address(conn)
        self._check_locked(addr, user)
        if not self.tokens.enabled:
            return Principal(user, "operator")
        p = self.tokens.check(f"Bearer {password}")
        if p is None or p.name != user:
            self._failed(addr, user)
            return None
        self.throttle.succeeded(addr, user)
        return p
