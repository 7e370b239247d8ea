"""`rp2` HAL backend (RP2040). ADC pins are GPIO26-29; the watchdog allows at most 8.3 s."""

from pfnode.hal.board import BoardHal


class Rp2Hal(BoardHal):
    def __init__(self, pins, vref_full_mv=16000):
        super().__init__(pins, vref_full_mv, wdt_max_ms=8300)
