"""Frame encoding and decoding on the host.

Wire form: ``cobs(header | body | [tag] | crc32) + b"\\x00"``; see `protocol/SPEC.md`.
`decode_block` checks in the same order as the node (COBS, length, CRC, version,
flags, tag, CBOR, body) and raises `FrameError` carrying the REJ_* reason.
"""

from __future__ import annotations

import hmac
import math
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

import cbor2
from cobs import cobs

from pfproto import defs as d
from pfproto import fields_host  # noqa: F401  (extends the field tables)
from pfproto.names import REJ_NAMES
from pfproto.fields import FIELDS, T_CURVE, T_GAINS, T_NUM, check_body

Body = dict[int, Any]
_HEADER = struct.Struct(d.HEADER_FMT)


class FrameError(ValueError):
    """A frame that must be rejected; `reason` is a REJ_* code, `key` the body key at fault."""

    def __init__(self, reason: int, key: int = -1, detail: str = "") -> None:
        self.reason = reason
        self.key = key
        name = REJ_NAMES.get(reason, str(reason))
        super().__init__(f"{name}{f' (key {key})' if key >= 0 else ''}{': ' + detail if detail else ''}")


@dataclass
class Frame:
    """A decoded frame. `tag` is None for an untagged frame."""

    type: int
    src: int
    dst: int
    session: int
    seq: int
    body: Body = field(default_factory=dict)
    flags: int = 0
    version: int = d.PROTOCOL_VERSION
    tag: bytes | None = None
    signed: bytes = b""  # header|body, the bytes the tag covers


_F32_MAX = 3.4028234663852886e38


def round_f32(x: float) -> float:
    """The value a float takes on the wire (float32, then the shortest exact CBOR float)."""
    return struct.unpack(">f", struct.pack(">f", x))[0]


def _f32_floats(v: Any) -> Any:
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, float):
        if not math.isfinite(v) or abs(v) > _F32_MAX:
            raise ValueError(f"{v!r} cannot be carried as a float32")
        return round_f32(v)
    if isinstance(v, list | tuple):
        return [_f32_floats(x) for x in v]
    if isinstance(v, dict):
        return {k: _f32_floats(x) for k, x in v.items()}
    return v


def _as_float(v: Any) -> Any:
    if isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, list):
        return [_as_float(x) for x in v]
    return v


def coerce_body(body: Body) -> Body:
    """Make SI quantities floats (the wire never carries them as integers)."""
    out = dict(body)
    for k, v in body.items():
        kind = FIELDS.get(k, (None,))[0]
        if kind in (T_NUM, T_GAINS, T_CURVE):
            out[k] = _as_float(v)
    return out


def wire_body(body: Body) -> Body:
    """The body as the receiver decodes it: SI quantities as floats, rounded to float32.
    Raises ValueError for a float no float32 can carry (inf, nan, above 3.4e38)."""
    out: Body = _f32_floats(coerce_body(body))
    return out


def encode_body(body: Body) -> bytes:
    """Deterministic CBOR (RFC 8949 s4.2) with floats carried at single precision."""
    return cbor2.dumps(_f32_floats(coerce_body(body)), canonical=True)


def tag_of(key: bytes, signed: bytes) -> bytes:
    return hmac.new(key, signed, sha256).digest()[: d.TAG_LEN]


def encode_frame(
    msg_type: int,
    src: int,
    dst: int,
    session: int,
    seq: int,
    body: Body,
    key: bytes | None = None,
) -> bytes:
    """Build the wire bytes (COBS block plus the 0x00 delimiter) of one frame.

    `key` tags the frame (HMAC-SHA256, 16 bytes) when given. Raises ValueError
    for a body that would not fit a frame.
    """
    raw_body = encode_body(body)
    if len(raw_body) > d.MAX_BODY:
        raise ValueError(f"body of {len(raw_body)} bytes exceeds {d.MAX_BODY}")
    flags = d.FLAG_AUTH if key is not None else 0
    data = _HEADER.pack(d.PROTOCOL_VERSION, flags, msg_type, src, dst, session, seq) + raw_body
    if key is not None:
        data += tag_of(key, data)
    data += struct.pack(">I", zlib.crc32(data))
    return cobs.encode(data) + b"\x00"


def _plain(v: Any) -> bool:
    if v is None or isinstance(v, bool | int | float | str | bytes):
        return True
    if isinstance(v, list):
        return all(_plain(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, int) and k >= 0 and _plain(x) for k, x in v.items())
    return False


def _depth(v: Any) -> int:
    if isinstance(v, list):
        return 1 + max((_depth(x) for x in v), default=0)
    if isinstance(v, dict):
        return 1 + max((_depth(x) for x in v.values()), default=0)
    return 0


