"""Byte transports to a node, as asyncio streams: a serial device (USB-CDC, UART
adapter, or an emulated node's pseudo-terminal) through pyserial, or TCP.

A link address is written `serial:/dev/ttyACM0[@baud]` or `tcp:HOST:PORT`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import serial_asyncio_fast


@dataclass(frozen=True)
class LinkAddress:
    kind: str  # "serial" or "tcp"
    target: str  # device path, or host
    port: int = 0  # TCP port, or serial baud rate

    @classmethod
    def parse(cls, text: str) -> LinkAddress:
        """Parse `serial:/dev/ttyX[@baud]` or `tcp:host:port`; ValueError says what is wrong."""
        kind, sep, rest = text.partition(":")
        if not sep or not rest:
            raise ValueError(f"link {text!r}: expected serial:DEVICE[@BAUD] or tcp:HOST:PORT")
        if kind == "serial":
            dev, _, baud = rest.partition("@")
            try:
                b = int(baud) if baud else 1_000_000
            except ValueError:
                raise ValueError(f"link {text!r}: baud rate {baud!r} is not a number") from None
            return cls("serial", dev, b)
        if kind == "tcp":
            host, _, port = rest.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"link {text!r}: expected tcp:HOST:PORT with PORT 1..65535")
            return cls("tcp", host, int(port))
        raise ValueError(f"link {text!r}: unknown kind {kind!r} (serial or tcp)")

    def __str__(self) -> str:
        return f"serial:{self.target}@{self.port}" if self.kind == "serial" else \
            f"tcp:{self.target}:{self.port}"


async def open_link(addr: LinkAddress) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open the link; raises OSError (or serial.SerialException) when it cannot."""
    if addr.kind == "serial":
        return await serial_asyncio_fast.open_serial_connection(url=addr.target, baudrate=addr.port)
    return await asyncio.open_connection(addr.target, addr.port)
