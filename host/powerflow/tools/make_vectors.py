"""Write the protocol test vectors into `protocol/vectors/` (one JSON file per vector).

    python -m powerflow.tools.make_vectors [--out protocol/vectors]

Each file holds the wire bytes in hex and what they mean: the header fields, the
body with named keys, and either `"valid": true` or the reject reason a
receiver must count (`"reject": "crc"`, ...). Optional `"mac_key"` is the key the
tag must verify with (the receiver requires a tag when it is given) and
`"context": {"last_seq": N}` the receiver's replay counter before the frame.

The vectors are generated once and committed; the tests then hold both the
firmware codec (under MicroPython) and the host codec (under CPython) to them
byte for byte, so a change to either codec that alters the wire shows up.
"""

from __future__ import annotations

import argparse
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import cbor2
from cobs import cobs

from pfproto import defs as d
from pfproto.names import REJ_NAMES
from powerflow.protocol.codec import encode_body, encode_frame
from powerflow.protocol.names import MSG_NAMES, body_to_names

KEY = bytes(range(32))  # the vectors' provisioned / session key
SESSION = 0x1234


def _wire(msg_type: int, src: int, dst: int, body: dict[int, Any], seq: int = 7,
          session: int = SESSION, key: bytes | None = None) -> bytes:
    return encode_frame(msg_type, src, dst, session, seq, body, key)


def _raw(data: bytes) -> bytes:
    """Frame arbitrary header|body|tag bytes with a correct CRC and COBS."""
    data += struct.pack(">I", zlib.crc32(data))
    return cobs.encode(data) + b"\x00"


def _header(msg_type: int, src: int = 0, dst: int = 3, seq: int = 7, flags: int = 0,
            version: int = d.PROTOCOL_VERSION, session: int = SESSION) -> bytes:
    return struct.pack(d.HEADER_FMT, version, flags, msg_type, src, dst, session, seq)


