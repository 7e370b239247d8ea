"""Node configuration: defaults, ratings, and the atomic CONFIG update.

The control path works in integers (mV, mA, m-degC, ms, Q10 fractions) so that
it never allocates; this module converts the SI values of the wire once, when a
configuration is accepted. `update()` checks a whole CONFIG body against the
node's ratings and for consistency before it changes anything: a refused
configuration leaves every setting as it was.
"""

from pfproto import defs as d

Q = 10  # fixed-point fraction bits for gains and derating fractions
ONE = 1 << Q


def _m(x):
    """SI value to milli-units, rounded (V -> mV, A -> mA, degC -> m-degC, ohm -> mohm)."""
    return int(x * 1000.0 + (0.5 if x >= 0 else -0.5))


class Ratings:
    """What the hardware can do; fixed per board (from the node's provisioning file)."""

    def __init__(self, vout_max=14.0, iout_max=50.0, pout_max=600.0, vin_min=40.0, vin_max=60.0,
                 ports=2, board="sim"):
        self.vout_max = vout_max  # V
        self.iout_max = iout_max  # A
        self.pout_max = pout_max  # W
        self.vin_min = vin_min  # V
        self.vin_max = vin_max  # V
        self.ports = ports
        self.board = board


class Config:
    """Live settings in integer units. Attribute names end in their unit."""

    def __init__(self, ratings, control_period_ms=5):
        self.ratings = ratings
        self.control_period_ms = control_period_ms
        self.vout_max_mv = _m(ratings.vout_max)
        self.iout_max_ma = _m(ratings.iout_max)
        # the SI view of each accepted field, for reporting what is in force
        self.si = {}
        defaults = {
            d.K_VOUT_OV_FAULT_LIMIT: ratings.vout_max * 1.10,
            d.K_VOUT_OV_WARN_LIMIT: ratings.vout_max * 1.05,
            d.K_VOUT_UV_WARN_LIMIT: 0.0,
            d.K_VOUT_UV_FAULT_LIMIT: 0.0,
            d.K_IOUT_OC_WARN_LIMIT: ratings.iout_max * 1.05,
            d.K_IOUT_OC_FAULT_LIMIT: ratings.iout_max * 1.25,
            d.K_OT_WARN_LIMIT: 100.0,
            d.K_OT_FAULT_LIMIT: 115.0,
            d.K_VOUT_DROOP: 0.0,
            d.K_VOUT_TRANSITION_RATE: 100.0,
            d.K_TON_RISE: 0.05,
            d.K_GAINS: [0.3, 60.0],
            # full current to 85 degC, then down to 40 % at 105 degC, 0 at 115 degC
            d.K_DERATE_CURVE: [[85.0, 1.0], [105.0, 0.4], [115.0, 0.0]],
            d.K_FAILSAFE: d.FS_RAMP_DOWN,
            d.K_HEARTBEAT_TIMEOUT_MS: 3000,
            d.K_TELEMETRY_PERIOD_MS: 1000,
            d.K_FAULT_RESPONSE: {
                d.PROT_OV: [d.RESP_LATCH, 0, 0],
                d.PROT_UV: [d.RESP_RETRY, 3, 500],
                d.PROT_OC: [d.RESP_RETRY, 3, 500],
                d.PROT_OT: [d.RESP_RETRY_FOREVER, 0, 5000],
            },
            d.K_DEBOUNCE: 3,
            d.K_INTERLOCK_DV: 0.5,
            d.K_VOUT_FAILSAFE: 0.0,
        }
        err = self.update(defaults)
        if err[0]:
            raise ValueError("bad default configuration")

    def check(self, body):
        """Return (0, -1) if `body` (CONFIG fields, SI) may be applied, else (RES_*, key)."""
        r = self.ratings
        merged = dict(self.si)
        merged.update(body)
        for k in (d.K_VOUT_OV_FAULT_LIMIT, d.K_VOUT_OV_WARN_LIMIT, d.K_VOUT_UV_WARN_LIMIT,
                  d.K_VOUT_UV_FAULT_LIMIT):
            if k in body and body[k] > r.vout_max * 1.25:
                return d.RES_RANGE, k
        for k in (d.K_IOUT_OC_WARN_LIMIT, d.K_IOUT_OC_FAULT_LIMIT):
            if k in body and body[k] > r.iout_max * 1.5:
                return d.RES_RANGE, k
        # consistency: warn limits inside fault limits
        if merged[d.K_VOUT_OV_WARN_LIMIT] > merged[d.K_VOUT_OV_FAULT_LIMIT]:
            return d.RES_RANGE, d.K_VOUT_OV_WARN_LIMIT
        if merged[d.K_VOUT_UV_WARN_LIMIT] < merged[d.K_VOUT_UV_FAULT_LIMIT]:
            return d.RES_RANGE, d.K_VOUT_UV_WARN_LIMIT
        if merged[d.K_VOUT_UV_WARN_LIMIT] >= merged[d.K_VOUT_OV_WARN_LIMIT]:
            return d.RES_RANGE, d.K_VOUT_UV_WARN_LIMIT
        if merged[d.K_IOUT_OC_WARN_LIMIT] > merged[d.K_IOUT_OC_FAULT_LIMIT]:
            return d.RES_RANGE, d.K_IOUT_OC_WARN_LIMIT
        if merged[d.K_OT_WARN_LIMIT] > merged[d.K_OT_FAULT_LIMIT]:
            return d.RES_RANGE, d.K_OT_WARN_LIMIT
        if merged[d.K_VOUT_DROOP] * r.iout_max > r.vout_max * 0.5:
            return d.RES_RANGE, d.K_VOUT_DROOP
        # the revert output must be one the node may regulate to
        fs_v = merged[d.K_VOUT_FAILSAFE]
        if fs_v > r.vout_max or fs_v > merged[d.K_VOUT_OV_WARN_LIMIT]:
            return d.RES_RANGE, d.K_VOUT_FAILSAFE
        if merged[d.K_FAILSAFE] == d.FS_REVERT and fs_v <= merged[d.K_VOUT_UV_FAULT_LIMIT]:
            return d.RES_RANGE, d.K_VOUT_FAILSAFE
        return 0, -1

    def update(self, body):
        """Apply CONFIG fields (already type- and range-checked against pfproto.fields).

        Returns (0, -1) when applied, else (RES_*, key) with nothing changed.
        """
        if self.si:
            err = self.check(body)
            if err[0]:
                return err
        for k, v in body.items():
            self.si[k] = v
        s = self.si
        self.ov_fault_mv = _m(s[d.K_VOUT_OV_FAULT_LIMIT])
        self.ov_warn_mv = _m(s[d.K_VOUT_OV_WARN_LIMIT])
        self.uv_warn_mv = _m(s[d.K_VOUT_UV_WARN_LIMIT])
        self.uv_fault_mv = _m(s[d.K_VOUT_UV_FAULT_LIMIT])
        self.oc_warn_ma = _m(s[d.K_IOUT_OC_WARN_LIMIT])
        self.oc_fault_ma = _m(s[d.K_IOUT_OC_FAULT_LIMIT])
        self.ot_warn_mc = _m(s[d.K_OT_WARN_LIMIT])
        self.ot_fault_mc = _m(s[d.K_OT_FAULT_LIMIT])
        self.droop_mohm = _m(s[d.K_VOUT_DROOP])
        dt = self.control_period_ms
        # V/s * ms = mV: the most the reference may move in one control step
        self.ramp_mv_per_step = max(1, int(s[d.K_VOUT_TRANSITION_RATE] * dt))
        self.ton_rise_ms = int(s[d.K_TON_RISE] * 1000.0)
        kp, ki = s[d.K_GAINS]
        self.kp_q = int(kp * ONE)
        self.ki_q = int(ki * dt / 1000.0 * ONE)  # per-step integral gain
        self.curve_mc = [_m(p[0]) for p in s[d.K_DERATE_CURVE]]
        self.curve_q = [int(p[1] * ONE) for p in s[d.K_DERATE_CURVE]]
        self.failsafe = s[d.K_FAILSAFE]
        self.fs_vout_mv = _m(s[d.K_VOUT_FAILSAFE])
        self.heartbeat_timeout_ms = s[d.K_HEARTBEAT_TIMEOUT_MS]
        self.telemetry_period_ms = s[d.K_TELEMETRY_PERIOD_MS]
        resp = s[d.K_FAULT_RESPONSE]
        # responses are merged per protection, so a CONFIG may name just one
        old = getattr(self, "response", None)
        self.response = [list(resp[p]) if p in resp else (old[p] if old else [d.RESP_LATCH, 0, 0])
                         for p in range(d.N_PROT)]
        s[d.K_FAULT_RESPONSE] = {p: list(self.response[p]) for p in range(d.N_PROT)}
        self.debounce = s[d.K_DEBOUNCE]
        self.interlock_mv = _m(s[d.K_INTERLOCK_DV])
        return 0, -1
