"""Ambient temperature and humidity from a Sensirion SHT3x or SHT4x on I2C.

Both parts answer a measurement command with six bytes: temperature (MSB, LSB, CRC) and
humidity (MSB, LSB, CRC), each CRC-8 over its two bytes (polynomial 0x31, initial 0xFF). A
conversion takes up to 15.5 ms (SHT3x, high repeatability) or 8.3 ms (SHT4x, high
precision), so the driver never waits for one: `poll(now_ms)` starts a conversion, and a
later poll, once the conversion time has passed, reads it; the next starts again after
`period_ms`. Each poll is one short bus transaction or none, with preallocated buffers and
integer arithmetic (no big integers: every product stays below 2**30).

Units: m-degC and milli-%RH. A reading whose CRC fails is dropped (`crc_errors`); a part
that does not answer (`OSError`: NACK, bus fault) is counted (`bus_errors`) and tried again
next period. The last good values stay until `STALE_MS` without one, then `ok` is False;
the readings are never invented.

    sensor = Ambient(i2c, kind="sht3x", addr=0x44)
    sensor.poll(time.ticks_ms())    # from the HAL's sample(), as often as it likes
    sensor.temp_mc, sensor.humidity_mpct, sensor.ok
"""

from pfnode.clock import ticks_add, ticks_diff

# command, conversion time (ms), humidity offset and span (milli-%RH over the raw range)
KINDS = {
    "sht3x": (b"\x24\x00", 16, 0, 100000),  # single shot, high repeatability, no stretching
    "sht4x": (b"\xfd", 9, -6000, 125000),  # high precision
}
STALE_MS = 10000


def crc8(buf, start, n):
    """Sensirion's CRC-8 of buf[start:start + n] (poly 0x31, init 0xFF)."""
    crc = 0xFF
    for i in range(start, start + n):
        crc ^= buf[i]
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def scale(raw, span, offset):
    """offset + span * raw / 65535, exactly (floor), without a product above 2**30:
    span = 1000 * s splits into raw * s (< 2**24) and its remainder times 1000."""
    x = raw * (span // 1000)
    q = x // 65535  # not divmod: its tuple would allocate
    return offset + q * 1000 + ((x - q * 65535) * 1000) // 65535


class Ambient:
    def __init__(self, i2c, kind="sht3x", addr=0x44, period_ms=1000):
        if kind not in KINDS:
            raise ValueError("unknown ambient sensor: " + kind)
        self._i2c = i2c
        self._addr = addr
        self._cmd, self._conv_ms, self._rh_off, self._rh_span = KINDS[kind]
        self._period = period_ms
        self._buf = bytearray(6)
        self._started = -1  # ticks of the conversion under way, or -1
        self._next = 0  # ticks after which to start the next
        self._last_ok = 0
        self._have = False
        self.temp_mc = 0
        self.humidity_mpct = 0
        self.ok = False
        self.crc_errors = 0
        self.bus_errors = 0

    def poll(self, now_ms):
        """Advance: start a conversion when one is due, read it once it is done."""
        if self._started >= 0:
            if ticks_diff(now_ms, self._started) < self._conv_ms:
                return
            self._started = -1
            self._next = ticks_add(now_ms, self._period)
            try:
                self._i2c.readfrom_into(self._addr, self._buf)
            except OSError:
                self.bus_errors += 1
            else:
                self._take(now_ms)
        elif ticks_diff(now_ms, self._next) >= 0:
            try:
                self._i2c.writeto(self._addr, self._cmd)
                self._started = now_ms
            except OSError:
                self.bus_errors += 1
                self._next = ticks_add(now_ms, self._period)
        self.ok = self._have and ticks_diff(now_ms, self._last_ok) < STALE_MS

    def _take(self, now_ms):
        b = self._buf
        if crc8(b, 0, 2) != b[2] or crc8(b, 3, 2) != b[5]:
            self.crc_errors += 1
            return
        self.temp_mc = scale((b[0] << 8) | b[1], 175000, -45000)
        rh = scale((b[3] << 8) | b[4], self._rh_span, self._rh_off)
        self.humidity_mpct = 0 if rh < 0 else 100000 if rh > 100000 else rh
        self._last_ok = now_ms
        self._have = True
