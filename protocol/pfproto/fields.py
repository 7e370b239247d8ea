"""What each message body may hold: field types, absolute ranges, required keys.

Shared by the node (which checks every received body against it) and the host
(which checks before sending, so that an out-of-range value is refused with
nothing sent, and checks what nodes send with the tables of `fields_host`). `powerflow.cddl` states the same rules for schema validators;
the tests hold the two in agreement.
"""

from pfproto import defs as d

# field kinds
T_UINT = 0
T_NUM = 1  # float (never int); finite
T_BOOL = 2
T_BYTES16 = 3
T_TEXT = 4
T_GAINS = 5  # [kp (0..GAIN_MAX), ki (0..KI_MAX)]
T_CURVE = 6  # [* [degC, fraction]], 2..DERATE_POINTS_MAX points, degC strictly rising
T_RESPONSE = 7  # {PROT_* => [RESP_*, retries, delay_ms]}
T_UINT_LIST = 8

# key -> (kind, min, max) for the fields of the bodies a node receives; the host
# adds the rest from `pfproto.fields_host` (the node never loads those tables).
FIELDS = {
    d.K_UPTIME_MS: (T_UINT, 0, 0xFFFFFFFF),
    d.K_NONCE: (T_BYTES16, None, None),
    d.K_LEASE_MS: (T_UINT, d.LEASE_MS_MIN, d.LEASE_MS_MAX),
    d.K_VOUT_COMMAND: (T_NUM, 0.0, d.VOUT_MAX_ABS),
    d.K_OPERATION: (T_BOOL, None, None),
    d.K_VOUT_WAKE: (T_NUM, 0.0, d.VOUT_MAX_ABS),
    d.K_PORT: (T_UINT, 0, d.MAX_PORTS - 1),
    d.K_CLOSE: (T_BOOL, None, None),
    d.K_VOUT_OV_FAULT_LIMIT: (T_NUM, 0.0, d.VOUT_MAX_ABS),
    d.K_VOUT_OV_WARN_LIMIT: (T_NUM, 0.0, d.VOUT_MAX_ABS),
    d.K_VOUT_UV_WARN_LIMIT: (T_NUM, 0.0, d.VOUT_MAX_ABS),
    d.K_VOUT_UV_FAULT_LIMIT: (T_NUM, 0.0, d.VOUT_MAX_ABS),
    d.K_IOUT_OC_WARN_LIMIT: (T_NUM, 0.0, d.IOUT_MAX_ABS),
    d.K_IOUT_OC_FAULT_LIMIT: (T_NUM, 0.0, d.IOUT_MAX_ABS),
    d.K_OT_WARN_LIMIT: (T_NUM, d.TEMP_MIN_ABS, d.TEMP_MAX_ABS),
    d.K_OT_FAULT_LIMIT: (T_NUM, d.TEMP_MIN_ABS, d.TEMP_MAX_ABS),
    d.K_VOUT_DROOP: (T_NUM, 0.0, d.DROOP_MAX),
    d.K_VOUT_TRANSITION_RATE: (T_NUM, d.RATE_MIN, d.RATE_MAX),
    d.K_TON_RISE: (T_NUM, 0.0, d.TON_RISE_MAX),
    d.K_GAINS: (T_GAINS, 0.0, d.GAIN_MAX),
    d.K_DERATE_CURVE: (T_CURVE, d.TEMP_MIN_ABS, d.TEMP_MAX_ABS),
    d.K_FAILSAFE: (T_UINT, d.FS_HOLD, d.FS_REVERT),
    d.K_HEARTBEAT_TIMEOUT_MS: (T_UINT, d.HEARTBEAT_MS_MIN, d.HEARTBEAT_MS_MAX),
    d.K_TELEMETRY_PERIOD_MS: (T_UINT, d.TELEMETRY_MS_MIN, d.TELEMETRY_MS_MAX),
    d.K_FAULT_RESPONSE: (T_RESPONSE, 0, d.RETRY_DELAY_MS_MAX),
    d.K_DEBOUNCE: (T_UINT, 1, d.DEBOUNCE_MAX),
    d.K_INTERLOCK_DV: (T_NUM, 0.0, d.VOUT_MAX_ABS),
    d.K_VOUT_FAILSAFE: (T_NUM, 0.0, d.VOUT_MAX_ABS),
}

