"""Mesh port switches with a closing interlock.

A port may always open. It may close only when the voltage on its far side is
within INTERLOCK_DV of this node's output, so that closing never dumps one bus
into another; or when the far side is dead (below 0.5 V) and this node's output
is off, which lets an operator tie a dead segment in before powering it.
"""

from pfproto.defs import RES_INTERLOCK, RES_OK, RES_RANGE

_DEAD_MV = 500


class Ports:
    def __init__(self, hal, cfg):
        self.hal = hal
        self.cfg = cfg
        self.n = hal.nports
        self.state = 0  # bit i set = port i closed
        for p in range(self.n):
            hal.set_port(p, False)

    def request(self, port, close, vout_mv, output_on):
        """Open or close `port`; returns a RES_* code. Nothing changes unless RES_OK."""
        if port >= self.n:
            return RES_RANGE
        if close:
            far = self.hal.port_mv(port)
            dv = far - vout_mv
            if dv < 0:
                dv = -dv
            ok = dv <= self.cfg.interlock_mv or (far < _DEAD_MV and not output_on)
            if not ok:
                return RES_INTERLOCK
            self.state |= 1 << port
        else:
            self.state &= ~(1 << port)
        self.hal.set_port(port, close)
        return RES_OK
