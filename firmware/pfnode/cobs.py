"""Consistent Overhead Byte Stuffing (Cheshire & Baker 1999), in place where it can be.

Frames on the wire are `cobs(frame) + b"\\x00"`; a receiver resynchronises on
the next zero after any error, which is why serial links and TCP use the same
framing.
"""


def encode_into(src, n, dst):
    """COBS-encode `src[:n]` into `dst` (at least n + n // 254 + 1 bytes); returns the length.

    Allocation-free: telemetry is sent from a preallocated buffer.
    """
    code_pos = 0
    out = 1
    code = 1
    for i in range(n):
        c = src[i]
        if c == 0:
            dst[code_pos] = code
            code_pos = out
            out += 1
            code = 1
        else:
            dst[out] = c
            out += 1
            code += 1
            if code == 0xFF:
                dst[code_pos] = code
                code_pos = out
                out += 1
                code = 1
    dst[code_pos] = code
    return out


def decode_in_place(buf, n):
    """Decode the COBS block `buf[:n]` (no delimiter) into `buf`; returns the decoded length.

    Returns -1 when the block is not valid COBS (a zero byte inside, or a code
    that runs past the end).
    """
    i = 0
    out = 0
    while i < n:
        code = buf[i]
        if code == 0 or i + code > n:
            return -1
        i += 1
        for _ in range(code - 1):
            c = buf[i]
            if c == 0:
                return -1
            buf[out] = c
            out += 1
            i += 1
        if code != 0xFF and i < n:
            buf[out] = 0
            out += 1
    return out
