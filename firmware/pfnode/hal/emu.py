"""`emu` HAL backend: a node of the emulated rack, its hardware being the rack physics.

Sensors and actuators are register files shared with the physics process
(`pfproto.emuregs`). The files are read and written in `background()`, outside
the control step, so the step itself stays allocation-free; an actuator change
reaches the physics at the next control period, like a DAC update.
"""

import struct
import time

from pfproto import emuregs as R

_FMT_S = "<%di" % R.SENSOR_WORDS
_FMT_A = "<%di" % R.ACTUATOR_WORDS


class EmuHal:
    def __init__(self, sensors, actuators, nports=2, reset_cause=0):
        self.nports = nports
        self._sf = open(sensors, "rb")
        self._af = open(actuators, "r+b")
        self._sbuf = bytearray(4 * R.SENSOR_WORDS)
        self._abuf = bytearray(4 * R.ACTUATOR_WORDS)
        self._aseq = 0
        self.vin_mv = self.iin_ma = self.vout_mv = self.iout_ma = 0
        self.temp1_mc = self.temp2_mc = self.ambient_mc = self.humidity_mpct = 0
        self._port = [0] * 8
        self.vref_mv = 0
        self.enabled = False
        self.ports_closed = [False] * nports
        self._written = None
        self.wdt_feeds = 0
        self.wdt_timeout_ms = 0
        self.wdt_fed = 0  # ticks_ms of the last feed
        self._reset_cause = reset_cause
        self.background()

    def ticks_ms(self):
        return time.ticks_ms()  # type: ignore[attr-defined]

    def background(self):
        """Publish the actuators if they changed, then take the latest sensor readings."""
        mask = 0
        for i in range(self.nports):
            if self.ports_closed[i]:
                mask |= 1 << i
        state = (self.vref_mv, 1 if self.enabled else 0, mask, self.wdt_timeout_ms, self.wdt_fed)
        if state != self._written:
            self._aseq += 1
            struct.pack_into(_FMT_A, self._abuf, 0, self._aseq, state[0], state[1], state[2],
                             state[3], state[4], self._aseq)
            self._af.seek(0)
            self._af.write(self._abuf)
            self._af.flush()
            self._written = state
        self._sf.seek(0)
        if (self._sf.readinto(self._sbuf) or 0) < len(self._sbuf):
            return
        w = struct.unpack(_FMT_S, self._sbuf)
        if w[0] != w[R.SENSOR_WORDS - 1] or w[0] == 0:
            return  # torn write, or the physics has not started: keep the last readings
        self.vin_mv, self.iin_ma = w[R.S_VIN], w[R.S_IIN]
        self.vout_mv, self.iout_ma = w[R.S_VOUT], w[R.S_IOUT]
        self.temp1_mc, self.temp2_mc = w[R.S_TEMP1], w[R.S_TEMP2]
        self.ambient_mc, self.humidity_mpct = w[R.S_AMBIENT], w[R.S_HUMIDITY]
        for i in range(8):
            self._port[i] = w[R.S_PORT0 + i]

    def sample(self):
        pass  # readings were taken by background()

    def port_mv(self, port):
        return self._port[port]

    def set_vref(self, mv):
        self.vref_mv = mv

    def set_enable(self, on):
        self.enabled = on

    def set_port(self, port, closed):
        self.ports_closed[port] = closed

    def wdt_start(self, timeout_ms):
        self.wdt_timeout_ms = timeout_ms
        self.wdt_fed = self.ticks_ms()

    def wdt_feed(self):
        self.wdt_feeds += 1
        self.wdt_fed = self.ticks_ms()

    def reset_cause(self):
        return self._reset_cause
