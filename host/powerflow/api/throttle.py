"""Failed authentications counted per client address and per user name, with an
exponential lockout.

After `free` failures in a row for a key (an address, or a user name), the key is locked
for `base_s`, doubling with every further failure up to `max_s`. While locked, the service
answers 429 with `Retry-After` without checking credentials, so guessing runs at one try
per lockout instead of hundreds per second. A success clears the user name's count (not
the address's, see `succeeded`). The table is bounded
(`max_keys`): the oldest unlocked entries are forgotten first, so a flood of addresses
cannot grow memory without bound.

Locking by user name means someone who knows a name can keep that user out for at most
`max_s` at a time; that is the usual trade for making a password guess slow from many
addresses (SECURITY.md).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Entry:
    failures: int = 0
    locked_until: float = 0.0  # monotonic s
    last: float = 0.0


@dataclass(frozen=True)
class Lockout:
    """A lockout that has just started: `key` is ("addr", ip) or ("user", name)."""

    key: tuple[str, str]
    failures: int
    seconds: float


class AuthThrottle:
    def __init__(self, free: int = 5, base_s: float = 1.0, max_s: float = 300.0,
                 forget_s: float = 900.0, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.free, self.base_s, self.max_s = free, base_s, max_s
        self.forget_s, self.max_keys, self.clock = forget_s, max_keys, clock
        self._t: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self.lockouts = 0  # lockouts started, in all

    @staticmethod
    def _keys(addr: str | None, user: str | None) -> list[tuple[str, str]]:
        keys = []
        if addr:
            keys.append(("addr", addr))
        if user:
            keys.append(("user", user))
        return keys

    def retry_after(self, addr: str | None, user: str | None = None) -> int | None:
        """Whole seconds until a locked address or user may try again; None if not locked."""
        now = self.clock()
        left = max((e.locked_until - now for k in self._keys(addr, user)
                    if (e := self._t.get(k)) is not None), default=0.0)
        return math.ceil(left) if left > 0 else None

    def failed(self, addr: str | None, user: str | None = None) -> list[Lockout]:
        """Count a failed authentication; returns the lockouts it starts."""
        now = self.clock()
        out = []
        for k in self._keys(addr, user):
            e = self._t.pop(k, None) or _Entry()
            if now - e.last > self.forget_s:
                e = _Entry()
            e.failures += 1
            e.last = now
            if e.failures >= self.free:
                secs = min(self.max_s, self.base_s * 2 ** (e.failures - self.free))
                e.locked_until = now + secs
                out.append(Lockout(k, e.failures, secs))
            self._t[k] = e  # most recent last
        self.lockouts += len(out)
        self._bound(now)
        return out

    def succeeded(self, addr: str | None, user: str | None = None) -> None:
        """A success clears the user's count, not the address's: a caller holding one valid
        (say read-only) token must not be able to reset its address between guesses at
        another. An address's count is forgotten after `forget_s` without failures."""
        if user:
            self._t.pop(("user", user), None)

    def _bound(self, now: float) -> None:
        while len(self._t) > self.max_keys:
            for k, e in self._t.items():  # oldest first; a locked key is kept while others go
                if e.locked_until <= now:
                    del self._t[k]
                    break
            else:
                self._t.popitem(last=False)
