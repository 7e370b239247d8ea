# The ambient sensor driver (Sensirion SHT3x/SHT4x on I2C) under the real MicroPython
# interpreter, through a fake I2C bus behind the HAL: conversions, CRC and bus errors, the
# two-phase timing, staleness, no allocation on the good path, and the board HAL using it.
# Run by tests/firmware/test_node.py; each case_* raises on failure.
import sys

import micropython
from pfnode.hal.ambient import STALE_MS, Ambient, crc8, scale


class FakeSensor:
    """A part on the bus: answers its command with `reading` (six bytes, CRCs computed
    unless `bad_crc`); `nack` makes it not answer; logs every transaction."""

    def __init__(self, addr=0x44, t_raw=0x6666, rh_raw=0x8000):
        self.addr = addr
        self.t_raw = t_raw
        self.rh_raw = rh_raw
        self.nack = False
        self.bad_crc = False
        self.log = []

    def writeto(self, addr, buf):
        if self.nack or addr != self.addr:
            raise OSError(19)  # ENODEV: what machine.I2C raises on a NACK
        self.log.append(("w", bytes(buf)))

    def readfrom_into(self, addr, buf):
        if self.nack or addr != self.addr:
            raise OSError(19)
        b = bytearray([self.t_raw >> 8, self.t_raw & 0xFF, 0, self.rh_raw >> 8,
                       self.rh_raw & 0xFF, 0])
        b[2] = crc8(b, 0, 2)
        b[5] = crc8(b, 3, 2) ^ (0x01 if self.bad_crc else 0)
        for i in range(6):
            buf[i] = b[i]
        self.log.append(("r", 6))


def cycle(s, t0):
    """Poll through one conversion from t0; the time after it."""
    s.poll(t0)
    s.poll(t0 + 20)
    return t0 + 20


def case_crc_is_sensirions():
    assert crc8(b"\xbe\xef", 0, 2) == 0x92  # the datasheets' example
    assert crc8(b"\x00\x00", 0, 2) == 0x81


def case_scaling_is_exact_over_the_whole_range():
    for raw in range(0, 65536, 97):
        for span, off in ((175000, -45000), (100000, 0), (125000, -6000)):
            want = off + (raw * span) // 65535  # big integers here, exact
            assert scale(raw, span, off) == want, (raw, span, off)
    assert scale(65535, 175000, -45000) == 130000 and scale(0, 175000, -45000) == -45000


def case_sht3x_reads_after_its_conversion_time_and_not_before():
    dev = FakeSensor()
    s = Ambient(dev, "sht3x")
    s.poll(1000)
    assert dev.log == [("w", b"\x24\x00")] and not s.ok
    s.poll(1010)  # 10 ms: still converting
    assert len(dev.log) == 1
    s.poll(1016)
    assert dev.log[-1] == ("r", 6)
    assert s.temp_mc == 25000 and s.humidity_mpct == 50000 and s.ok, (s.temp_mc, s.humidity_mpct)
    s.poll(1500)  # the next one waits for its period
    assert len(dev.log) == 2
    s.poll(2016)
    assert dev.log[-1] == ("w", b"\x24\x00")


def case_sht4x_command_and_humidity_clamped():
    dev = FakeSensor(addr=0x44, t_raw=0, rh_raw=0)
    s = Ambient(dev, "sht4x")
    cycle(s, 0)
    assert dev.log[0] == ("w", b"\xfd")
    assert s.temp_mc == -45000 and s.humidity_mpct == 0  # -6 %RH clamps to 0
    dev.rh_raw = 65535
    cycle(s, 2000)
    assert s.humidity_mpct == 100000  # 119 %RH clamps to 100


def case_a_bad_crc_is_dropped_and_counted():
    dev = FakeSensor()
    s = Ambient(dev, "sht3x")
    cycle(s, 0)
    assert s.temp_mc == 25000
    dev.bad_crc = True
    dev.t_raw = 0xFFFF
    cycle(s, 2000)
    assert s.crc_errors == 1 and s.temp_mc == 25000, "a reading that failed its CRC was taken"
    dev.bad_crc = False
    cycle(s, 4000)
    assert s.temp_mc == 130000 and s.crc_errors == 1


def case_a_silent_part_is_counted_retried_and_goes_stale():
    dev = FakeSensor()
    s = Ambient(dev, "sht3x", period_ms=1000)
    cycle(s, 0)
    assert s.ok
    dev.nack = True
    t = 20
    for _ in range(12):
        t += 1000
        cycle(s, t)
    assert s.bus_errors >= 10
    assert not s.ok, "still ok after %d ms without a reading" % STALE_MS
    assert s.temp_mc == 25000  # the last reading stays; nothing is invented
    dev.nack = False
    t += 1000
    cycle(s, t)
    t += 1000
    cycle(s, t)
    assert s.ok


def case_a_part_that_never_answers_is_never_ok():
    dev = FakeSensor(addr=0x45)  # the HAL asks 0x44
    s = Ambient(dev, "sht3x")
    for t in range(0, 30000, 250):
        s.poll(t)
    assert not s.ok and s.bus_errors > 0 and s.temp_mc == 0


def case_unknown_kind_is_refused():
    try:
        Ambient(FakeSensor(), "dht22")
    except ValueError:
        return
    raise AssertionError("an unknown sensor kind was accepted")


def case_the_good_path_does_not_allocate():
    dev = FakeSensor()
    s = Ambient(dev, "sht3x")
    cycle(s, 0)
    dev.log = None  # the fake's own log would allocate: stop it

    class Quiet(FakeSensor):
        def writeto(self, addr, buf):
            pass

        def readfrom_into(self, addr, buf):
            pass  # the buffer keeps the last (valid) bytes

    s._i2c = Quiet()
    micropython.heap_lock()
    try:
        for t in range(2000, 12000, 10):
            s.poll(t)
    finally:
        micropython.heap_unlock()
    assert s.ok and s.temp_mc == 25000


def case_the_board_hal_samples_the_i2c_sensor():
    import fake_machine

    sys.modules["machine"] = fake_machine
    from pfnode.hal.rp2 import Rp2Hal

    pins = {"vout": 26, "vref_pwm": 16, "enable": 17, "ports": [18],
            "ambient_i2c": {"kind": "sht3x", "addr": 0x44, "bus": 0, "sda": 4, "scl": 5}}
    hal = Rp2Hal(pins)
    dev = FakeSensor(t_raw=0x6666, rh_raw=0x4000)
    fake_machine.I2C_BUSES[-1].device = dev
    t = [100]
    hal.ticks_ms = lambda: t[0]
    hal.sample()
    assert dev.log == [("w", b"\x24\x00")]
    t[0] = 120
    hal.sample()
    assert hal.ambient_mc == 25000 and hal.humidity_mpct == 25000, (hal.ambient_mc,
                                                                     hal.humidity_mpct)
    # without the I2C sensor the ambient comes from its ADC channel, as before
    plain = Rp2Hal({"vout": 26, "vref_pwm": 16, "enable": 17, "ambient": 28})
    plain.sample()
    assert plain.ambient is None and plain.humidity_mpct == 0
