"""Hardware abstraction for the node: everything the firmware touches of the board.

A backend is a class with these members (all readings integers, so that the
control step that uses them never allocates):

    ticks_ms() -> int                 monotonic ms, wrapping at 2**30 (see pfnode.clock)
    sample() -> None                  read every sensor once; fills the attributes below
    vin_mv, iin_ma, vout_mv, iout_ma  input / output voltage (mV) and current (mA);
                                      iout_ma > 0 when the node sources power
    temp1_mc, temp2_mc                converter temperatures (m-degC)
    ambient_mc, humidity_mpct         rack ambient (m-degC, milli-%RH)
    port_mv(port) -> int              voltage on the far side of a mesh port (mV)
    set_vref(mv) -> None              the converter's output reference (mV)
    set_enable(on: bool) -> None      converter run/stop
    set_port(port, closed: bool)      a mesh port switch
    wdt_start(timeout_ms), wdt_feed() the hardware watchdog
    reset_cause() -> int              BOOT_* of pfproto.defs
    nports: int                       number of mesh ports

Backends: `sim` (a stand-alone converter model, for tests and the one-node demo),
`emu` (a node of the emulated rack: register files shared with the rack physics),
`rp2` (RP2040 boards), `stm32` (STM32F4 boards). `load(name, **kw)` imports only the one asked for, so a board never
loads another board's code.
"""


def load(name, **kw):
    if name == "sim":
        from pfnode.hal.sim import SimHal

        return SimHal(**kw)
    if name == "emu":
        from pfnode.hal.emu import EmuHal

        return EmuHal(**kw)
    if name == "rp2":
        from pfnode.hal.rp2 import Rp2Hal

        return Rp2Hal(**kw)
    if name == "stm32":
        from pfnode.hal.stm32 import Stm32Hal

        return Stm32Hal(**kw)
    raise ValueError("unknown HAL backend: " + name)
