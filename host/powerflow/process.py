"""What the host process takes for itself before it starts anything: the API's listening
socket and its state directory; and the bound on how long it takes to stop.

The socket is bound first, before the emulated rack or any link is started and before the
heavy imports, so a port in use is one line and exit 2 at once, with nothing left behind.
The state directory follows the XDG base directory rules (`$XDG_STATE_HOME/powerflow`, else
`~/.local/state/powerflow`); under systemd, `StateDirectory=powerflow` sets
`$STATE_DIRECTORY`, which wins over both. Nothing is written to the current directory.

A stop (SIGTERM, Ctrl-C or the end of `--duration`) is orderly: the API answers what it
is answering, the nodes' sessions close, the emulated rack stops, the database is flushed.
`StopDeadline` bounds it: a stop that has not finished within STOP_WITHIN_S writes one line
and every thread's stack to stderr and exits with status 1, so a service manager (and an
operator) is never left waiting on a host that cannot finish, and the stacks say why.
"""

from __future__ import annotations

import errno
import faulthandler
import os
import socket
import sys
import threading
from pathlib import Path

STOP_WITHIN_S = 20.0  # an orderly stop takes about 1 s; systemd's own limit is 90 s


class ListenError(OSError):
    """The API's address cannot be listened on; the message says which and why."""


def listen(bind: str, port: int) -> socket.socket:
    """A listening TCP socket on `bind`:`port` (an IPv4/IPv6 address or a host name)."""
    try:
        infos = socket.getaddrinfo(bind, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ListenError(f"cannot listen on {bind}:{port}: {e.strerror}") from None
    family, _, _, _, addr = infos[0]
    try:
        # SO_REUSEADDR (set by create_server) lets a restarted host rebind a port whose old
        # connections are in TIME_WAIT; a port another process listens on is still refused
        sock = socket.create_server(addr, family=family, backlog=128)
    except OSError as e:
        why = os.strerror(e.errno) if e.errno else str(e)
        hint = " (another process listens there; choose --port)" if e.errno == errno.EADDRINUSE else ""
        raise ListenError(f"cannot listen on {bind}:{port}: {why}{hint}") from None
    # asyncio sets TCP_NODELAY only on sockets it creates with proto IPPROTO_TCP, and this
    # one (proto 0) is handed to the server ready-made: without it, a response's headers
    # and body are two segments, the second held by Nagle until the client's delayed ACK,
    # and every request on a kept-alive connection took 40 ms more (measured: 44 against
    # 0.7 ms). Accepted connections inherit the option from the listening socket (Linux).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def state_dir(explicit: str | Path | None = None) -> Path:
    """Where the host keeps its databases: `explicit` (--state-dir), else
    `$STATE_DIRECTORY` (systemd), `$XDG_STATE_HOME/powerflow`, `~/.local/state/powerflow`."""
    if explicit:
        return Path(explicit)
    systemd = os.environ.get("STATE_DIRECTORY")
    if systemd:
        return Path(systemd.split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "powerflow"


def default_db(rack_name: str, emulated: bool, folder: Path) -> Path:
    """The telemetry database of a rack in the state directory. A real rack's history is kept
    across runs (that is what it is for); an emulated run starts a database of its own, so
    one demo's telemetry, events and audit never show up in the next."""
    folder.mkdir(parents=True, exist_ok=True)
    if not emulated:
        return folder / f"{rack_name}-telemetry.sqlite3"
    path = folder / f"{rack_name}-emulated.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


class StopDeadline:
    """Once armed, ends the process (status 1) unless disarmed within `seconds` s; as a
    context manager, disarmed on the way out."""

    def __init__(self, seconds: float = STOP_WITHIN_S) -> None:
        self.seconds = seconds
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        if self._timer is None:
            self._timer = threading.Timer(self.seconds, self._expire)
            self._timer.daemon = True  # never what keeps the process alive
            self._timer.start()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def __enter__(self) -> StopDeadline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.disarm()  # the run is over (asyncio.run has joined its threads): so is the stop

    def _expire(self) -> None:
        sys.stderr.write(f"powerflow: error: the host did not stop within {self.seconds:g} s; "
                         "the threads' stacks follow, then exit 1\n")
        sys.stderr.flush()
        faulthandler.dump_traceback(sys.stderr, all_threads=True)
        os._exit(1)
