"""A serial cable between an emulated node and the host, made of two pseudo-terminals.

The node opens one pty's slave end (as firmware opens its UART); the host opens
the other's with pyserial (as it opens a USB-serial board). A thread copies
bytes between the two masters and can damage them on the way: bit errors and
dropped bytes at given rates, or a cut link. Keeping the slave ends open here
means a node that restarts finds its device still there.
"""

from __future__ import annotations

import os
import random
import select
import threading
import tty
from dataclasses import dataclass


@dataclass
class LinkFaults:
    """What the cable does to bytes in transit (probabilities per byte)."""

    bit_error_rate: float = 0.0
    drop_rate: float = 0.0
    cut: bool = False


@dataclass
class LinkCounters:
    bytes_to_host: int = 0
    bytes_to_node: int = 0
    bits_flipped: int = 0
    bytes_dropped: int = 0
    overruns: int = 0  # bytes lost because the receiving side was not reading


class PtyBridge:
    def __init__(self, faults: LinkFaults | None = None, seed: int | None = None) -> None:
        self.faults = faults or LinkFaults()
        self.counters = LinkCounters()
        self._rng = random.Random(seed)
        self._node_master, self._node_slave = os.openpty()
        self._host_master, self._host_slave = os.openpty()
        for fd in (self._node_slave, self._host_slave):
            tty.setraw(fd)
        # a wire never blocks its sender: a side that is not read (a paused host) overruns
        # and loses bytes, as a UART's receive buffer does, and the other side runs on
        for fd in (self._node_master, self._host_master):
            os.set_blocking(fd, False)
        self.node_path = os.ttyname(self._node_slave)
        self.host_path = os.ttyname(self._host_slave)
        self._wake_r, self._wake_w = os.pipe()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"pty {self.node_path}", daemon=True)
        self._thread.start()

    def _damage(self, data: bytes) -> bytes:
        f = self.faults
        if f.cut:
            self.counters.bytes_dropped += len(data)
            return b""
        if not f.bit_error_rate and not f.drop_rate:
            return data
        out = bytearray()
        for b in data:
            if f.drop_rate and self._rng.random() < f.drop_rate:
                self.counters.bytes_dropped += 1
                continue
            if f.bit_error_rate and self._rng.random() < f.bit_error_rate * 8:
                b ^= 1 << self._rng.randrange(8)
                self.counters.bits_flipped += 1
            out.append(b)
        return bytes(out)

    def _run(self) -> None:
        fds = [self._node_master, self._host_master, self._wake_r]
        while not self._stop:
            ready, _, _ = select.select(fds, [], [])
            for fd in ready:
                if fd == self._wake_r:
                    continue
                try:
                    data = os.read(fd, 4096)
                except (BlockingIOError, OSError):
                    continue
                if fd == self._node_master:
                    self.counters.bytes_to_host += len(data)
                    dst = self._host_master
                else:
                    self.counters.bytes_to_node += len(data)
                    dst = self._node_master
                data = self._damage(data)
                try:
                    n = os.write(dst, data) if data else 0
                except OSError:  # full (nobody reads that end) or closed
                    n = 0
                if n < len(data):
                    self.counters.overruns += len(data) - n  # lost, as on a wire

    def close(self) -> None:
        self._stop = True
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=2)
        for fd in (self._node_master, self._node_slave, self._host_master, self._host_slave,
                   self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
