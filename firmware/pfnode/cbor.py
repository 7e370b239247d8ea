"""A small CBOR (RFC 8949) codec for the node.

Why our own: micropython-lib's cbor2 always sends float64, cannot read float16,
and leaves about 2 KB of garbage per message. This one encodes into a caller's
buffer and speaks exactly the subset PowerFlow uses:

* encode: deterministic encoding (RFC 8949 section 4.2): shortest integer heads,
  map keys in ascending order, floats first rounded to float32 and then sent in
  the shortest of float16/float32 that keeps the value;
* decode: unsigned/negative integers, byte and text strings, arrays, maps with
  unsigned-integer keys, false/true/null and float16/32/64. Tags, indefinite
  lengths, other simple values, duplicate keys and more than `max_depth` levels of
  nested containers raise `CborError`.
"""

import math
import struct

try:
    from micropython import const
except ImportError:  # CPython (fast-mode emulation, tests)

    def const(x):  # type: ignore[no-redef,misc]
        return x


_MT_UINT = const(0)
_MT_NINT = const(1)
_MT_BYTES = const(2)
_MT_TEXT = const(3)
_MT_ARRAY = const(4)
_MT_MAP = const(5)
_MT_SIMPLE = const(7)

# why a reason code and not a message: the caller counts rejects by reason
ERR_MALFORMED = const(7)  # == pfproto.defs.REJ_CBOR
ERR_TYPE = const(8)  # == pfproto.defs.REJ_TYPE


class CborError(Exception):
    """Raised on malformed or unsupported input; `args[0]` is the reject reason."""


def _round32(x):
    return struct.unpack(">f", struct.pack(">f", x))[0]


def _f16_bits(x):
    """The float16 encoding of finite `x`, or -1 when float16 cannot hold it exactly."""
    sign = 0x8000 if math.copysign(1.0, x) < 0 else 0
    a = abs(x)
    if a == 0.0:
        return sign
    m, e = math.frexp(a)  # a = m * 2**e with 0.5 <= m < 1
    big_e = e + 14
    if big_e >= 31:
        return -1
    if big_e >= 1:
        f = (2.0 * m - 1.0) * 1024.0
        fi = int(f)
        if f != fi:
            return -1
        return sign | (big_e << 10) | fi
    f = a * 16777216.0  # subnormal: a = f * 2**-24
    fi = int(f)
    if f != fi or fi >= 1024:
        return -1
    return sign | fi


def _f16_value(h):
    e = (h >> 10) & 0x1F
    f = h & 0x3FF
    if e == 0:
        v = math.ldexp(f, -24)
    elif e == 31:
        v = math.inf if f == 0 else math.nan
    else:
        v = math.ldexp(f + 1024, e - 25)
    return -v if h & 0x8000 else v


class Encoder:
    """Writes CBOR items into a preallocated bytearray; `pos` is the length so far.

    Raises `IndexError` when the buffer is too small: a frame that does not fit
    is a programming error on the node, never a reaction to input.
    """

    def __init__(self, buf):
        self.buf = buf
        self.pos = 0

    def reset(self):
        self.pos = 0

    def _head(self, mt, n):
        b = self.buf
        p = self.pos
        mt <<= 5
        if n < 24:
            b[p] = mt | n
            self.pos = p + 1
        elif n < 0x100:
            b[p] = mt | 24
            b[p + 1] = n
            self.pos = p + 2
        elif n < 0x10000:
            b[p] = mt | 25
            b[p + 1] = n >> 8
            b[p + 2] = n & 0xFF
            self.pos = p + 3
        elif n < 0x100000000:
            b[p] = mt | 26
            for i in range(4):
                b[p + 4 - i] = n & 0xFF
                n >>= 8
            self.pos = p + 5
        else:
            b[p] = mt | 27
            for i in range(8):
                b[p + 8 - i] = n & 0xFF
                n >>= 8
            self.pos = p + 9

    def int(self, n):
        if n >= 0:
            self._head(_MT_UINT, n)
        else:
            self._head(_MT_NINT, -1 - n)

    def float(self, x):
        if x != x or x in (math.inf, -math.inf):
            raise ValueError("non-finite float")
        x = _round32(x)
        h = _f16_bits(x)
        b = self.buf
        p = self.pos
        if h >= 0:
            b[p] = 0xF9
            b[p + 1] = h >> 8
            b[p + 2] = h & 0xFF
            self.pos = p + 3
        else:
            b[p] = 0xFA
            struct.pack_into(">f", b, p + 1, x)
            self.pos = p + 5

    def bool(self, v):
        self.buf[self.pos] = 0xF5 if v else 0xF4
        self.pos += 1

    def null(self):
        self.buf[self.pos] = 0xF6
        self.pos += 1

    def bytes(self, data):
        self._head(_MT_BYTES, len(data))
        p = self.pos
        self.buf[p : p + len(data)] = data
        self.pos = p + len(data)

    def text(self, s):
        data = s.encode()
        self._head(_MT_TEXT, len(data))
        p = self.pos
        self.buf[p : p + len(data)] = data
        self.pos = p + len(data)

    def array(self, n):
        self._head(_MT_ARRAY, n)

    def map(self, n):
        self._head(_MT_MAP, n)

    def value(self, v):
        """Encode any supported Python value (dict keys must be non-negative ints)."""
        if v is None:
            self.null()
        elif v is True or v is False:
            self.bool(v)
        elif isinstance(v, int):
            self.int(v)
        elif isinstance(v, float):
            self.float(v)
        elif isinstance(v, str):
            self.text(v)
        elif isinstance(v, (bytes, bytearray, memoryview)):
            self.bytes(v)
        elif isinstance(v, (list, tuple)):
            self.array(len(v))
            for item in v:
                self.value(item)
        elif isinstance(v, dict):
            self.map(len(v))
            for k in sorted(v):
                self.int(k)
                self.value(v[k])
        else:
            raise TypeError("cannot encode")


