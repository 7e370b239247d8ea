"""Millisecond ticks that wrap, as MicroPython's `time.ticks_*` define them.

On a board the built-ins are used: they are C code and never allocate. Under
CPython (the emulator's fast mode) the same arithmetic is done in Python.
Always compare ticks with `ticks_diff`, never with `<`: they wrap every TICKS_PERIOD ms.
"""

try:
    from time import ticks_add, ticks_diff  # type: ignore[attr-defined]

    # 2**30 on 32-bit boards, 2**62 on the 64-bit unix port
    TICKS_PERIOD = ticks_add(0, -1) + 1  # type: ignore[type-var]
except ImportError:  # CPython
    TICKS_PERIOD = 1 << 30
    _HALF = 1 << 29

    def ticks_add(ticks, delta):  # type: ignore[misc,no-redef]
        return (ticks + delta) % TICKS_PERIOD

    def ticks_diff(ticks1, ticks2):  # type: ignore[misc,no-redef]
        return ((ticks1 - ticks2 + _HALF) % TICKS_PERIOD) - _HALF

TICKS_MAX = TICKS_PERIOD - 1
