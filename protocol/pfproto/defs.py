"""PowerFlow wire protocol: the numbers both ends agree on.

This module is shared verbatim by the node firmware (MicroPython) and the host
(CPython); `protocol/SPEC.md` is its prose and `protocol/powerflow.cddl` its schema.
Keep it free of anything but integer constants and a few small tuples: every
name here costs the node RAM (a dict entry and a qstr) unless the module is
frozen into the firmware image. Readable names for the host live in
`pfproto.names`.

Units on the wire are SI: V, A, W, degC, %RH, s, ohm; time intervals that are
integers are in ms and say so in their name.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[no-redef,misc]
        return x


PROTOCOL_VERSION = const(1)

# ---- addresses -------------------------------------------------------------
ADDR_HOST = const(0)
ADDR_BROADCAST = const(0xFFFF)
NODE_ID_MIN = const(1)
NODE_ID_MAX = const(0xFFFE)

# ---- frame layout ------------------------------------------------------------
# header: version u8 | flags u8 | type u8 | src u16 | dst u16 | session u16 | seq u32
HEADER_FMT = ">BBBHHHI"
HEADER_LEN = const(13)
TAG_LEN = const(16)  # HMAC-SHA256 truncated
CRC_LEN = const(4)  # CRC-32 (IEEE), big-endian, over header|body|tag
MAX_BODY = const(384)
MAX_FRAME = const(417)  # HEADER_LEN + MAX_BODY + TAG_LEN + CRC_LEN, before COBS
MIN_FRAME = const(18)  # HEADER_LEN + 1-byte body + CRC_LEN
MAX_DEPTH = const(4)  # CBOR nesting allowed in a body
SEQ_MAX = const(0xFFFFFFFF)

FLAG_AUTH = const(0x01)  # a TAG_LEN-byte tag follows the body
FLAGS_KNOWN = const(0x01)

# ---- message types -------------------------------------------------------
MSG_HELLO = const(0x01)  # node -> host: identity, ratings, capabilities
MSG_IDENTIFY = const(0x02)  # host -> node: please send HELLO
MSG_HEARTBEAT = const(0x03)  # both ways
MSG_TELEMETRY = const(0x04)  # node -> host
MSG_SETPOINT = const(0x10)  # host -> node: VOUT_COMMAND lease
MSG_PORT_SWITCH = const(0x11)  # host -> node
MSG_CONFIG = const(0x12)  # host -> node
MSG_CLEAR_FAULTS = const(0x13)  # host -> node
MSG_SESSION_INIT = const(0x20)  # host -> node
MSG_SESSION_ACCEPT = const(0x21)  # node -> host
MSG_ACK = const(0x30)  # node -> host
MSG_EVENT = const(0x31)  # node -> host: fault / event

# Commands change node state: keyed nodes accept them only tagged, and only
# inside an established session.
COMMANDS = (MSG_SETPOINT, MSG_PORT_SWITCH, MSG_CONFIG, MSG_CLEAR_FAULTS)
TO_NODE = (MSG_IDENTIFY, MSG_HEARTBEAT, MSG_SETPOINT, MSG_PORT_SWITCH, MSG_CONFIG,
           MSG_CLEAR_FAULTS, MSG_SESSION_INIT)
TO_HOST = (MSG_HELLO, MSG_HEARTBEAT, MSG_TELEMETRY, MSG_SESSION_ACCEPT, MSG_ACK, MSG_EVENT)

# ---- body keys (one registry for every message; PMBus names where PMBus has one)
# identity
K_NODE_ID = const(0)
K_FW_VERSION = const(1)
K_BOARD = const(2)
K_MFR_VOUT_MAX = const(3)  # V
K_MFR_IOUT_MAX = const(4)  # A
K_MFR_POUT_MAX = const(5)  # W
K_MFR_VIN_MIN = const(6)  # V
K_MFR_VIN_MAX = const(7)  # V
K_CAPABILITIES = const(8)  # uint, CAP_* bits
K_PORTS = const(9)  # uint, number of mesh ports
K_UPTIME_MS = const(10)
K_KEYED = const(11)  # bool: a key is provisioned
K_NONCE = const(12)  # bstr .size 16
K_BOOT_REASON = const(13)  # uint, BOOT_*
# telemetry
K_READ_VIN = const(20)  # V
K_READ_IIN = const(21)  # A
K_READ_VOUT = const(22)  # V
K_READ_IOUT = const(23)  # A, positive = sourcing into the mesh
K_READ_POUT = const(24)  # W
K_READ_TEMPERATURE_1 = const(25)  # degC, converter hot spot
K_READ_TEMPERATURE_2 = const(26)  # degC, second converter sensor
K_READ_TEMPERATURE_3 = const(27)  # degC, ambient
K_READ_HUMIDITY = const(28)  # %RH, ambient
K_STATUS_WORD = const(29)  # uint16, PMBus STATUS_WORD layout
K_IOUT_LIMIT = const(30)  # A, current limit after thermal derating
K_MODE = const(31)  # uint, MODE_*
K_REJECTS = const(32)  # [* uint], indexed by REJ_*
K_PORT_STATE = const(33)  # uint bitmask, bit i = port i closed
K_LEASE_MS = const(34)  # uint: how long a setpoint holds
K_FAULTS = const(35)  # uint, FAULT_* bits latched
K_VOUT_COMMAND = const(36)  # V
K_OPERATION = const(37)  # bool: output on
K_PORT = const(38)  # uint, port index
K_CLOSE = const(39)  # bool: close (true) or open (false)
K_SESSION = const(40)  # uint16 session id
K_WARNINGS = const(41)  # uint, FAULT_* bits currently in warning
K_LEASE_LEFT_MS = const(42)  # uint: what is left of the setpoint lease
K_VOUT_WAKE = const(43)  # V: an output held off starts when the bus falls under this
# acknowledgement / events
K_ACK_SEQ = const(50)  # seq of the frame acknowledged
K_RESULT = const(51)  # uint, RES_*
K_REASON = const(52)  # uint, REJ_*
K_FIELD = const(53)  # uint: the body key that was refused
K_EVENT = const(54)  # uint, EV_*
K_VALUE = const(55)  # float: the reading that caused the event
# configuration (PMBus names)
K_VOUT_OV_FAULT_LIMIT = const(60)  # V
K_VOUT_OV_WARN_LIMIT = const(61)  # V
K_VOUT_UV_WARN_LIMIT = const(62)  # V
K_VOUT_UV_FAULT_LIMIT = const(63)  # V
K_IOUT_OC_WARN_LIMIT = const(64)  # A
K_IOUT_OC_FAULT_LIMIT = const(65)  # A
K_OT_WARN_LIMIT = const(66)  # degC
K_OT_FAULT_LIMIT = const(67)  # degC
K_VOUT_DROOP = const(68)  # ohm (V per A)
K_VOUT_TRANSITION_RATE = const(69)  # V/s, ramp limit
K_TON_RISE = const(70)  # s, soft-start time from 0 to VOUT_COMMAND
K_GAINS = const(71)  # [kp, ki]: kp in V/V, ki in 1/s
K_DERATE_CURVE = const(72)  # [* [degC, fraction]], fraction of MFR_IOUT_MAX
K_FAILSAFE = const(73)  # uint, FS_*
K_HEARTBEAT_TIMEOUT_MS = const(74)
K_TELEMETRY_PERIOD_MS = const(75)
K_FAULT_RESPONSE = const(76)  # {PROT_* => [RESP_*, retries, delay_ms]}
K_DEBOUNCE = const(77)  # consecutive control steps over a fault limit before it trips
K_INTERLOCK_DV = const(78)  # V: largest port voltage difference a close may bridge
K_VOUT_FAILSAFE = const(79)  # V: the output FS_REVERT goes to (the rack's nominal bus)

# ---- capabilities ------------------------------------------------------------
CAP_AUTH = const(0x01)
CAP_TCP = const(0x02)
CAP_DROOP = const(0x04)
CAP_PORTS = const(0x08)
CAP_HUMIDITY = const(0x10)

# ---- operating modes -----------------------------------------------------------
MODE_OFF = const(0)
MODE_SOFTSTART = const(1)
MODE_CV = const(2)  # regulating voltage
MODE_CC = const(3)  # current-limited
MODE_FAILSAFE = const(4)  # host lost or lease expired: failsafe policy in force
MODE_FAULT = const(5)  # a protection tripped the output off

# ---- failsafe policies ---------------------------------------------------------
FS_HOLD = const(0)  # keep the last setpoint (still within limits)
FS_RAMP_DOWN = const(1)  # ramp the output to 0 V at VOUT_TRANSITION_RATE, then off
FS_OFF = const(2)  # output off at once
FS_REVERT = const(3)  # output on at VOUT_FAILSAFE: the rack falls back to plain droop sharing

# ---- protections, fault bits and responses ---------------------------------------
PROT_OV = const(0)
PROT_UV = const(1)
PROT_OC = const(2)
PROT_OT = const(3)
N_PROT = const(4)

FAULT_OV = const(0x01)
FAULT_UV = const(0x02)
FAULT_OC = const(0x04)
FAULT_OT = const(0x08)
FAULT_FAILSAFE = const(0x10)  # failsafe latched
FAULT_WATCHDOG = const(0x20)  # last reset was a watchdog reset

RESP_LATCH = const(0)  # off until CLEAR_FAULTS
RESP_RETRY = const(1)  # restart after delay_ms, at most `retries` times, then latch
RESP_RETRY_FOREVER = const(2)

# PMBus STATUS_WORD bits (PMBus part II, 17.2)
SW_NONE_OF_THE_ABOVE = const(0x0001)
SW_CML = const(0x0002)  # communication / memory / logic
SW_TEMPERATURE = const(0x0004)
SW_VIN_UV = const(0x0008)
SW_IOUT_OC = const(0x0010)
SW_VOUT_OV = const(0x0020)
SW_OFF = const(0x0040)
SW_BUSY = const(0x0080)
SW_OTHER = const(0x0200)
SW_POWER_GOOD_N = const(0x0800)
SW_MFR = const(0x1000)  # failsafe latched (manufacturer specific)
SW_INPUT = const(0x2000)
SW_IOUT = const(0x4000)
SW_VOUT = const(0x8000)

# ---- events ------------------------------------------------------------------
EV_BOOT = const(1)
EV_FAULT = const(2)  # K_FAULTS says which
EV_WARNING = const(3)
EV_FAULTS_CLEARED = const(4)
EV_FAILSAFE = const(5)  # failsafe entered (lease expiry or host silence)
EV_RETRY = const(6)  # output restarted by a retry response
EV_PORT = const(7)  # a port changed state
EV_WAKE = const(8)  # a converter held off in standby started: the bus fell under VOUT_WAKE

BOOT_POWER_ON = const(0)
BOOT_WATCHDOG = const(1)
BOOT_SOFT = const(2)

# ---- acknowledgement results -------------------------------------------------
RES_OK = const(0)
RES_MALFORMED = const(1)  # K_REASON / K_FIELD say why
RES_RANGE = const(2)  # a value outside its limits; K_FIELD says which
RES_AUTH = const(3)  # bad or missing tag, replayed counter, or no session
RES_STATE = const(4)  # refused in the present state (fault / failsafe latched)
RES_INTERLOCK = const(5)  # port close refused: voltages differ too much
RES_UNSUPPORTED = const(6)

# ---- reject reasons (counted by the receiver, index into K_REJECTS) ------------
REJ_COBS = const(0)
REJ_CRC = const(1)
REJ_TRUNCATED = const(2)
REJ_OVERSIZED = const(3)
REJ_VERSION = const(4)
REJ_FLAGS = const(5)
REJ_UNKNOWN_MSG = const(6)
REJ_CBOR = const(7)  # body is not well-formed CBOR (or uses tags / indefinite lengths)
REJ_TYPE = const(8)  # a field has the wrong CBOR type
REJ_RANGE = const(9)
REJ_MISSING = const(10)
REJ_UNKNOWN_FIELD = const(11)
REJ_TAG = const(12)  # authentication tag does not verify
REJ_NO_TAG = const(13)  # a keyed node got an untagged command
REJ_REPLAY = const(14)  # counter not fresh
REJ_NO_SESSION = const(15)  # a command outside the current session
REJ_DIRECTION = const(16)  # a message type this end never receives
N_REJ = const(17)

# ---- absolute ranges a receiver enforces (a node narrows them by its ratings) ------
VOUT_MAX_ABS = 60.0  # V
IOUT_MAX_ABS = 1000.0  # A
TEMP_MIN_ABS = -40.0  # degC
TEMP_MAX_ABS = 150.0  # degC
LEASE_MS_MIN = const(100)
LEASE_MS_MAX = const(600000)
TELEMETRY_MS_MIN = const(10)
TELEMETRY_MS_MAX = const(60000)
HEARTBEAT_MS_MIN = const(100)
HEARTBEAT_MS_MAX = const(60000)
DROOP_MAX = 1.0  # ohm
RATE_MIN = 0.1  # V/s
RATE_MAX = 100000.0  # V/s
TON_RISE_MAX = 10.0  # s
GAIN_MAX = 32.0  # kp (V/V): keeps kp x error within small-int range on the node
KI_MAX = 1000.0  # ki (1/s): ki x period stays below 5 at 5 ms
DERATE_POINTS_MAX = const(6)
RETRIES_MAX = const(255)
RETRY_DELAY_MS_MAX = const(600000)
DEBOUNCE_MAX = const(100)
MAX_PORTS = const(8)

# session key derivation label (see SPEC.md, "Sessions")
SESSION_LABEL = b"powerflow-session-v1"