def valid_vectors() -> list[dict[str, Any]]:
    v: list[dict[str, Any]] = []

    def add(name: str, desc: str, msg_type: int, src: int, dst: int, body: dict[int, Any],
            seq: int = 7, session: int = SESSION, key: bytes | None = None) -> None:
        v.append({
            "name": name, "description": desc, "valid": True,
            "mac_key": key.hex() if key else None,
            "wire": _wire(msg_type, src, dst, body, seq, session, key).hex(),
            "header": {"version": d.PROTOCOL_VERSION, "flags": d.FLAG_AUTH if key else 0,
                       "type": MSG_NAMES[msg_type], "src": src, "dst": dst,
                       "session": session, "seq": seq},
            # the values as the wire carries them (floats at single precision)
            "body": body_to_names(cbor2.loads(encode_body(body))),
            "body_hex": encode_body(body).hex(),
        })

    add("hello", "node 3 introduces itself after a power-on reset", d.MSG_HELLO, 3, 0, {
        d.K_NODE_ID: 3, d.K_FW_VERSION: "0.1.0", d.K_BOARD: "rp2-pico",
        d.K_MFR_VOUT_MAX: 14.0, d.K_MFR_IOUT_MAX: 50.0, d.K_MFR_POUT_MAX: 600.0,
        d.K_MFR_VIN_MIN: 40.0, d.K_MFR_VIN_MAX: 60.0,
        d.K_CAPABILITIES: d.CAP_DROOP | d.CAP_PORTS | d.CAP_AUTH, d.K_PORTS: 2,
        d.K_UPTIME_MS: 1503, d.K_KEYED: True, d.K_BOOT_REASON: d.BOOT_POWER_ON}, seq=1, session=0)
    add("identify", "host asks every node for its HELLO (broadcast, empty body)",
        d.MSG_IDENTIFY, 0, d.ADDR_BROADCAST, {}, seq=1, session=0)
    add("heartbeat_host", "host heartbeat inside a session", d.MSG_HEARTBEAT, 0, 3,
        {d.K_UPTIME_MS: 60000})
    add("heartbeat_node", "node heartbeat with status, tagged", d.MSG_HEARTBEAT, 3, 0,
        {d.K_UPTIME_MS: 4294967295, d.K_STATUS_WORD: 0x0840, d.K_MODE: d.MODE_OFF,
         d.K_LEASE_LEFT_MS: 0}, seq=0xFFFFFFFF, key=KEY)
    add("telemetry", "full telemetry: floats in float16 and float32, negative current",
        d.MSG_TELEMETRY, 3, 0, {
            d.K_UPTIME_MS: 123456, d.K_READ_VIN: 48.125, d.K_READ_IIN: 10.2,
            d.K_READ_VOUT: 12.003, d.K_READ_IOUT: -1.5, d.K_READ_POUT: -18.0045,
            d.K_READ_TEMPERATURE_1: 61.25, d.K_READ_TEMPERATURE_2: 55.0,
            d.K_READ_TEMPERATURE_3: 27.4, d.K_READ_HUMIDITY: 41.0, d.K_STATUS_WORD: 0,
            d.K_IOUT_LIMIT: 50.0, d.K_MODE: d.MODE_CV, d.K_REJECTS: [0] * d.N_REJ,
            d.K_PORT_STATE: 0b01, d.K_LEASE_LEFT_MS: 2500, d.K_FAULTS: 0, d.K_VOUT_COMMAND: 12.0,
            d.K_WARNINGS: 0}, key=KEY)
    add("setpoint", "12.0 V for a 3 s lease, tagged", d.MSG_SETPOINT, 0, 3,
        {d.K_VOUT_COMMAND: 12.0, d.K_LEASE_MS: 3000}, seq=8, key=KEY)
    add("setpoint_off", "output off (untagged, for an unkeyed node)", d.MSG_SETPOINT, 0, 3,
        {d.K_VOUT_COMMAND: 0.0, d.K_LEASE_MS: 100, d.K_OPERATION: False}, seq=9)
    add("port_close", "close port 1", d.MSG_PORT_SWITCH, 0, 3, {d.K_PORT: 1, d.K_CLOSE: True},
        seq=10, key=KEY)
    add("config", "every configuration field at once", d.MSG_CONFIG, 0, 3, {
        d.K_VOUT_OV_FAULT_LIMIT: 13.5, d.K_VOUT_OV_WARN_LIMIT: 13.0,
        d.K_VOUT_UV_WARN_LIMIT: 11.0, d.K_VOUT_UV_FAULT_LIMIT: 10.5,
        d.K_IOUT_OC_WARN_LIMIT: 48.0, d.K_IOUT_OC_FAULT_LIMIT: 55.0,
        d.K_OT_WARN_LIMIT: 95.0, d.K_OT_FAULT_LIMIT: 110.0, d.K_VOUT_DROOP: 0.004,
        d.K_VOUT_TRANSITION_RATE: 50.0, d.K_TON_RISE: 0.02, d.K_GAINS: [0.25, 15.0],
        d.K_DERATE_CURVE: [[80.0, 1.0], [100.0, 0.5], [110.0, 0.0]],
        d.K_FAILSAFE: d.FS_HOLD, d.K_HEARTBEAT_TIMEOUT_MS: 2000,
        d.K_TELEMETRY_PERIOD_MS: 250, d.K_FAULT_RESPONSE: {d.PROT_OC: [d.RESP_RETRY, 5, 1000]},
        d.K_DEBOUNCE: 4, d.K_INTERLOCK_DV: 0.25}, seq=11, key=KEY)
    add("clear_faults", "clear latched faults and failsafe", d.MSG_CLEAR_FAULTS, 0, 3, {},
        seq=12, key=KEY)
    add("session_init", "host opens a session, tagged with the provisioned key",
        d.MSG_SESSION_INIT, 0, 3, {d.K_NONCE: bytes(range(16, 32))}, seq=1, session=0, key=KEY)
    add("session_accept", "node accepts: its nonce and the new session id",
        d.MSG_SESSION_ACCEPT, 3, 0, {d.K_NONCE: bytes(range(32, 48)), d.K_SESSION: SESSION,
                                     d.K_ACK_SEQ: 1}, seq=1, key=KEY)
    add("ack_ok", "acknowledgement of seq 8: ok", d.MSG_ACK, 3, 0,
        {d.K_ACK_SEQ: 8, d.K_RESULT: d.RES_OK}, seq=20)
    add("ack_range", "setpoint refused: VOUT_COMMAND out of range", d.MSG_ACK, 3, 0,
        {d.K_ACK_SEQ: 9, d.K_RESULT: d.RES_RANGE, d.K_REASON: d.REJ_RANGE,
         d.K_FIELD: d.K_VOUT_COMMAND}, seq=21)
    add("event_fault", "over-current trip at 63.5 A", d.MSG_EVENT, 3, 0,
        {d.K_EVENT: d.EV_FAULT, d.K_UPTIME_MS: 99000, d.K_FAULTS: d.FAULT_OC, d.K_VALUE: 63.5,
         d.K_STATUS_WORD: d.SW_IOUT_OC | d.SW_IOUT | d.SW_OFF}, seq=22)
    add("event_port", "port 0 closed", d.MSG_EVENT, 3, 0,
        {d.K_EVENT: d.EV_PORT, d.K_UPTIME_MS: 99100, d.K_PORT: 0, d.K_STATUS_WORD: 0}, seq=23)
    add("long_text", "a 32-character board name: a COBS block of more than 254 bytes without zeros",
        d.MSG_HELLO, 0x0101, 0, {
            d.K_NODE_ID: 0x0101, d.K_FW_VERSION: "v" * 32, d.K_BOARD: "B" * 32,
            d.K_MFR_VOUT_MAX: 54.5, d.K_MFR_IOUT_MAX: 101.5, d.K_MFR_POUT_MAX: 5500.0,
            d.K_MFR_VIN_MIN: 40.5, d.K_MFR_VIN_MAX: 59.5, d.K_CAPABILITIES: 0x1F,
            d.K_PORTS: 8, d.K_UPTIME_MS: 0x01010101, d.K_KEYED: False, d.K_BOOT_REASON: 1},
        seq=0x01010101, session=0x0101)
    add("setpoint_standby", "off, but starting at 12.2 V if the bus falls under 11.64 V "
        "(standby)", d.MSG_SETPOINT, 0, 3, {d.K_VOUT_COMMAND: 12.2, d.K_LEASE_MS: 3000,
                                             d.K_OPERATION: False, d.K_VOUT_WAKE: 11.64},
        seq=13, key=KEY)
    add("event_wake", "a converter in standby started: the bus read 11.0 V", d.MSG_EVENT, 3, 0,
        {d.K_EVENT: d.EV_WAKE, d.K_UPTIME_MS: 99200, d.K_FAULTS: 0, d.K_VALUE: 11.0,
         d.K_STATUS_WORD: 0}, seq=24)
    return v


