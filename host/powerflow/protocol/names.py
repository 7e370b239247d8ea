"""Readable names for body keys and messages, taken from `pfproto.defs` (K_*, MSG_*)."""

from __future__ import annotations

from typing import Any

from pfproto import defs as d

KEY_NAMES: dict[int, str] = {v: k[2:] for k, v in vars(d).items() if k.startswith("K_")}
KEY_NUMBERS: dict[str, int] = {n: k for k, n in KEY_NAMES.items()}
MSG_NAMES: dict[int, str] = {v: k[4:] for k, v in vars(d).items() if k.startswith("MSG_")}
MSG_NUMBERS: dict[str, int] = {n: k for k, n in MSG_NAMES.items()}


def key_name(key: int) -> str:
    return KEY_NAMES.get(key, str(key))


def body_to_names(body: dict[int, Any]) -> dict[str, Any]:
    """{36: 12.0} -> {"VOUT_COMMAND": 12.0}; bytes become {"hex": "..."} (JSON-ready)."""

    def conv(v: Any) -> Any:
        if isinstance(v, bytes):
            return {"hex": v.hex()}
        if isinstance(v, list):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        return v

    return {key_name(k): conv(v) for k, v in body.items()}


def body_from_names(named: dict[str, Any]) -> dict[int, Any]:
    """Inverse of `body_to_names`; raises KeyError naming an unknown field."""

    def conv(v: Any) -> Any:
        if isinstance(v, dict) and set(v) == {"hex"}:
            return bytes.fromhex(v["hex"])
        if isinstance(v, list):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {int(k): conv(x) for k, x in v.items()}
        return v

    out = {}
    for name, v in named.items():
        if name not in KEY_NUMBERS:
            raise KeyError(f"unknown field name {name!r}")
        out[KEY_NUMBERS[name]] = conv(v)
    return out
