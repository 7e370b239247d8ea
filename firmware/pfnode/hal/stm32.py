"""`stm32` HAL backend (STM32F4, pyboard-class). Pins are named as the board names them
("X1", "A0", ...); the independent watchdog allows up to 32 s."""

from pfnode.hal.board import BoardHal


class Stm32Hal(BoardHal):
    def __init__(self, pins, vref_full_mv=16000):
        super().__init__(pins, vref_full_mv, wdt_max_ms=32000)

    def make_i2c(self, conf):
        import machine  # type: ignore[import-not-found]

        # the pyboard's hardware buses are named by number (1: X9/X10, 2: Y9/Y10)
        return machine.I2C(conf.get("bus", 1), freq=conf.get("freq", 100000))
