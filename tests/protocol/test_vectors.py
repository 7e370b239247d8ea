"""The protocol test vectors, decoded and re-encoded by both codecs byte for byte.

Firmware side: the node's codec under the real MicroPython interpreter.
Host side: the cbor2-based codec, plus the CDDL schema through pycddl.
"""

from __future__ import annotations

import json

import pycddl
import pytest

from pfproto import defs as d
from pfproto.names import REJ_NAMES
from powerflow.protocol import FrameError, decode_block, encode_frame
from powerflow.protocol.codec import Frame
from powerflow.protocol.names import MSG_NAMES, body_from_names
from powerflow.protocol.schema import validate
from tests.conftest import ROOT

VECTOR_DIR = ROOT / "protocol" / "vectors"
VECTORS = sorted(VECTOR_DIR.glob("*.json"))
LOADED = {p.stem: json.loads(p.read_text()) for p in VECTORS}
REJ_BY_NAME = {n: v for v, n in REJ_NAMES.items()}


def test_vectors_cover_every_message_type_and_reject_reason() -> None:
    types = {v["header"]["type"] for v in LOADED.values() if v["valid"]}
    assert types == {MSG_NAMES[t] for t in d.TO_NODE + d.TO_HOST}
    rejects = {v["reject"] for v in LOADED.values() if not v["valid"]}
    expected = set(REJ_NAMES.values()) - {"no_session", "direction"}  # need node state: see test_node
    assert rejects >= expected, expected - rejects


def host_check(vec: dict) -> tuple[str | None, Frame | None]:
    wire = bytes.fromhex(vec["wire"])
    assert wire.endswith(b"\x00") and wire.count(b"\x00") == 1
    key = bytes.fromhex(vec["mac_key"]) if vec.get("mac_key") else None
    try:
        frame = decode_block(wire[:-1], key_for=lambda f: key)
    except FrameError as e:
        return REJ_NAMES[e.reason], None
    last = vec.get("context", {}).get("last_seq")
    if last is not None and frame.seq <= last:
        return "replay", frame
    return None, frame


@pytest.mark.parametrize("name", sorted(LOADED))
def test_host_codec(name: str) -> None:
    vec = LOADED[name]
    reject, frame = host_check(vec)
    if not vec["valid"]:
        assert reject == vec["reject"]
        return
    assert reject is None and frame is not None
    h = vec["header"]
    assert (MSG_NAMES[frame.type], frame.src, frame.dst, frame.session, frame.seq) == (
        h["type"], h["src"], h["dst"], h["session"], h["seq"])
    assert frame.body == body_from_names(vec["body"])
    key = bytes.fromhex(vec["mac_key"]) if vec["mac_key"] else None
    again = encode_frame(frame.type, frame.src, frame.dst, frame.session, frame.seq, frame.body, key)
    assert again.hex() == vec["wire"]
    # and the independent schema agrees that the body is valid
    validate(frame.type, bytes.fromhex(vec["body_hex"]), from_host=frame.src == d.ADDR_HOST)


# CDDL cannot say "temperatures rise along the curve": pfproto.fields checks that alone
BEYOND_CDDL = {"out_of_range_curve"}


@pytest.mark.parametrize("name", [n for n, v in LOADED.items() if not v["valid"]
                                  and v["reject"] in ("type", "range", "missing", "unknown_field")
                                  and v["name"] not in BEYOND_CDDL])
def test_schema_rejects_invalid_bodies(name: str) -> None:
    vec = LOADED[name]
    from cobs import cobs

    data = cobs.decode(bytes.fromhex(vec["wire"])[:-1])
    body = data[d.HEADER_LEN:-d.CRC_LEN]
    with pytest.raises(pycddl.ValidationError):
        validate(data[2], body, from_host=True)


@pytest.fixture(scope="module")
def firmware_results(mp_run, mp_test_modules) -> dict[str, dict]:
    proc = mp_run(mp_test_modules / "mp_vectors.py", *[str(p) for p in VECTORS])
    out = {}
    for line in proc.stdout.decode().splitlines():
        r = json.loads(line)
        out[r["name"]] = r
    assert out, proc.stderr.decode()
    return out


@pytest.mark.parametrize("name", sorted(LOADED))
def test_firmware_codec(firmware_results: dict[str, dict], name: str) -> None:
    vec = LOADED[name]
    r = firmware_results.get(vec["name"])
    assert r is not None, "the firmware checker did not report this vector"
    if vec["valid"]:
        assert r["reject"] is None
        assert r["wire"] == vec["wire"], "firmware re-encoding differs"
    else:
        assert r["reject"] == vec["reject"]