def invalid_vectors() -> list[dict[str, Any]]:
    v: list[dict[str, Any]] = []

    def add(name: str, desc: str, wire: bytes, reject: int, key: bytes | None = None,
            context: dict[str, int] | None = None) -> None:
        item: dict[str, Any] = {"name": name, "description": desc, "valid": False,
                                "reject": REJ_NAMES[reject], "mac_key": key.hex() if key else None,
                                "wire": wire.hex()}
        if context:
            item["context"] = context
        v.append(item)

    sp = {d.K_VOUT_COMMAND: 12.0, d.K_LEASE_MS: 3000}
    good = _wire(d.MSG_SETPOINT, 0, 3, sp)
    raw = cobs.decode(good[:-1])
    flipped = bytearray(raw)
    flipped[15] ^= 0x01
    add("bad_crc", "one bit flipped in the body", cobs.encode(bytes(flipped)) + b"\x00", d.REJ_CRC)
    add("bad_cobs", "a COBS code byte pointing past the end of the block",
        bytes([0x05, 0x01, 0x02, 0x00]), d.REJ_COBS)
    add("truncated", "a frame shorter than header + body + CRC",
        _raw(_header(d.MSG_SETPOINT)[:10]), d.REJ_TRUNCATED)
    add("truncated_tagged", "AUTH flag set but no room for body and tag",
        _raw(_header(d.MSG_SETPOINT, flags=d.FLAG_AUTH) + b"\xa0" * 3), d.REJ_TRUNCATED)
    add("oversized", "a block longer than any valid frame",
        _raw(_header(d.MSG_SETPOINT) + encode_body({d.K_BOARD: "x" * 32}) + b"\x01" * 400),
        d.REJ_OVERSIZED)
    add("wrong_version", "protocol version 2", _raw(_header(d.MSG_SETPOINT, version=2)
                                                   + encode_body(sp)), d.REJ_VERSION)
    add("unknown_flags", "a flag bit no version defines",
        _raw(_header(d.MSG_SETPOINT, flags=0x80) + encode_body(sp)), d.REJ_FLAGS)
    add("unknown_message", "message type 0x7f", _raw(_header(0x7F) + encode_body({})),
        d.REJ_UNKNOWN_MSG)
    add("cbor_truncated", "the body's CBOR stops inside a float",
        _raw(_header(d.MSG_SETPOINT) + encode_body(sp)[:-3]), d.REJ_CBOR)
    add("cbor_tag", "a CBOR tag (1, epoch time) as a value",
        _raw(_header(d.MSG_SETPOINT) + bytes.fromhex("a21822c11a514b67b01824f94a00")), d.REJ_CBOR)
    add("cbor_indefinite", "an indefinite-length map",
        _raw(_header(d.MSG_SETPOINT) + bytes.fromhex("bf1822190bb81824f94a00ff")), d.REJ_CBOR)
    add("cbor_duplicate_key", "the same key twice",
        _raw(_header(d.MSG_SETPOINT) + bytes.fromhex("a318220118240118240a")), d.REJ_CBOR)
    add("cbor_trailing", "bytes after the body's map",
        _raw(_header(d.MSG_SETPOINT) + encode_body(sp) + b"\x00"), d.REJ_CBOR)
    add("body_not_map", "an array where the body map belongs",
        _raw(_header(d.MSG_SETPOINT) + bytes.fromhex("82f94a00190bb8")), d.REJ_TYPE)
    add("wrong_type_text", "VOUT_COMMAND as a text string",
        _wire(d.MSG_SETPOINT, 0, 3, {d.K_VOUT_COMMAND: "12", d.K_LEASE_MS: 3000}), d.REJ_TYPE)
    add("wrong_type_int", "VOUT_COMMAND as an integer (SI quantities are floats)",
        _raw(_header(d.MSG_SETPOINT) + bytes.fromhex("a21822190bb818240c")), d.REJ_TYPE)
    add("out_of_range_vout", "VOUT_COMMAND 72 V", _wire(d.MSG_SETPOINT, 0, 3, {
        d.K_VOUT_COMMAND: 72.0, d.K_LEASE_MS: 3000}), d.REJ_RANGE)
    add("out_of_range_lease", "a 50 ms lease (minimum 100 ms)", _wire(d.MSG_SETPOINT, 0, 3, {
        d.K_VOUT_COMMAND: 12.0, d.K_LEASE_MS: 50}), d.REJ_RANGE)
    add("out_of_range_nan", "VOUT_COMMAND NaN (float16 7e00)",
        _raw(_header(d.MSG_SETPOINT) + bytes.fromhex("a21822190bb81824f97e00")), d.REJ_RANGE)
    add("out_of_range_curve", "a derating curve whose temperatures fall",
        _wire(d.MSG_CONFIG, 0, 3, {d.K_DERATE_CURVE: [[100.0, 1.0], [90.0, 0.5]]}), d.REJ_RANGE)
    add("missing_field", "SETPOINT without LEASE_MS", _wire(d.MSG_SETPOINT, 0, 3, {
        d.K_VOUT_COMMAND: 12.0}), d.REJ_MISSING)
    add("unknown_field", "SETPOINT with key 99", _raw(_header(d.MSG_SETPOINT)
                                                     + bytes.fromhex("a31822190bb81824f94a001863f5")),
        d.REJ_UNKNOWN_FIELD)
    wrong_key = bytes(32)
    add("bad_tag", "tagged with another key", _wire(d.MSG_SETPOINT, 0, 3, sp, key=wrong_key),
        d.REJ_TAG, key=KEY)
    tagged = bytearray(cobs.decode(_wire(d.MSG_SETPOINT, 0, 3, sp, key=KEY)[:-1]))
    tagged[-5] ^= 0xFF  # last tag byte
    tagged[-4:] = struct.pack(">I", zlib.crc32(bytes(tagged[:-4])))
    add("bad_tag_bit", "right key, one tag byte changed (CRC recomputed)",
        cobs.encode(bytes(tagged)) + b"\x00", d.REJ_TAG, key=KEY)
    add("no_tag", "an untagged command for a keyed receiver", good, d.REJ_NO_TAG, key=KEY)
    add("replay", "a validly tagged command whose counter was already used",
        _wire(d.MSG_SETPOINT, 0, 3, sp, seq=5, key=KEY), d.REJ_REPLAY, key=KEY,
        context={"last_seq": 9})
    return v


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("protocol/vectors"))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.json"):
        old.unlink()
    vectors = valid_vectors() + invalid_vectors()
    for i, vec in enumerate(vectors):
        (args.out / f"{i:02d}_{vec['name']}.json").write_text(json.dumps(vec, indent=1) + "\n")
    print(f"wrote {len(vectors)} vectors to {args.out}")


if __name__ == "__main__":
    main()
