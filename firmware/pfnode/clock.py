"""Millisecond ticks that wrap, as MicroPython's `time.ticks_*` define them.

On a board the built-ins are used: they are C code and never allocate. Under
CPython (the emulator's fast mode) the same arithmetic is done in Python.
Always compare ticks with `ticks_diff`, never with `<`: they wrap every 2**30 ms.
"""

try:
    from time import ticks_add, ticks_diff  # type: ignore[attr-defined]
except ImportError:  # CPython
    _PERIOD = 1 << 30
    _HALF = 1 << 29

    def ticks_add(ticks, delta):  # type: ignore[misc]
        return (ticks + delta) % _PERIOD

    def ticks_diff(ticks1, ticks2):  # type: ignore[misc]
        return ((ticks1 - ticks2 + _HALF) % _PERIOD) - _HALF

TICKS_MAX = (1 << 30) - 1
