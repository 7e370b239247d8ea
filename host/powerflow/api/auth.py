"""Who may call the host's API: bearer tokens with a role, `read` or `operator`.

Tokens are configured in a TOML file given to `powerflow run --tokens FILE`:

    [[token]]
    name = "grafana"          # who: recorded in the audit log
    role = "read"             # read: GET only; operator: may change things
    sha256 = "9f86d08..."     # SHA-256 (hex) of the secret; the secret itself is never stored

Without a tokens file the API serves 127.0.0.1 only and everyone is the local operator
(the demo). With one, every API call needs `Authorization: Bearer SECRET`; a write needs
the operator role. Either way every write is audited (who, what, when, the answer) in the
telemetry database.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path

from powerflow.tomlfile import read_toml

ROLES = ("read", "operator")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
EMPTY_SHA256 = hashlib.sha256(b"").digest()


class AuthConfigError(ValueError):
    """A bad tokens file; the message names the file and entry."""


@dataclass(frozen=True)
class Principal:
    name: str
    role: str

    @property
    def may_write(self) -> bool:
        return self.role == "operator"


LOCAL = Principal("local", "operator")


class Tokens:
    def __init__(self, entries: list[tuple[str, str, bytes]] | None = None) -> None:
        self.entries = entries or []  # (name, role, sha256 digest)

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    @classmethod
    def load(cls, path: str | Path) -> Tokens:
        """Read a tokens file; AuthConfigError names the file, the entry and the field."""
        p = Path(path)
        raw = read_toml(p, AuthConfigError)
        unknown = sorted(set(raw) - {"token"})
        if unknown:
            raise AuthConfigError(f"{p}: unknown section [{unknown[0]}] (only [[token]] entries)")
        items = raw.get("token", [])
        if not isinstance(items, list):
            raise AuthConfigError(f"{p}: token: expected an array of tables ([[token]] entries)")
        out: list[tuple[str, str, bytes]] = []
        for i, t in enumerate(items):
            where = f"{p}: [[token]] #{i + 1}"
            if not isinstance(t, dict):
                raise AuthConfigError(f"{where}: expected a table of name, role, sha256")
            if "secret" in t or "password" in t:
                raise AuthConfigError(f"{where}: field '{'secret' if 'secret' in t else 'password'}'"
                                      ": the secret itself is never stored; give its sha256 "
                                      "(printf %s SECRET | sha256sum)")
            extra = sorted(set(t) - {"name", "role", "sha256"})
            if extra:
                raise AuthConfigError(f"{where}: unknown field '{extra[0]}'")
            name, role, digest = t.get("name"), t.get("role"), t.get("sha256")
            if not isinstance(name, str) or not NAME_RE.fullmatch(name):
                raise AuthConfigError(f"{where}: field 'name': expected a name of letters, "
                                      "digits and . _ - (at most 64)")
            if role not in ROLES:
                raise AuthConfigError(f"{where}: field 'role': expected read or operator")
            try:
                d = bytes.fromhex(digest) if isinstance(digest, str) else b""
            except ValueError:
                d = b""
            if len(d) != 32:
                raise AuthConfigError(f"{where}: field 'sha256': expected 64 hex digits "
                                      "(sha256sum of the secret)")
            if d == EMPTY_SHA256:
                raise AuthConfigError(f"{where}: field 'sha256': that is the SHA-256 of an "
                                      "empty secret")
            for other, (n, r, dd) in enumerate(out):
                if n == name:
                    raise AuthConfigError(f"{where}: field 'name': '{name}' is already "
                                          f"[[token]] #{other + 1}")
                if dd == d:
                    raise AuthConfigError(f"{where}: field 'sha256': the same secret as "
                                          f"[[token]] #{other + 1} ('{n}'); every token needs "
                                          "its own")
            out.append((name, role, d))
        if not out:
            raise AuthConfigError(f"{p}: no [[token]] entries")
        return cls(out)

    def check(self, authorization: str | None) -> Principal | None:
        """The principal a request's Authorization header names; None if it names nobody."""
        if not self.enabled:
            return LOCAL
        if not authorization or not authorization.startswith("Bearer "):
            return None
        digest = hashlib.sha256(authorization[7:].strip().encode()).digest()
        found = None
        for name, role, d in self.entries:  # all compared: the time says nothing of a guess
            if hmac.compare_digest(digest, d):
                found = Principal(name, role)
        return found
