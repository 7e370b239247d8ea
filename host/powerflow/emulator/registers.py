"""The physics side of the register files shared with emulated nodes (`pfproto.emuregs`)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from pfproto import emuregs as R

_S = struct.Struct("<%di" % R.SENSOR_WORDS)
_A = struct.Struct("<%di" % R.ACTUATOR_WORDS)


def _milli(x: float) -> int:
    return int(round(x * 1000.0))


class RegisterFiles:
    """One node's sensor and actuator files, in `folder` (tmpfs when there is one)."""

    def __init__(self, folder: Path, node_id: int) -> None:
        self.sensors = folder / f"node{node_id}.sensors"
        self.actuators = folder / f"node{node_id}.actuators"
        self.sensors.write_bytes(bytes(_S.size))
        self.actuators.write_bytes(bytes(_A.size))
        self._sfd = os.open(self.sensors, os.O_WRONLY)
        self._afd = os.open(self.actuators, os.O_RDONLY)
        self._seq = 0
        self.last = (0, False, 0)
        self.wdt = (0, 0)  # (timeout ms, ticks_ms of the last feed) as last read

    def write_sensors(self, r: dict[str, float], ports: list[float]) -> None:
        self._seq = (self._seq % 0x7FFFFFFF) + 1
        os.pwrite(self._sfd, _S.pack(self._seq, _milli(r["vin"]), _milli(r["iin"]),
                                     _milli(r["vout"]), _milli(r["iout"]), _milli(r["temp1"]),
                                     _milli(r["temp2"]), _milli(r["ambient"]),
                                     _milli(r["humidity"]), *[_milli(v) for v in ports[:8]],
                                     self._seq), 0)

    def read_actuators(self) -> tuple[int, bool, int]:
        """(vref mV, enabled, port mask); the previous values if the file is mid-write."""
        w = _A.unpack(os.pread(self._afd, _A.size, 0))
        if w[0] == w[-1]:
            self.last = (w[R.A_VREF], bool(w[R.A_ENABLE]), w[R.A_PORTS])
            self.wdt = (w[R.A_WDT_TIMEOUT], w[R.A_WDT_FED])
        return self.last

    def reset(self) -> None:
        """The node was reset: its actuators and watchdog are as at power-on."""
        fd = os.open(self.actuators, os.O_WRONLY)
        try:
            os.pwrite(fd, bytes(_A.size), 0)
        finally:
            os.close(fd)
        self.last = (0, False, 0)
        self.wdt = (0, 0)

    def close(self) -> None:
        os.close(self._sfd)
        os.close(self._afd)


def register_folder() -> str | None:
    """tmpfs for the register files when the machine has one."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
