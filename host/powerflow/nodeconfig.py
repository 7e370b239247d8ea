"""The session contract a host keeps with each node (live host, scenarios and demo alike): the
CONFIG it sends when the session opens, and the heartbeat and lease timing it then keeps."""

from __future__ import annotations

from typing import Any

from pfproto import defs as d
from powerflow.model.rack import Node
from powerflow.protocol.codec import round_f32

HEARTBEAT_TIMEOUT_MS = 2000  # the node's failsafe timer: no frame from the host for this long
HOST_HEARTBEAT_MS = 500  # the host heartbeats every quarter of it
LEASE_MS = 3000  # a setpoint holds this long unless renewed (then the failsafe takes over)
LEASE_RENEW_S = 1.0  # the live host renews every lease this often (s)
TRANSITION_V_PER_S = 10.0


def session_config(node: Node, bus_voltage: float, telemetry_ms: int, heartbeat_ms: int,
                   match_droop: bool = True) -> dict[int, Any]:
    """CONFIG body: telemetry period and heartbeat timeout (ms); the converter's own droop
    (so sharing follows the rack physics); a gentle transition rate; and the failsafe *revert* at its safe output
    (V, `Node.safe_vout`: droop-centred on the bus voltage):
    a node whose host goes quiet runs on as a plain droop converter, so the rack is never
    worse off for having a host."""
    cfg: dict[int, Any] = {d.K_TELEMETRY_PERIOD_MS: telemetry_ms,
                           d.K_HEARTBEAT_TIMEOUT_MS: heartbeat_ms,
                           # setpoint moves at 10 V/s: a whole rack stepping its references
                           # together (safe mode, failsafe) then moves the bus without an
                           # undershoot, and a plan's trims still take a few ms
                           d.K_VOUT_TRANSITION_RATE: TRANSITION_V_PER_S,
                           d.K_FAILSAFE: d.FS_REVERT,
                           d.K_VOUT_FAILSAFE: node.safe_vout(bus_voltage, match_droop)}
    if match_droop:
        cfg[d.K_VOUT_DROOP] = min(node.r_out, d.DROOP_MAX)
    return cfg


def off_body(lease_ms: int, standby: tuple[float, float] | None = None) -> dict[int, Any]:
    """A SETPOINT body for an output held off: plain, or in standby (V it starts at, V the
    bus must fall under for it to start on its own; protocol/SPEC.md, Standby). Values as
    float32 carries them."""
    if standby is None:
        return {d.K_VOUT_COMMAND: 0.0, d.K_LEASE_MS: lease_ms, d.K_OPERATION: False}
    return {d.K_VOUT_COMMAND: round_f32(standby[0]), d.K_LEASE_MS: lease_ms,
            d.K_OPERATION: False, d.K_VOUT_WAKE: round_f32(standby[1])}
