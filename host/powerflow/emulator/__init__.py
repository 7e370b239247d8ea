"""The emulated rack: real firmware on the real MicroPython interpreter, one process per node."""
