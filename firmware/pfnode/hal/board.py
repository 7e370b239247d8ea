"""Common code of the real-board backends (`rp2`, `stm32`): ADC scaling, PWM reference,
GPIO switches and the watchdog through MicroPython's `machine` module.

The pin map comes from the node's provisioning file (`node.json`, key "pins"):

    {"vout": "A0", "iout": "A1", "vin": "A2", "iin": "A3", "temp1": "A4",
     "temp2": "A5", "ambient": "A6", "vref_pwm": "B6", "enable": "B7",
     "ports": ["C0", "C1"], "port_sense": ["A7", "B0"],
     "scale": {"vout": 66000, "iout": 100000, ...}}

`scale` gives each analog channel's full-scale reading in milli-units (the
value at ADC code 65535). Analog temperature sensors are taken as linear:
m-degC = (mV - 500) * 100, as for a TMP36-class part; the offset and slope can
be overridden with "temp_offset_mv" and "temp_mc_per_mv".

The ambient sensor may instead be a Sensirion SHT3x/SHT4x on I2C (temperature and
humidity; `pfnode.hal.ambient`):

    "ambient_i2c": {"kind": "sht3x", "addr": 68, "bus": 0, "sda": 4, "scl": 5,
                    "freq": 100000, "period_ms": 1000}

(`sda`/`scl` for the RP2040's buses; an STM32 board names its hardware bus by `bus`
alone). It is polled from `sample()`, one short transaction at a time.
"""

import machine  # type: ignore[import-not-found]

_DEFAULT_SCALE = {
    "vout": 66000, "iout": 100000, "vin": 66000, "iin": 50000, "temp1": 3300,
    "temp2": 3300, "ambient": 3300, "port_sense": 66000,
}


class BoardHal:
    PWM_FREQ = 100000  # Hz; an RC filter turns the duty cycle into the reference

    def __init__(self, pins, vref_full_mv=16000, wdt_max_ms=8000):
        self._pins = pins
        scale = dict(_DEFAULT_SCALE)
        scale.update(pins.get("scale", {}))
        # full-scale >> 4 keeps raw * scale below 2**30 (no big-int allocation)
        self._k = {name: s >> 4 for name, s in scale.items()}
        self._adc = {}
        for name in ("vout", "iout", "vin", "iin", "temp1", "temp2", "ambient"):
            if name in pins:
                self._adc[name] = self.make_adc(pins[name])
        self._sense = [self.make_adc(p) for p in pins.get("port_sense", [])]
        self._pwm = machine.PWM(machine.Pin(pins["vref_pwm"]), freq=self.PWM_FREQ, duty_u16=0)
        self._en = machine.Pin(pins["enable"], machine.Pin.OUT, value=0)
        self._ports = [machine.Pin(p, machine.Pin.OUT, value=0) for p in pins.get("ports", [])]
        self.nports = len(self._ports)
        self._vref_k = (65535 << 8) // vref_full_mv  # duty per mV, Q8
        self._toff = pins.get("temp_offset_mv", 500)
        self._tk = pins.get("temp_mc_per_mv", 100)
        self._wdt = None
        self._wdt_max = wdt_max_ms
        self.vin_mv = self.iin_ma = self.vout_mv = self.iout_ma = 0
        self.temp1_mc = self.temp2_mc = self.ambient_mc = 0
        self.humidity_mpct = 0
        self.ambient = None
        amb = pins.get("ambient_i2c")
        if amb is not None:
            from pfnode.hal.ambient import Ambient

            self.ambient = Ambient(self.make_i2c(amb), amb.get("kind", "sht3x"),
                                   amb.get("addr", 0x44), amb.get("period_ms", 1000))

    def make_i2c(self, conf):
        return machine.I2C(conf.get("bus", 0), scl=machine.Pin(conf["scl"]),
                           sda=machine.Pin(conf["sda"]), freq=conf.get("freq", 100000))

    def make_adc(self, pin):
        return machine.ADC(machine.Pin(pin))

    def _read(self, name):
        a = self._adc.get(name)
        if a is None:
            return 0
        return (a.read_u16() * self._k[name]) >> 12

    def _temp(self, name):
        return (self._read(name) - self._toff) * self._tk

    def ticks_ms(self):
        import time

        return time.ticks_ms()  # type: ignore[attr-defined]

    def sample(self):
        self.vout_mv = self._read("vout")
        self.iout_ma = self._read("iout")
        self.vin_mv = self._read("vin")
        self.iin_ma = self._read("iin")
        self.temp1_mc = self._temp("temp1")
        self.temp2_mc = self._temp("temp2")
        a = self.ambient
        if a is None:
            self.ambient_mc = self._temp("ambient")
            return
        a.poll(self.ticks_ms())
        self.ambient_mc = a.temp_mc
        self.humidity_mpct = a.humidity_mpct

    def port_mv(self, port):
        if port >= len(self._sense):
            return 0
        return (self._sense[port].read_u16() * self._k["port_sense"]) >> 12

    def set_vref(self, mv):
        duty = (mv * self._vref_k) >> 8
        self._pwm.duty_u16(duty if duty < 65535 else 65535)

    def set_enable(self, on):
        self._en.value(1 if on else 0)

    def set_port(self, port, closed):
        self._ports[port].value(1 if closed else 0)

    def wdt_start(self, timeout_ms):
        self._wdt = machine.WDT(timeout=min(timeout_ms, self._wdt_max))

    def wdt_feed(self):
        if self._wdt is not None:
            self._wdt.feed()

    def reset_cause(self):
        from pfproto.defs import BOOT_POWER_ON, BOOT_SOFT, BOOT_WATCHDOG

        c = machine.reset_cause()
        if c == machine.WDT_RESET:
            return BOOT_WATCHDOG
        if c == machine.SOFT_RESET:
            return BOOT_SOFT
        return BOOT_POWER_ON
