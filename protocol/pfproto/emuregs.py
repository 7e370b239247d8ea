"""Register files between an emulated node's `emu` HAL and the rack physics (emulation only).

Two small files per node, little-endian int32 words, written whole:
sensors (physics -> node) and actuators (node -> physics). Each starts and ends
with the same sequence number; a reader that sees them differ caught a write
half done and keeps its previous values.
"""

try:
    from micropython import const
except ImportError:

    def const(x):  # type: ignore[no-redef,misc]
        return x


# sensors: seq, vin mV, iin mA, vout mV, iout mA, temp1 m-degC, temp2 m-degC, ambient m-degC,
# humidity milli-%RH, port far-side mV x 8, seq
SENSOR_WORDS = const(18)
S_VIN = const(1)
S_IIN = const(2)
S_VOUT = const(3)
S_IOUT = const(4)
S_TEMP1 = const(5)
S_TEMP2 = const(6)
S_AMBIENT = const(7)
S_HUMIDITY = const(8)
S_PORT0 = const(9)
# actuators: seq, vref mV, enable (0/1), port mask, watchdog timeout ms (0: not started),
# ticks_ms of the last watchdog feed, seq. The physics plays the watchdog's part: a node
# whose feeds stop for the timeout is reset (output off, firmware restarted), as an MCU is.
ACTUATOR_WORDS = const(7)
A_VREF = const(1)
A_ENABLE = const(2)
A_PORTS = const(3)
A_WDT_TIMEOUT = const(4)
A_WDT_FED = const(5)
