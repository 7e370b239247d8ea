"""Output regulation: soft-start, ramp limit, droop, PI voltage loop, current limit.

All arithmetic is on small integers (mV, mA, m-degC, Q10 gains) so that `step()`
allocates nothing and may run from a timer interrupt (tests prove it under
`micropython.heap_lock()`). Products are kept below 2**30: errors are clamped to
+-16 V before they meet a gain of at most 32 (Q10).

Actuator model: the converter's own fast loop (in hardware) regulates its output
to the reference `u_mv` written through the HAL; this outer loop trims that
reference so the *measured* output meets the target despite output impedance,
and pulls it down when the output current exceeds the (derated) limit. Sign
convention: output current is positive when the node sources power.
"""

from pfnode.config import Q
from pfproto.defs import MODE_CC, MODE_CV, MODE_SOFTSTART

_E_CLAMP = 16384  # mV


def derated_limit_ma(cfg, temp_mc):
    """Current limit (mA) at converter temperature `temp_mc` from the derating curve.

    Full rating below the first point, the last point's fraction above the last
    one, linear in between.
    """
    ts = cfg.curve_mc
    qs = cfg.curve_q
    n = len(ts)
    if temp_mc <= ts[0]:
        frac = qs[0]
    elif temp_mc >= ts[n - 1]:
        frac = qs[n - 1]
    else:
        i = 1
        while temp_mc > ts[i]:
            i += 1
        t0 = ts[i - 1]
        q0 = qs[i - 1]
        frac = q0 + (qs[i] - q0) * (temp_mc - t0) // (ts[i] - t0)
    return (cfg.iout_max_ma >> Q) * frac + (((cfg.iout_max_ma & ((1 << Q) - 1)) * frac) >> Q)


class Controller:
    """Integer PI regulator for one converter output."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.target_mv = 0  # reference after soft-start / ramp limiting
        self.u_mv = 0  # actuator command
        self.e_prev = 0
        self.softstart = False
        self.ss_step_mv = 1
        self.mode = MODE_CV

    def reset(self):
        """Output switched off: forget the loop state so the next start is soft."""
        self.target_mv = 0
        self.u_mv = 0
        self.e_prev = 0
        self.softstart = True

    def start(self, cmd_mv):
        """Begin a soft-start towards `cmd_mv` over TON_RISE."""
        self.reset()
        cfg = self.cfg
        steps = cfg.ton_rise_ms // cfg.control_period_ms
        self.ss_step_mv = cmd_mv // steps + 1 if steps > 0 else cmd_mv + 1

    def step(self, cmd_mv, vout_mv, iout_ma, ilim_ma):
        """One control period; returns the new actuator reference (mV)."""
        cfg = self.cfg
        # reference shaping
        t = self.target_mv
        rate = self.ss_step_mv if self.softstart else cfg.ramp_mv_per_step
        if t < cmd_mv:
            t = t + rate if cmd_mv - t > rate else cmd_mv
        elif t > cmd_mv:
            t = t - rate if t - cmd_mv > rate else cmd_mv
        if self.softstart and t == cmd_mv:
            self.softstart = False
        dt_ref = t - self.target_mv
        self.target_mv = t
        # droop: mohm * mA / 1000 = mV, positive current lowers the goal
        goal = t - cfg.droop_mohm * iout_ma // 1000
        e_v = goal - vout_mv
        # current limit as a voltage-equivalent error: 1 mA over the limit
        # counts as 1 mV (0.25 A/V transconductance would oscillate less but
        # respond slower; 1 keeps CC entry within a few steps)
        e_i = ilim_ma - iout_ma
        if e_i < e_v:
            e = e_i
            self.mode = MODE_CC
        else:
            e = e_v
            self.mode = MODE_SOFTSTART if self.softstart else MODE_CV
        if e > _E_CLAMP:
            e = _E_CLAMP
        elif e < -_E_CLAMP:
            e = -_E_CLAMP
        # velocity-form PI (no separate integrator to wind up), plus the
        # reference's own change as feed-forward outside current limiting
        du = (cfg.kp_q * (e - self.e_prev) + cfg.ki_q * e) >> Q
        if self.mode != MODE_CC:
            du += dt_ref
        self.e_prev = e
        u = self.u_mv + du
        # never command more than the target plus the headroom to cover a 25 %
        # drop, nor more than the rating allows
        hi = t + (t >> 2)
        if hi > cfg.vout_max_mv:
            hi = cfg.vout_max_mv
        if u > hi:
            u = hi
        elif u < 0:
            u = 0
        self.u_mv = u
        return u