def decode_body(raw: bytes) -> Body:
    """Decode a body; anything but a deterministic, tag-free map raises FrameError(REJ_CBOR)."""
    try:
        body = cbor2.loads(raw)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as e:
        raise FrameError(d.REJ_CBOR, detail=str(e)) from None
    if not isinstance(body, dict):
        raise FrameError(d.REJ_TYPE, detail="body is not a map")
    if not _plain(body) or _depth(body) > d.MAX_DEPTH:
        raise FrameError(d.REJ_CBOR, detail="tags, non-integer keys or nesting too deep")
    try:
        canonical = cbor2.dumps(body, canonical=True)
    except (ValueError, TypeError):
        canonical = b""
    if canonical != raw:
        raise FrameError(d.REJ_CBOR, detail="not deterministic CBOR")
    return body


def decode_block(
    block: bytes,
    key_for: Callable[[Frame], bytes | None] | None = None,
    check: bool = True,
) -> Frame:
    """Decode one COBS block (without its 0x00 delimiter).

    `key_for(frame)` returns the key the frame must be tagged with, or None
    when no tag is required; a tag that is present is always verified when a
    key is known. `check` validates the body against `pfproto.fields`.
    """
    if len(block) > d.MAX_FRAME + d.MAX_FRAME // 254 + 1:
        raise FrameError(d.REJ_OVERSIZED)
    try:
        data = cobs.decode(block)
    except cobs.DecodeError as e:
        raise FrameError(d.REJ_COBS, detail=str(e)) from None
    if len(data) < d.MIN_FRAME:
        raise FrameError(d.REJ_TRUNCATED)
    if len(data) > d.MAX_FRAME:
        raise FrameError(d.REJ_OVERSIZED)
    (crc,) = struct.unpack_from(">I", data, len(data) - d.CRC_LEN)
    if zlib.crc32(data[: -d.CRC_LEN]) != crc:
        raise FrameError(d.REJ_CRC)
    version, flags, msg_type, src, dst, session, seq = _HEADER.unpack_from(data)
    if version != d.PROTOCOL_VERSION:
        raise FrameError(d.REJ_VERSION)
    if flags & ~d.FLAGS_KNOWN:
        raise FrameError(d.REJ_FLAGS)
    end = len(data) - d.CRC_LEN
    tag = None
    if flags & d.FLAG_AUTH:
        end -= d.TAG_LEN
        tag = data[end : end + d.TAG_LEN]
    if end <= d.HEADER_LEN:
        raise FrameError(d.REJ_TRUNCATED)
    frame = Frame(msg_type, src, dst, session, seq, {}, flags, version, tag, data[:end])
    if msg_type not in d.TO_NODE and msg_type not in d.TO_HOST:
        raise FrameError(d.REJ_UNKNOWN_MSG)
    key = key_for(frame) if key_for is not None else None
    if key is not None:
        if tag is None:
            raise FrameError(d.REJ_NO_TAG)
        if not hmac.compare_digest(tag, tag_of(key, frame.signed)):
            raise FrameError(d.REJ_TAG)
    frame.body = decode_body(data[d.HEADER_LEN : end])
    if check:
        reason, k = check_body(msg_type, frame.body)
        if reason:
            raise FrameError(reason, k)
    return frame


class StreamDecoder:
    """Splits a byte stream on 0x00 delimiters and decodes each block.

    `feed(data)` yields `Frame` or `FrameError` objects in arrival order and keeps
    the per-reason reject counts in `rejects`. A run of bytes longer than any
    valid frame is dropped up to the next delimiter (counted as oversized).
    """

    def __init__(self, key_for: Callable[[Frame], bytes | None] | None = None) -> None:
        self.key_for = key_for
        self.rejects = [0] * d.N_REJ
        self.frames = 0
        self._buf = bytearray()
        self._overflow = False

    def feed(self, data: bytes) -> Iterator[Frame | FrameError]:
        limit = d.MAX_FRAME + d.MAX_FRAME // 254 + 1
        start = 0
        while True:
            z = data.find(b"\x00", start)
            part = data[start:] if z < 0 else data[start:z]
            if not self._overflow:
                self._buf += part
                if len(self._buf) > limit:
                    self._overflow = True
                    self._buf.clear()
            if z < 0:
                return
            start = z + 1
            if self._overflow:
                self._overflow = False
                self.rejects[d.REJ_OVERSIZED] += 1
                yield FrameError(d.REJ_OVERSIZED)
                continue
            block = bytes(self._buf)
            self._buf.clear()
            if not block:
                continue
            try:
                frame = decode_block(block, self.key_for)
            except FrameError as e:
                self.rejects[e.reason] += 1
                yield e
            else:
                self.frames += 1
                yield frame
