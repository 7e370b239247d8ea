"""Field and body tables for the messages the host receives (the node never loads this).

Importing this module extends `pfproto.fields.FIELDS` and `BODIES` in place, so
`pfproto.fields.check_body` then checks every message type.
"""

from pfproto import defs as d
from pfproto.fields import BODIES, FIELDS, T_BOOL, T_NUM, T_TEXT, T_UINT, T_UINT_LIST

FIELDS.update({
    d.K_NODE_ID: (T_UINT, d.NODE_ID_MIN, d.NODE_ID_MAX),
    d.K_FW_VERSION: (T_TEXT, None, None),
    d.K_BOARD: (T_TEXT, None, None),
    d.K_MFR_VOUT_MAX: (T_NUM, 0.0, d.VOUT_MAX_ABS),
    d.K_MFR_IOUT_MAX: (T_NUM, 0.0, d.IOUT_MAX_ABS),
    d.K_MFR_POUT_MAX: (T_NUM, 0.0, d.VOUT_MAX_ABS * d.IOUT_MAX_ABS),
    d.K_MFR_VIN_MIN: (T_NUM, 0.0, 1000.0),
    d.K_MFR_VIN_MAX: (T_NUM, 0.0, 1000.0),
    d.K_CAPABILITIES: (T_UINT, 0, 0xFFFF),
    d.K_PORTS: (T_UINT, 0, d.MAX_PORTS),
    d.K_KEYED: (T_BOOL, None, None),
    d.K_BOOT_REASON: (T_UINT, 0, 255),
    d.K_READ_VIN: (T_NUM, -1000.0, 1000.0),
    d.K_READ_IIN: (T_NUM, -d.IOUT_MAX_ABS, d.IOUT_MAX_ABS),
    d.K_READ_VOUT: (T_NUM, -1000.0, 1000.0),
    d.K_READ_IOUT: (T_NUM, -d.IOUT_MAX_ABS, d.IOUT_MAX_ABS),
    d.K_READ_POUT: (T_NUM, -1.0e6, 1.0e6),
    d.K_READ_TEMPERATURE_1: (T_NUM, -273.0, 1000.0),
    d.K_READ_TEMPERATURE_2: (T_NUM, -273.0, 1000.0),
    d.K_READ_TEMPERATURE_3: (T_NUM, -273.0, 1000.0),
    d.K_READ_HUMIDITY: (T_NUM, 0.0, 100.0),
    d.K_STATUS_WORD: (T_UINT, 0, 0xFFFF),
    d.K_IOUT_LIMIT: (T_NUM, 0.0, d.IOUT_MAX_ABS),
    d.K_MODE: (T_UINT, 0, d.MODE_FAULT),
    d.K_REJECTS: (T_UINT_LIST, 0, 0xFFFFFFFF),
    d.K_PORT_STATE: (T_UINT, 0, 0xFF),
    d.K_FAULTS: (T_UINT, 0, 0xFFFF),
    d.K_WARNINGS: (T_UINT, 0, 0xFFFF),
    d.K_SESSION: (T_UINT, 1, 0xFFFF),
    d.K_ACK_SEQ: (T_UINT, 0, d.SEQ_MAX),
    d.K_RESULT: (T_UINT, 0, d.RES_UNSUPPORTED),
    d.K_REASON: (T_UINT, 0, d.N_REJ - 1),
    d.K_FIELD: (T_UINT, 0, 255),
    d.K_EVENT: (T_UINT, 1, 255),
    d.K_VALUE: (T_NUM, -1.0e6, 1.0e6),
    d.K_LEASE_LEFT_MS: (T_UINT, 0, d.LEASE_MS_MAX),
})

BODIES.update({
    # heartbeats from a node say more than the host's own
    d.MSG_HEARTBEAT: ((d.K_UPTIME_MS,), (d.K_STATUS_WORD, d.K_MODE, d.K_LEASE_LEFT_MS)),
    d.MSG_HELLO: (
        (d.K_NODE_ID, d.K_FW_VERSION, d.K_BOARD, d.K_MFR_VOUT_MAX, d.K_MFR_IOUT_MAX,
         d.K_MFR_POUT_MAX, d.K_MFR_VIN_MIN, d.K_MFR_VIN_MAX, d.K_CAPABILITIES, d.K_PORTS,
         d.K_UPTIME_MS, d.K_KEYED, d.K_BOOT_REASON),
        (),
    ),
    d.MSG_TELEMETRY: (
        (d.K_READ_VIN, d.K_READ_IIN, d.K_READ_VOUT, d.K_READ_IOUT, d.K_READ_POUT,
         d.K_READ_TEMPERATURE_1, d.K_READ_TEMPERATURE_2, d.K_READ_TEMPERATURE_3,
         d.K_READ_HUMIDITY, d.K_STATUS_WORD, d.K_IOUT_LIMIT, d.K_MODE, d.K_UPTIME_MS,
         d.K_REJECTS, d.K_PORT_STATE, d.K_LEASE_LEFT_MS, d.K_FAULTS, d.K_WARNINGS, d.K_VOUT_COMMAND),
        (),
    ),
    d.MSG_SESSION_ACCEPT: ((d.K_NONCE, d.K_SESSION, d.K_ACK_SEQ), ()),
    d.MSG_ACK: ((d.K_ACK_SEQ, d.K_RESULT), (d.K_REASON, d.K_FIELD)),
    d.MSG_EVENT: ((d.K_EVENT, d.K_UPTIME_MS), (d.K_FAULTS, d.K_VALUE, d.K_STATUS_WORD, d.K_PORT)),
})
