"""Session-key derivation on the host (SPEC.md, "Sessions")."""

from __future__ import annotations

import hmac
import struct
from hashlib import sha256

from pfproto.defs import SESSION_LABEL


def derive_session_key(key: bytes, host_nonce: bytes, node_nonce: bytes, session_id: int) -> bytes:
    """HMAC-SHA256(K, SESSION_LABEL | host_nonce | node_nonce | session_id as u16 BE)."""
    msg = SESSION_LABEL + host_nonce + node_nonce + struct.pack(">H", session_id)
    return hmac.new(key, msg, sha256).digest()
