"""Validate bodies against `protocol/powerflow.cddl` with pycddl (an independent check
of `pfproto.fields`, used by the tests and by `powerflow` tooling on captured frames)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pycddl

from pfproto import defs as d

RULES = {
    d.MSG_HELLO: "hello",
    d.MSG_IDENTIFY: "identify",
    d.MSG_TELEMETRY: "telemetry",
    d.MSG_SETPOINT: "setpoint",
    d.MSG_PORT_SWITCH: "port-switch",
    d.MSG_CONFIG: "config",
    d.MSG_CLEAR_FAULTS: "clear-faults",
    d.MSG_SESSION_INIT: "session-init",
    d.MSG_SESSION_ACCEPT: "session-accept",
    d.MSG_ACK: "ack",
    d.MSG_EVENT: "event",
}


def cddl_path() -> Path:
    """The schema file: beside the repository's `protocol/pfproto`, or packaged next to it."""
    import pfproto

    return Path(pfproto.__file__).resolve().parent.parent / "powerflow.cddl"




def rule_for(msg_type: int, from_host: bool) -> str:
    if msg_type == d.MSG_HEARTBEAT:
        return "host-heartbeat" if from_host else "node-heartbeat"
    return RULES[msg_type]


@cache
def _schema(rule: str) -> pycddl.Schema:
    text = cddl_path().read_text()
    return pycddl.Schema(f"root = {rule}\n{text}")


def validate(msg_type: int, raw_body: bytes, from_host: bool) -> None:
    """Raise `pycddl.ValidationError` (KeyError for an unknown type) if the body does not fit.

    `from_host` tells the direction, which decides the heartbeat's rule.
    """
    _schema(rule_for(msg_type, from_host)).validate_cbor(raw_body)
