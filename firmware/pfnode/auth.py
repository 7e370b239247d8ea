"""Frame authentication on the node: HMAC-SHA256 tags, sessions and replay counters.

A node with a provisioned key accepts state-changing frames only when tagged
with the current session key and carrying a fresh counter (see SPEC.md,
"Authentication"). Key derivation:

    session_key = HMAC(K, SESSION_LABEL | host_nonce | node_nonce | session_id as u16 BE)
"""

import hashlib

from pfproto.defs import SESSION_LABEL, TAG_LEN


class Hmac:
    """HMAC-SHA256 with the key pads computed once (3 us a tag on the unix port)."""

    def __init__(self, key):
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        k = bytearray(64)
        k[: len(key)] = key
        self._ipad = bytes(b ^ 0x36 for b in k)
        self._opad = bytes(b ^ 0x5C for b in k)

    def digest(self, *parts):
        h = hashlib.sha256(self._ipad)
        for p in parts:
            h.update(p)
        inner = h.digest()
        h = hashlib.sha256(self._opad)
        h.update(inner)
        return h.digest()

    def tag(self, data):
        return self.digest(data)[:TAG_LEN]


def equal(a, b):
    """Compare two tags in time independent of where they differ."""
    if len(a) != len(b):
        return False
    r = 0
    for i in range(len(a)):
        r |= a[i] ^ b[i]
    return r == 0


def derive_session_key(key, host_nonce, node_nonce, session_id):
    sid = bytes((session_id >> 8, session_id & 0xFF))
    return Hmac(key).digest(SESSION_LABEL, host_nonce, node_nonce, sid)


class Session:
    """The node's view of its session with the host.

    `id` 0 means no session. `last_seq` is the highest counter accepted in this
    session; a command repeated with the same counter (a host retry) is a
    duplicate, answered again but not applied twice.
    """

    def __init__(self, key=None):
        self.key = key  # long-term key (bytes) or None for an unkeyed node
        self.key_mac = Hmac(key) if key else None
        self.mac = None  # Hmac of the session key
        self.id = 0
        self.last_seq = 0
        self.last_cmd_seq = -1
        self.last_cmd_result = (0, -1)  # (RES_*, key) of the last command, for duplicates
        self.tx_seq = 0

    @property
    def keyed(self):
        return self.key is not None

    def start(self, session_id, host_nonce, node_nonce):
        self.id = session_id
        self.last_seq = 0
        self.last_cmd_seq = -1
        self.last_cmd_result = (0, -1)
        self.tx_seq = 0
        if self.key:
            self.mac = Hmac(derive_session_key(self.key, host_nonce, node_nonce, session_id))

    def next_tx_seq(self):
        self.tx_seq = (self.tx_seq + 1) & 0xFFFFFFFF
        return self.tx_seq
