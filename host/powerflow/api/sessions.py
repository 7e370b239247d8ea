"""Redfish login sessions: bounded in number, expiring after inactivity, looked up in
constant time.

A session is created by a successful login (POST /redfish/v1/SessionService/Sessions) and
named by an `X-Auth-Token`. Only the token's SHA-256 is kept; a lookup compares the digest
of the presented token with every live session's (`hmac.compare_digest`, no early exit), so
the time it takes says nothing about how close a guess came.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from powerflow.api.auth import Principal

DEFAULT_TIMEOUT_S = 1800.0  # Redfish's usual SessionTimeout
DEFAULT_MAX_SESSIONS = 64


class SessionsFull(Exception):
    """As many sessions are open as the service allows."""


@dataclass
class Session:
    id: str
    principal: Principal
    digest: bytes  # SHA-256 of the X-Auth-Token
    created: float  # monotonic s
    last_used: float  # monotonic s


class SessionStore:
    """Live sessions. `timeout_s`: inactivity after which a session ends (s);
    `max_sessions`: how many may be open at once (a login beyond that is refused)."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S,
                 max_sessions: int = DEFAULT_MAX_SESSIONS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not timeout_s > 0:
            raise ValueError("the session timeout must be above 0 s")
        if max_sessions < 1:
            raise ValueError("at least one session must be allowed")
        self.timeout_s = timeout_s
        self.max_sessions = max_sessions
        self.clock = clock
        self._by_id: dict[str, Session] = {}

    def expire(self) -> None:
        now = self.clock()
        for sid in [s.id for s in self._by_id.values() if now - s.last_used > self.timeout_s]:
            del self._by_id[sid]

    def create(self, principal: Principal) -> tuple[str, Session]:
        """A new session for `principal`: (its X-Auth-Token, the session). Raises
        SessionsFull when `max_sessions` are open."""
        self.expire()
        if len(self._by_id) >= self.max_sessions:
            raise SessionsFull(f"{self.max_sessions} sessions are open; log out of one "
                               f"or wait {self.timeout_s:.0f} s for an idle one to end")
        token = secrets.token_urlsafe(32)
        sid = secrets.token_hex(8)
        while sid in self._by_id:
            sid = secrets.token_hex(8)
        now = self.clock()
        s = Session(sid, principal, hashlib.sha256(token.encode()).digest(), now, now)
        self._by_id[sid] = s
        return token, s

    def lookup(self, token: str | None) -> Session | None:
        """The live session `token` names (its inactivity clock restarted), or None."""
        if not token:
            return None
        self.expire()
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for s in self._by_id.values():  # every one compared: constant in the token's content
            if hmac.compare_digest(digest, s.digest):
                found = s
        if found is not None:
            found.last_used = self.clock()
        return found

    def get(self, sid: str) -> Session | None:
        self.expire()
        return self._by_id.get(sid)

    def remove(self, sid: str) -> bool:
        return self._by_id.pop(sid, None) is not None

    def listing(self) -> list[Session]:
        self.expire()
        return list(self._by_id.values())
