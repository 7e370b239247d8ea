"""One emulated converter node: the real firmware in its own MicroPython process.

The firmware runs from its mpy-cross build (as on a board) with the heap capped
like the smallest target, on the `sim` HAL backend, talking over a pty cable
(`PtyBridge`) or a loopback TCP port.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from powerflow.firmware import ensure_build, micropython

HEAP = "100K"


try:  # loaded here, not in the child: between fork and exec a threaded parent's child may
    # not import or dlopen anything (it could deadlock on a lock another thread held)
    import ctypes

    _LIBC: Any = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:
    _LIBC = None


def _die_with_parent() -> None:
    """In the child: receive SIGKILL when the emulator's process dies (Linux prctl), so a
    host killed with SIGKILL leaves no node processes behind."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class NodeProcess:
    """Start, kill and restart one node. `conf` is the node.json `pfnode.main` reads."""

    def __init__(self, conf: dict[str, Any], heap: str = HEAP, workdir: Path | None = None) -> None:
        self.conf = conf
        self.heap = heap
        self._tmp = tempfile.TemporaryDirectory(prefix=f"pfnode{conf['node_id']}-")
        self.workdir = workdir or Path(self._tmp.name)
        self.conf_path = self.workdir / "node.json"
        self.log_path = self.workdir / "node.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        fw = ensure_build("armv6m")
        self.conf_path.write_text(json.dumps(self.conf))
        env = dict(os.environ, MICROPYPATH=f"{fw}:.frozen")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [micropython(), "-X", f"heapsize={self.heap}", str(fw / "main.py"),
             str(self.conf_path)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=self.workdir, preexec_fn=_die_with_parent)
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a node that loses power."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def terminate(self) -> None:
        """SIGTERM without waiting: a rack stopping tells all its nodes first, then waits."""
        if self.alive():
            assert self.proc is not None
            self.proc.terminate()

    def stop(self) -> None:
        """SIGTERM, and SIGKILL if the node has not ended within 3 s."""
        if self.alive():
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()
