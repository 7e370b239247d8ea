"""Over/under-voltage, over-current and over-temperature protection.

Each protection has a warning limit (reported, no action) and a fault limit
that must be exceeded for `debounce` consecutive control steps before it trips.
A trip turns the output off; the configured response then decides what follows:
latch (off until CLEAR_FAULTS), retry up to N times after a delay, or retry
forever. An over-temperature retry waits, in addition, until the converter has
cooled below its warning limit. Integer-only and allocation-free.
"""

from pfnode.clock import ticks_add, ticks_diff
from pfproto.defs import (
    FAULT_OC,
    FAULT_OT,
    FAULT_OV,
    FAULT_UV,
    N_PROT,
    PROT_OC,
    PROT_OT,
    PROT_OV,
    PROT_UV,
    RESP_LATCH,
    RESP_RETRY,
)

_BITS = (FAULT_OV, FAULT_UV, FAULT_OC, FAULT_OT)


class Protection:
    def __init__(self, cfg):
        self.cfg = cfg
        self.count = [0] * N_PROT
        self.retries_used = [0] * N_PROT
        self.retry_at = [0] * N_PROT
        self.faults = 0  # tripped and not yet restarted (output is off while nonzero)
        self.latched = 0  # the part of `faults` that waits for CLEAR_FAULTS
        self.warnings = 0
        self.value = [0] * N_PROT  # the reading at the last trip (mV, mA or m-degC)

    def _over(self, p, over, value, now):
        """Debounce protection `p`; True when it trips in this step."""
        c = self.count
        if not over:
            c[p] = 0
            return False
        c[p] += 1
        if c[p] < self.cfg.debounce or self.faults & _BITS[p]:
            return False
        c[p] = 0
        bit = _BITS[p]
        self.faults |= bit
        self.value[p] = value
        mode, retries, delay = self.cfg.response[p]
        if mode == RESP_LATCH or (mode == RESP_RETRY and self.retries_used[p] >= retries):
            self.latched |= bit
        else:
            self.retry_at[p] = ticks_add(now, delay)
        return True

    def check(self, now, vout_mv, iout_ma, temp_mc, output_on, regulating):
        """Evaluate all protections for one step; returns the fault bits that tripped now.

        `regulating` is False during soft-start and current limiting, when a low
        output voltage is expected and must not count as under-voltage.
        """
        cfg = self.cfg
        w = 0
        if vout_mv > cfg.ov_warn_mv:
            w |= FAULT_OV
        if output_on and regulating and vout_mv < cfg.uv_warn_mv:
            w |= FAULT_UV
        if iout_ma > cfg.oc_warn_ma:
            w |= FAULT_OC
        if temp_mc > cfg.ot_warn_mc:
            w |= FAULT_OT
        self.warnings = w
        tripped = 0
        if self._over(PROT_OV, vout_mv > cfg.ov_fault_mv, vout_mv, now):
            tripped |= FAULT_OV
        uv = output_on and regulating and vout_mv < cfg.uv_fault_mv
        if self._over(PROT_UV, uv, vout_mv, now):
            tripped |= FAULT_UV
        if self._over(PROT_OC, iout_ma > cfg.oc_fault_ma, iout_ma, now):
            tripped |= FAULT_OC
        if self._over(PROT_OT, temp_mc > cfg.ot_fault_mc, temp_mc, now):
            tripped |= FAULT_OT
        return tripped

    def due_retries(self, now, temp_mc):
        """Clear and return the fault bits whose retry may restart the output now."""
        due = 0
        pending = self.faults & ~self.latched
        if not pending:
            return 0
        for p in range(N_PROT):
            bit = _BITS[p]
            if not pending & bit or ticks_diff(now, self.retry_at[p]) < 0:
                continue
            if p == PROT_OT and temp_mc > self.cfg.ot_warn_mc:
                continue
            self.retries_used[p] += 1
            due |= bit
        self.faults &= ~due
        return due

    def clear(self):
        """CLEAR_FAULTS: forget trips, latches and retry budgets."""
        for p in range(N_PROT):
            self.count[p] = 0
            self.retries_used[p] = 0
        self.faults = 0
        self.latched = 0