def encode(v, size=512):
    """Encode `v` into a new bytes object (allocates; for tests and rare messages)."""
    e = Encoder(bytearray(size))
    e.value(v)
    return bytes(e.buf[: e.pos])


class Decoder:
    """Decodes one item from `buf[pos:end]`; `decode()` returns the value and moves `pos`."""

    def __init__(self, buf, pos=0, end=-1, max_depth=4):
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end < 0 else end
        self.max_depth = max_depth

    def _take(self, n):
        p = self.pos
        if n < 0 or p + n > self.end:
            raise CborError(ERR_MALFORMED)
        self.pos = p + n
        return p

    def _arg(self, ai):
        b = self.buf
        if ai < 24:
            return ai
        if ai == 24:
            return b[self._take(1)]
        if ai == 25:
            p = self._take(2)
            return (b[p] << 8) | b[p + 1]
        if ai == 26:
            p = self._take(4)
            return (b[p] << 24) | (b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3]
        if ai == 27:
            p = self._take(8)
            n = 0
            for i in range(8):
                n = (n << 8) | b[p + i]
            return n
        raise CborError(ERR_MALFORMED)  # 28..30 reserved, 31 indefinite length

    def decode(self, depth=0):
        b = self.buf
        ib = b[self._take(1)]
        mt = ib >> 5
        ai = ib & 0x1F
        if mt == _MT_SIMPLE:
            if ai == 20:
                return False
            if ai == 21:
                return True
            if ai == 22:
                return None
            if ai == 25:
                p = self._take(2)
                return _f16_value((b[p] << 8) | b[p + 1])
            if ai == 26:
                p = self._take(4)
                return struct.unpack_from(">f", b, p)[0]
            if ai == 27:
                p = self._take(8)
                return struct.unpack_from(">d", b, p)[0]
            raise CborError(ERR_MALFORMED)
        n = self._arg(ai)
        if mt == _MT_UINT:
            return n
        if mt == _MT_NINT:
            return -1 - n
        if mt == _MT_BYTES:
            p = self._take(n)
            return bytes(b[p : p + n])
        if mt == _MT_TEXT:
            p = self._take(n)
            try:
                return str(b[p : p + n], "utf-8")
            except UnicodeError:
                raise CborError(ERR_MALFORMED)
        if mt >= _MT_ARRAY and depth >= self.max_depth:
            raise CborError(ERR_MALFORMED)  # containers may nest `max_depth` deep
        if mt == _MT_ARRAY:
            if n > self.end - self.pos:  # each item takes at least one byte
                raise CborError(ERR_MALFORMED)
            out = []
            for _ in range(n):
                out.append(self.decode(depth + 1))
            return out
        if mt == _MT_MAP:
            if 2 * n > self.end - self.pos:
                raise CborError(ERR_MALFORMED)
            d = {}
            for _ in range(n):
                kb = b[self._take(1)]
                if kb >> 5 != _MT_UINT:
                    raise CborError(ERR_TYPE)
                k = self._arg(kb & 0x1F)
                if k in d:
                    raise CborError(ERR_MALFORMED)
                d[k] = self.decode(depth + 1)
            return d
        raise CborError(ERR_MALFORMED)  # major type 6: tags are not used


def decode(buf, pos=0, end=-1, max_depth=4):
    """Decode exactly one item filling `buf[pos:end]`; trailing bytes raise `CborError`."""
    d = Decoder(buf, pos, end, max_depth)
    v = d.decode()
    if d.pos != d.end:
        raise CborError(ERR_MALFORMED)
    return v
