"""Property tests of the host codec (hypothesis), and of the firmware's CBOR encoder
against cbor2 (the firmware modules are plain Python and import under CPython too)."""

from __future__ import annotations

import struct

import cbor2
import pytest
from cobs import cobs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pfproto import defs as d
from pfproto.fields import check_body
from powerflow.protocol import FrameError, StreamDecoder, decode_block, encode_frame
from powerflow.protocol.codec import encode_body, round_f32

KEY = bytes(range(32))
f32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
volts = st.floats(0.0, 60.0, width=32)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)

setpoints = st.fixed_dictionaries(
    {d.K_VOUT_COMMAND: volts, d.K_LEASE_MS: st.integers(d.LEASE_MS_MIN, d.LEASE_MS_MAX)},
    optional={d.K_OPERATION: st.booleans()})
configs = st.fixed_dictionaries({}, optional={
    d.K_VOUT_OV_FAULT_LIMIT: volts, d.K_OT_WARN_LIMIT: st.floats(-40.0, 150.0, width=32),
    d.K_GAINS: st.lists(st.floats(0.0, 32.0, width=32), min_size=2, max_size=2),
    d.K_FAILSAFE: st.integers(0, 2), d.K_TELEMETRY_PERIOD_MS: st.integers(10, 60000),
    d.K_FAULT_RESPONSE: st.dictionaries(st.integers(0, 3), st.tuples(
        st.integers(0, 2), st.integers(0, 255), st.integers(0, 600000)).map(list), max_size=4)})
headers = st.tuples(st.integers(1, 0xFFFE), st.integers(0, 0xFFFF), u32)

# any CBOR-able value the firmware encoder supports
leaves = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | f32 | st.text(max_size=20) \
    | st.binary(max_size=20)
values = st.recursive(leaves, lambda kids: st.lists(kids, max_size=4)
                      | st.dictionaries(st.integers(0, 2**32), kids, max_size=4), max_leaves=12)


@given(setpoints, headers, st.booleans())
def test_setpoint_round_trip(body, header, keyed) -> None:
    dst, session, seq = header
    key = KEY if keyed else None
    wire = encode_frame(d.MSG_SETPOINT, d.ADDR_HOST, dst, session, seq, body, key)
    assert wire.count(b"\x00") == 1 and wire.endswith(b"\x00")
    f = decode_block(wire[:-1], key_for=lambda _: key)
    assert (f.type, f.src, f.dst, f.session, f.seq) == (d.MSG_SETPOINT, 0, dst, session, seq)
    assert f.body == body
    assert (f.tag is not None) == keyed


@given(configs)
def test_config_round_trip(body) -> None:
    wire = encode_frame(d.MSG_CONFIG, 0, 3, 1, 1, body)
    assert decode_block(wire[:-1]).body == body


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_are_single_precision_and_shortest(x) -> None:
    if abs(x) > 3.4028234663852886e38:
        with pytest.raises(ValueError, match="float32"):
            encode_body({d.K_VALUE: x})
        return
    raw = encode_body({d.K_VALUE: x})
    assert raw[-3] == 0xF9 or raw[-5] == 0xFA  # float16 or float32, never float64
    assert cbor2.loads(raw)[d.K_VALUE] == round_f32(x)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_stream_decoder_never_raises(data) -> None:
    dec = StreamDecoder()
    out = list(dec.feed(data))
    assert sum(dec.rejects) + dec.frames == len(out)


@given(setpoints, st.data())
def test_every_bit_flip_is_caught(body, data) -> None:
    wire = encode_frame(d.MSG_SETPOINT, 0, 3, 9, 10, body)
    raw = bytearray(cobs.decode(wire[:-1]))
    i = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[i // 8] ^= 1 << (i % 8)
    try:
        decode_block(cobs.encode(bytes(raw)))
    except FrameError as e:
        assert e.reason in (d.REJ_CRC,)
    else:
        raise AssertionError("a flipped bit went through")


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.integers(0, 100), values, max_size=6), st.sampled_from(sorted(
    {d.MSG_SETPOINT, d.MSG_CONFIG, d.MSG_PORT_SWITCH, d.MSG_HELLO, d.MSG_TELEMETRY, 0x77})))
def test_body_checks_never_raise(body, msg_type) -> None:
    reason, key = check_body(msg_type, body)
    assert reason == 0 or reason in range(d.N_REJ)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_firmware_cbor_encoder_matches_cbor2(v) -> None:
    from pfnode import cbor as fw

    ours = fw.encode(v, size=4096)

    def f32(x):
        if isinstance(x, float):
            return struct.unpack(">f", struct.pack(">f", x))[0]
        if isinstance(x, list):
            return [f32(y) for y in x]
        if isinstance(x, dict):
            return {k: f32(y) for k, y in x.items()}
        return x

    assert ours == cbor2.dumps(f32(v), canonical=True)
    assert fw.decode(ours, max_depth=64) == cbor2.loads(ours)
