# A stand-in for MicroPython's `machine` on the unix port, which has no ADC, PWM, I2C or WDT:
# just enough for the board HALs to be built and sampled in tests.


class Pin:
    OUT = 1

    def __init__(self, name, mode=0, value=0):
        self.name = name
        self.v = value

    def value(self, v=None):
        if v is not None:
            self.v = v
        return self.v


class ADC:
    def __init__(self, pin):
        self.code = 0

    def read_u16(self):
        return self.code


class PWM:
    def __init__(self, pin, freq=0, duty_u16=0):
        self.duty = duty_u16

    def duty_u16(self, d):
        self.duty = d


class WDT:
    def __init__(self, timeout=0):
        self.fed = 0

    def feed(self):
        self.fed += 1


I2C_BUSES = []


class I2C:
    """A bus whose devices are given by the test: `I2C_BUSES[-1].device = FakeSensor(...)`."""

    def __init__(self, bus, scl=None, sda=None, freq=100000):
        self.bus = bus
        self.freq = freq
        self.device = None
        I2C_BUSES.append(self)

    def writeto(self, addr, buf):
        return self.device.writeto(addr, buf)

    def readfrom_into(self, addr, buf):
        return self.device.readfrom_into(addr, buf)


WDT_RESET = 3
SOFT_RESET = 5


def reset_cause():
    return 1
