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
from dataclasses import dataclass
from pathlib import Path

from powerflow.tomlfile import read_toml

ROLES = ("read", "operator")


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
        p = Path(path)
        raw = read_toml(p, AuthConfigError)
        out = []
        for i, t in enumerate(raw.get("token", [])):
            where = f"{p}: [[token]] #{i + 1}"
            name, role, digest = t.get("name"), t.get("role"), t.get("sha256")
            if not isinstance(name, str) or not name:
                raise AuthConfigError(f"{where}: field 'name': expected text")
            if role not in ROLES:
                raise AuthConfigError(f"{where}: field 'role': expected read or operator")
            try:
                d = bytes.fromhex(digest) if isinstance(digest, str) else b""
            except ValueError:
                d = b""
            if len(d) != 32:
                raise AuthConfigError(f"{where}: field 'sha256': expected 64 hex digits "
                                      "(sha256sum of the secret)")
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
        for name, role, d in self.entries:
            if hmac.compare_digest(digest, d):
                return Principal(name, role)
        return None
