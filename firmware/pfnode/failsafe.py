"""Setpoint leases and host-silence detection.

A setpoint is a lease: it holds until `lease_ms` after it arrived, on the
monotonic tick clock (a wall-clock jump cannot expire it). When the lease runs
out, or no valid frame has come from the host for HEARTBEAT_TIMEOUT, the node
applies its failsafe policy (hold / ramp down / off) and latches it until the
host sends CLEAR_FAULTS. A node that has never heard a host has no lease, so
its output stays off. Integer-only; `check()` runs inside the control step.
"""

from pfnode.clock import ticks_add, ticks_diff


class Failsafe:
    def __init__(self, cfg):
        self.cfg = cfg
        self.host_seen = False
        self.last_host = 0  # ticks of the last valid frame from the host
        self.lease_valid = False
        self.lease_end = 0  # ticks
        self.latched = False

    def heard_host(self, now):
        self.host_seen = True
        self.last_host = now

    def grant(self, now, lease_ms):
        self.lease_valid = True
        self.lease_end = ticks_add(now, lease_ms)

    def remaining_ms(self, now):
        if not self.lease_valid:
            return 0
        r = ticks_diff(self.lease_end, now)
        return r if r > 0 else 0

    def check(self, now):
        """True when the failsafe trips now (it was not latched and a lease or the host lapsed)."""
        if self.latched or not self.lease_valid:
            return False
        expired = ticks_diff(now, self.lease_end) >= 0
        silent = ticks_diff(now, self.last_host) >= self.cfg.heartbeat_timeout_ms
        if expired or silent:
            self.latched = True
            self.lease_valid = False
            return True
        return False

    def clear(self):
        self.latched = False
