"""Output regulation: soft-start, ramp limit, droop, PI voltage loop, current limit.

All arithmetic is on small integers (mV, mA, m-degC, Q10 gains) so that `step()`
allocates nothing and may run from a timer interrupt (tests prove it under
`micropython.heap_lock()`). Products are kept below 2**30: errors are clamped to
+-16 V before they meet a gain of at most 32 (Q10), and the current-limit
ratio works on currents divided by 64.

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
        self.v_prev = 0
        self.goal_prev = 0
        self.frac = 0  # Q10 remainder of the PI increment
        self.softstart = False
        self.ss_step_mv = 1
        self.ss_steps = 0  # control steps in TON_RISE
        self.ss_hold = 0  # steps since the soft-start's ramp reached the command
        self.mode = MODE_CV

    def reset(self):
        """Output switched off: forget the loop state so the next start is soft."""
        self.target_mv = 0
        self.u_mv = 0
        self.v_prev = 0
        self.goal_prev = 0
        self.frac = 0
        self.softstart = True
        self.ss_hold = 0

    def start(self, cmd_mv, from_mv=0):
        """Begin a soft-start towards `cmd_mv` at the rate of 0 to it over TON_RISE, from
        `from_mv`: a live bus the output joins (a pre-biased start), so that it sources
        current as soon as its ramp passes the bus, not after a ramp from 0 V."""
        self.reset()
        cfg = self.cfg
        steps = cfg.ton_rise_ms // cfg.control_period_ms
        self.ss_steps = steps
        self.ss_step_mv = cmd_mv // steps + 1 if steps > 0 else cmd_mv + 1
        if from_mv > 0:
            v = from_mv if from_mv < cmd_mv else cmd_mv
            self.target_mv = self.u_mv = self.v_prev = self.goal_prev = v

    def step(self, cmd_mv, vout_mv, iout_ma, ilim_ma):
        """One control period; returns the new actuator reference (mV)."""
        cfg = self.cfg
        # reference shaping: soft-start, then the transition-rate limit
        t = self.target_mv
        rate = self.ss_step_mv if self.softstart else cfg.ramp_mv_per_step
        if t < cmd_mv:
            t = t + rate if cmd_mv - t > rate else cmd_mv
        elif t > cmd_mv:
            t = t - rate if t - cmd_mv > rate else cmd_mv
        if self.softstart and t == cmd_mv:
            # the ramp is done; the soft-start ends once the output has followed it (a
            # bus capacitance charging lags it), so the trim starts from no error, or
            # after another TON_RISE at most (a load's drop it is the trim's to make up)
            self.ss_hold += 1
            if vout_mv >= t - (t >> 6) or self.ss_hold > self.ss_steps:
                self.softstart = False
        dt_ref = t - self.target_mv
        self.target_mv = t
        # droop: mohm * mA / 1000 = mV; sourcing current lowers the goal.
        # The reading answers the previous command, so it is held against the
        # previous goal: a ramp then leaves no error for the integral to store.
        goal = t - cfg.droop_mohm * iout_ma // 1000
        e = self.goal_prev - vout_mv
        self.goal_prev = goal
        if e > _E_CLAMP:
            e = _E_CLAMP
        elif e < -_E_CLAMP:
            e = -_E_CLAMP
        # velocity-form PI: the reference's own change is fed forward, and the
        # proportional part acts on how the output moved against it (so a
        # moving reference gives no kick and a tracking output no brake)
        u_prev = self.u_mv
        dv = vout_mv - self.v_prev - dt_ref
        if dv > _E_CLAMP:
            dv = _E_CLAMP
        elif dv < -_E_CLAMP:
            dv = -_E_CLAMP
        self.v_prev = vout_mv
        # anti-windup: an output held above its goal by the bus (other converters,
        # ORing blocking) with no current is not this loop's to lower; integrating down
        # there would leave the reference far under the bus, and the converter slow to
        # pick up load when the bus falls. Not while the reference is above the target
        # (that is headroom this loop added and may take back), and then only down to
        # the target, not past it: nor may the proportional part take it past, as an
        # output still rising to a reference that has stopped would (the end of a
        # soft-start read late) — with no current the output does not follow it down.
        held = e <= 0 and iout_ma < (cfg.iout_max_ma >> 7)
        if held and u_prev <= t:
            e = 0
        # the fraction below 1 mV is carried to the next step, or the integral
        # would stall a few mV short of the goal
        acc = self.frac + cfg.ki_q * e - cfg.kp_q * dv
        if self.softstart:
            # the soft-start is the reference's ramp alone: the trim waits for its end. A
            # reading that lags the ramp (a bus capacitance charging, a sample a step
            # old) would otherwise wind the integral up, and an unloaded bus behind ORing
            # diodes keeps whatever it is driven to (small rack at boot: 13.97 V)
            acc = 0
        du = acc >> Q
        self.frac = acc - (du << Q)
        u = u_prev + dt_ref + du
        if held and u < t <= u_prev:
            u = t
        self.mode = MODE_SOFTSTART if self.softstart else MODE_CV
        # Current limit. The output current flows through the converter's own output
        # impedance from its reference down to the measured output, so the reference that
        # gives the limit is the output plus that headroom scaled by ilim/iout. On a stiff
        # bus (converters in parallel, where a few mV of reference move amps) that is
        # exact in one step; scaling the whole reference instead (a load line) drops the
        # load at once onto the others and takes it back, a limit cycle that can hold a
        # shared bus collapsed. On a resistive overload it converges geometrically (about
        # 0.3 s for a short of 1/10 of the rated load resistance) while the power stage's
        # own limit holds the current meanwhile. Under the limit it is a ceiling the
        # voltage loop may not push the current past.
        i64 = iout_ma >> 6
        if iout_ma > (ilim_ma >> 1) and i64 > 0:
            head = u_prev - vout_mv
            if head < 0:
                head = 0
            u_cc = vout_mv + head * (ilim_ma >> 6) // i64
            if u_cc < u:
                u = u_cc
                if iout_ma > ilim_ma - (ilim_ma >> 5):
                    self.mode = MODE_CC
        # never more than the target plus the headroom to cover a 25 % drop,
        # nor more than the rating allows; with no current to speak of there is no drop
        # to cover (the output is the reference): 1.6 %, so a trim that a late reading
        # winds up cannot drive an unloaded bus, which ORing keeps at its highest, out of
        # band. A load arriving is met from there and lifts the bound the next step.
        hi = t + (t >> 2) if iout_ma >= (cfg.iout_max_ma >> 7) else t + (t >> 6)
        if hi > cfg.vout_max_mv:
            hi = cfg.vout_max_mv
        if u > hi:
            u = hi
        elif u < 0:
            u = 0
        self.u_mv = u
        return u
