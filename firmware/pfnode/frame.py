"""PowerFlow frames on the node: COBS | header | CBOR body | [tag] | CRC-32.

`Framer.parse()` takes one COBS block and either returns a `Frame` or counts a
reject reason and returns None; it never raises on input and never changes
session state for a frame that fails a check. `Framer.build()` writes an
outgoing frame into preallocated buffers.
"""

import binascii
import struct

from pfnode import cbor
from pfnode.auth import equal
from pfnode.cobs import decode_in_place, encode_into
from pfproto.defs import (
    CRC_LEN,
    FLAG_AUTH,
    FLAGS_KNOWN,
    HEADER_FMT,
    HEADER_LEN,
    MAX_BODY,
    MAX_DEPTH,
    MAX_FRAME,
    MIN_FRAME,
    N_REJ,
    PROTOCOL_VERSION,
    REJ_CBOR,
    REJ_COBS,
    REJ_CRC,
    REJ_FLAGS,
    REJ_OVERSIZED,
    REJ_TAG,
    REJ_TRUNCATED,
    REJ_TYPE,
    REJ_VERSION,
    TAG_LEN,
)

# largest COBS block a valid frame can produce
MAX_BLOCK = MAX_FRAME + MAX_FRAME // 254 + 1


class Frame:
    """A received frame that passed the framing checks. The body is not yet validated."""

    def __init__(self):
        self.version = 0
        self.flags = 0
        self.type = 0
        self.src = 0
        self.dst = 0
        self.session = 0
        self.seq = 0
        self.body = None  # dict after decode_body()
        self.body_start = 0
        self.body_end = 0
        self.tag_pos = -1  # index of the tag in the framer's rx buffer, -1 if untagged

    @property
    def tagged(self):
        return self.tag_pos >= 0


class Framer:
    """Receive and transmit buffers plus reject counters for one link."""

    def __init__(self):
        self.rx = bytearray(MAX_BLOCK + 1)
        self.rx_len = 0
        self.rx_overflow = False
        self.tx = bytearray(MAX_FRAME)
        self.tx_wire = bytearray(MAX_BLOCK + 1)
        self.body = cbor.Encoder(memoryview(self.tx)[HEADER_LEN : HEADER_LEN + MAX_BODY])
        self.rejects = [0] * N_REJ
        self._frame = Frame()
        self._mv = memoryview(self.rx)

    # ---- receive ----------------------------------------------------------
    def feed(self, data, n, on_block):
        """Append `data[:n]` received bytes; call `on_block(length)` for each complete block.

        The block sits at the start of `self.rx` during the call.
        """
        rx = self.rx
        for i in range(n):
            c = data[i]
            if c == 0:
                if self.rx_overflow:
                    self.rejects[REJ_OVERSIZED] += 1
                elif self.rx_len:
                    on_block(self.rx_len)
                self.rx_len = 0
                self.rx_overflow = False
            elif self.rx_len < len(rx):
                rx[self.rx_len] = c
                self.rx_len += 1
            else:
                self.rx_overflow = True

    def parse(self, n):
        """Check the COBS block `self.rx[:n]`; return a `Frame` or None (reject counted).

        Checks, in order: COBS, length, CRC (noise before attack), version, flags.
        The tag is located here and verified by `check_tag()` once the caller
        knows which key applies.
        """
        rej = self.rejects
        if n > MAX_BLOCK:
            rej[REJ_OVERSIZED] += 1
            return None
        m = decode_in_place(self.rx, n)
        if m < 0:
            rej[REJ_COBS] += 1
            return None
        if m < MIN_FRAME:
            rej[REJ_TRUNCATED] += 1
            return None
        if m > MAX_FRAME:
            rej[REJ_OVERSIZED] += 1
            return None
        mv = self._mv
        crc = struct.unpack_from(">I", self.rx, m - CRC_LEN)[0]
        if binascii.crc32(mv[: m - CRC_LEN]) & 0xFFFFFFFF != crc:
            rej[REJ_CRC] += 1
            return None
        f = self._frame
        (f.version, f.flags, f.type, f.src, f.dst, f.session, f.seq) = struct.unpack_from(
            HEADER_FMT, self.rx, 0
        )
        if f.version != PROTOCOL_VERSION:
            rej[REJ_VERSION] += 1
            return None
        if f.flags & ~FLAGS_KNOWN:
            rej[REJ_FLAGS] += 1
            return None
        end = m - CRC_LEN
        f.tag_pos = -1
        if f.flags & FLAG_AUTH:
            end -= TAG_LEN
            f.tag_pos = end
        if end <= HEADER_LEN:
            rej[REJ_TRUNCATED] += 1
            return None
        f.body_start = HEADER_LEN
        f.body_end = end
        f.body = None
        return f

    def check_tag(self, f, mac):
        """True when frame `f` carries a tag that `mac` (an `auth.Hmac`) verifies."""
        if f.tag_pos < 0 or mac is None:
            self.rejects[REJ_TAG] += 1
            return False
        want = mac.tag(self._mv[: f.tag_pos])
        if not equal(want, self._mv[f.tag_pos : f.tag_pos + TAG_LEN]):
            self.rejects[REJ_TAG] += 1
            return False
        return True

    def decode_body(self, f):
        """Decode the CBOR body of `f` into `f.body` (a dict); False and a counted reject if bad."""
        try:
            body = cbor.decode(self.rx, f.body_start, f.body_end, MAX_DEPTH)
        except cbor.CborError as e:
            self.rejects[e.args[0]] += 1
            return False
        except (ValueError, IndexError, MemoryError):
            self.rejects[REJ_CBOR] += 1
            return False
        if not isinstance(body, dict):
            self.rejects[REJ_TYPE] += 1
            return False
        f.body = body
        return True

    # ---- transmit ---------------------------------------------------------
    def begin(self):
        """Start a new outgoing body; write it with `self.body` (a `cbor.Encoder`)."""
        self.body.reset()
        return self.body

    def build(self, msg_type, src, dst, session, seq, mac=None):
        """Finish the frame whose body was written since `begin()`; return the wire length.

        The wire bytes (COBS block and 0x00 delimiter) are `self.tx_wire[:length]`.
        """
        tx = self.tx
        n = HEADER_LEN + self.body.pos
        flags = FLAG_AUTH if mac is not None else 0
        struct.pack_into(HEADER_FMT, tx, 0, PROTOCOL_VERSION, flags, msg_type, src, dst, session, seq)
        mv = memoryview(tx)
        if mac is not None:
            tx[n : n + TAG_LEN] = mac.tag(mv[:n])
            n += TAG_LEN
        struct.pack_into(">I", tx, n, binascii.crc32(mv[:n]) & 0xFFFFFFFF)
        n += CRC_LEN
        w = encode_into(tx, n, self.tx_wire)
        self.tx_wire[w] = 0
        return w + 1
