"""The host's implementation of the PowerFlow wire protocol (`protocol/SPEC.md`).

Independent of the node's codec on purpose: CBOR through `cbor2`, COBS through
`cobs`, tags through `hmac`, CRC through `zlib`; the test vectors hold the two
implementations to the same bytes.
"""

from powerflow.protocol.codec import (
    Frame,
    FrameError,
    StreamDecoder,
    decode_block,
    encode_frame,
)
from powerflow.protocol.names import body_from_names, body_to_names, key_name

__all__ = [
    "Frame",
    "FrameError",
    "StreamDecoder",
    "body_from_names",
    "body_to_names",
    "decode_block",
    "encode_frame",
    "key_name",
]