# message type -> (required keys, optional keys)
BODIES = {
    d.MSG_IDENTIFY: ((), ()),
    d.MSG_HEARTBEAT: ((d.K_UPTIME_MS,), ()),  # from the host
    d.MSG_SETPOINT: ((d.K_VOUT_COMMAND, d.K_LEASE_MS), (d.K_OPERATION, d.K_VOUT_WAKE)),
    d.MSG_PORT_SWITCH: ((d.K_PORT, d.K_CLOSE), ()),
    d.MSG_CONFIG: ((), (
        d.K_VOUT_OV_FAULT_LIMIT, d.K_VOUT_OV_WARN_LIMIT, d.K_VOUT_UV_WARN_LIMIT,
        d.K_VOUT_UV_FAULT_LIMIT, d.K_IOUT_OC_WARN_LIMIT, d.K_IOUT_OC_FAULT_LIMIT,
        d.K_OT_WARN_LIMIT, d.K_OT_FAULT_LIMIT, d.K_VOUT_DROOP, d.K_VOUT_TRANSITION_RATE,
        d.K_TON_RISE, d.K_GAINS, d.K_DERATE_CURVE, d.K_FAILSAFE, d.K_HEARTBEAT_TIMEOUT_MS,
        d.K_TELEMETRY_PERIOD_MS, d.K_FAULT_RESPONSE, d.K_DEBOUNCE, d.K_INTERLOCK_DV,
        d.K_VOUT_FAILSAFE)),
    d.MSG_CLEAR_FAULTS: ((), ()),
    d.MSG_SESSION_INIT: ((d.K_NONCE,), ()),
}


def _is_num(v):
    return isinstance(v, float)  # SI quantities are always floats on the wire


def _finite(v):
    return v == v and v not in (float("inf"), float("-inf"))


def _check_field(kind, lo, hi, v):
    """Return 0 when `v` fits, else the reject reason (REJ_TYPE or REJ_RANGE)."""
    if kind == T_UINT:
        if not isinstance(v, int) or isinstance(v, bool):
            return d.REJ_TYPE
        return 0 if lo <= v <= hi else d.REJ_RANGE
    if kind == T_NUM:
        if not _is_num(v):
            return d.REJ_TYPE
        return 0 if _finite(v) and lo <= v <= hi else d.REJ_RANGE
    if kind == T_BOOL:
        return 0 if isinstance(v, bool) else d.REJ_TYPE
    if kind == T_BYTES16:
        if not isinstance(v, bytes):
            return d.REJ_TYPE
        return 0 if len(v) == 16 else d.REJ_RANGE
    if kind == T_TEXT:
        if not isinstance(v, str):
            return d.REJ_TYPE
        return 0 if len(v) <= 32 else d.REJ_RANGE
    if kind == T_UINT_LIST:
        if not isinstance(v, list):
            return d.REJ_TYPE
        for x in v:
            r = _check_field(T_UINT, lo, hi, x)
            if r:
                return r
        return 0 if len(v) <= 32 else d.REJ_RANGE
    if kind == T_GAINS:
        if not isinstance(v, list) or len(v) != 2:
            return d.REJ_TYPE
        r = _check_field(T_NUM, 0.0, d.GAIN_MAX, v[0])
        return r or _check_field(T_NUM, 0.0, d.KI_MAX, v[1])
    if kind == T_CURVE:
        if not isinstance(v, list):
            return d.REJ_TYPE
        if not 2 <= len(v) <= d.DERATE_POINTS_MAX:
            return d.REJ_RANGE
        last_t = None
        last_f = 2.0
        for p in v:
            if not isinstance(p, list) or len(p) != 2 or not _is_num(p[0]) or not _is_num(p[1]):
                return d.REJ_TYPE
            t, f = p
            if not (_finite(t) and _finite(f) and lo <= t <= hi and 0.0 <= f <= 1.0):
                return d.REJ_RANGE
            if last_t is not None and t <= last_t or f > last_f:
                return d.REJ_RANGE  # temperatures rising, fractions not rising
            last_t = t
            last_f = f
        return 0
    if kind == T_RESPONSE:
        if not isinstance(v, dict):
            return d.REJ_TYPE
        for prot, r in v.items():
            if not isinstance(r, list) or len(r) != 3:
                return d.REJ_TYPE
            for x in r:
                if not isinstance(x, int) or isinstance(x, bool):
                    return d.REJ_TYPE
            if not (0 <= prot < d.N_PROT and d.RESP_LATCH <= r[0] <= d.RESP_RETRY_FOREVER
                    and 0 <= r[1] <= d.RETRIES_MAX and lo <= r[2] <= hi):
                return d.REJ_RANGE
        return 0
    return d.REJ_TYPE


def check_body(msg_type, body):
    """Check a decoded body against the table.

    Returns (0, -1) when it fits, else (reason, key) with reason a REJ_* code and
    key the offending body key (-1 when no single key is to blame).
    """
    body_spec = BODIES.get(msg_type)
    if body_spec is None:
        return d.REJ_UNKNOWN_MSG, -1
    required, optional = body_spec
    for k in required:
        if k not in body:
            return d.REJ_MISSING, k
    for k, v in body.items():
        if k not in required and k not in optional:
            return d.REJ_UNKNOWN_FIELD, k
        spec = FIELDS.get(k)
        if spec is None:
            return d.REJ_UNKNOWN_FIELD, k
        r = _check_field(spec[0], spec[1], spec[2], v)
        if r:
            return r, k
    return 0, -1
