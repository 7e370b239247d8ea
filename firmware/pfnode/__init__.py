"""PowerFlow converter-node firmware (MicroPython)."""
