"""Byte links between the node and the host: the same frames over every one.

`StreamLink` wraps a UART, USB-CDC or (in emulation) a pseudo-terminal;
`TcpLink` listens for the host on boards with a network interface (and in
emulation on loopback). Both offer `wait(timeout_ms)`, `read() -> n` (bytes in
`self.buf[:n]`, 0 when nothing is there) and `write(buf, n)`.
"""

import select

try:
    import socket
except ImportError:  # a board without networking
    socket = None  # type: ignore[assignment]

_RX_CHUNK = 128


class StreamLink:
    """`stream` is read (and written, unless `out` is given: USB-CDC reads stdin, writes stdout)."""

    def __init__(self, stream, out=None):
        self.stream = stream
        self.out = out if out is not None else stream
        self.buf = bytearray(_RX_CHUNK)
        self._poll = select.poll()
        self._poll.register(stream, select.POLLIN)

    def wait(self, timeout_ms):
        return bool(self._poll.poll(timeout_ms))

    def read(self):
        try:
            n = self.stream.readinto(self.buf)
        except OSError:
            return 0
        return n or 0

    def write(self, buf, n):
        mv = memoryview(buf)
        done = 0
        while done < n:
            try:
                w = self.out.write(mv[done:n])
            except OSError:
                return  # a full or vanished link drops the frame; the host retries
            if not w:
                return
            done += w


def open_pty(path):
    """Open an emulated serial device (the slave end of a pty) for non-blocking reads."""
    import termios  # type: ignore[import-not-found]  # unix port only (emulation)

    f = open(path, "r+b")
    fd = f.fileno()
    termios.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[6][6] = 0  # VMIN: return at once, even with no byte (no name on the unix port)
    attrs[6][5] = 0  # VTIME
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return StreamLink(f)


class TcpLink:
    """One host connection at a time; a new connection replaces the old one."""

    def __init__(self, host, port):
        self.buf = bytearray(_RX_CHUNK)
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(socket.getaddrinfo(host, port)[0][-1])
        srv.listen(1)
        srv.setblocking(False)
        self.srv = srv
        self.conn = None
        self._poll = select.poll()
        self._poll.register(srv, select.POLLIN)

    def _drop(self):
        if self.conn is not None:
            self._poll.unregister(self.conn)
            self.conn.close()
            self.conn = None

    def wait(self, timeout_ms):
        ready = self._poll.poll(timeout_ms)
        for obj, ev in ready:
            if obj is self.srv or obj == self.srv:
                try:
                    c, _ = self.srv.accept()
                except OSError:
                    continue
                self._drop()
                c.setblocking(False)
                self.conn = c
                self._poll.register(c, select.POLLIN)
        return bool(ready)

    def read(self):
        if self.conn is None:
            return 0
        try:
            n = self.conn.readinto(self.buf)
        except OSError:
            return 0
        if n == 0:  # peer closed
            self._drop()
            return 0
        return n or 0

    def write(self, buf, n):
        if self.conn is None:
            return
        mv = memoryview(buf)
        done = 0
        try:
            while done < n:
                w = self.conn.write(mv[done:n])
                if not w:
                    break
                done += w
        except OSError:
            self._drop()
