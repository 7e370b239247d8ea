"""`powerflow run` as a process an operator (or systemd) starts and stops: a port in use, a
stop at any moment, links that cannot open, and where its database goes. Each run is marked
with an environment variable its children inherit, so "no orphans" is checked against every
process on the machine, not only the ones the test knows of."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from powerflow.process import default_db, listen, state_dir
from powerflow.testing.chaos import free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "examples" / "racks" / "small.toml"

BAD_LINKS = """
[rack]
name = "badlinks"
bus_voltage = 12.0
[feed]
voltage = 48.0
breaker_limit_w = 1200.0
[[segment]]
id = "A"
[[node]]
id = 1
segment = "A"
link = "serial:/dev/ttyNOSUCH0"
rating_w = 600.0
vout_max = 14.0
iout_max = 50.0
r_out = 0.012
[[node]]
id = 2
segment = "A"
link = "tcp:127.0.0.1:{port}"
rating_w = 600.0
vout_max = 14.0
iout_max = 50.0
r_out = 0.012
[[device]]
id = "d1"
segment = "A"
priority = 1
p_min_w = 10.0
p_max_w = 300.0
p_nom_w = 100.0
"""


def marked(marker: str) -> list[int]:
    """Every live process whose environment carries `marker` (the host and its children)."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if marker.encode() in (p / "environ").read_bytes():
                out.append(int(p.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return out


def host(tmp: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    marker = f"PF_TEST_RUN={uuid.uuid4().hex}"
    env = dict(os.environ, COLUMNS="120", XDG_STATE_HOME=str(tmp / "state"))
    env[marker.split("=")[0]] = marker.split("=")[1]
    proc = subprocess.Popen([sys.executable, "-m", "powerflow.cli", "run", *args], cwd=tmp,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, marker


def test_a_port_in_use_is_one_line_and_exit_2_with_nothing_started(tmp_path: Path) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        t0 = time.monotonic()
        proc, marker = host(tmp_path, str(SMALL), "--emulate", "--port", str(port))
        out, err = proc.communicate(timeout=30)
        elapsed = time.monotonic() - t0
    assert proc.returncode == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0], err
    assert "Address already in use" in lines[0] and out == ""
    assert marked(marker) == []  # no emulated node was ever started
    print(f"port in use: exit 2 after {elapsed:.2f} s")  # bound by the 30 s above, not timed


@pytest.mark.parametrize(("when", "sig"), [("running", signal.SIGTERM),
                                           ("running", signal.SIGINT),
                                           ("starting", signal.SIGTERM)])
def test_a_signal_ends_the_host_cleanly_at_any_moment(tmp_path: Path, when: str,
                                                      sig: signal.Signals) -> None:
    port = free_port()
    proc, marker = host(tmp_path, str(SMALL), "--emulate", "--port", str(port))
    try:
        if when == "running":
            url = f"http://127.0.0.1:{port}/api/v1"
            wait_for(lambda: httpx.get(url + "/status", timeout=5).json()["online"] == 4, 60,
                     "four emulated nodes online")
            assert len(marked(marker)) >= 5  # the host and its four MicroPython nodes
        else:  # as soon as the first emulated node exists: the host is still starting
            wait_for(lambda: len(marked(marker)) >= 2, 60, "the first node process", poll=0.02)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    wait_for(lambda: marked(marker) == [], 10, "every node process gone with the host")


def test_links_that_cannot_open_say_why_and_keep_retrying(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        refused = s.getsockname()[1]
    rack = tmp_path / "badlinks.toml"
    rack.write_text(BAD_LINKS.format(port=refused))
    db = tmp_path / "t.sqlite3"
    port = free_port()
    proc, _ = host(tmp_path, str(rack), "--port", str(port), "--db", str(db), "--duration", "4")
    try:
        url = f"http://127.0.0.1:{port}/api/v1"
        def both_failed() -> list[dict] | None:
            ns = httpx.get(url + "/nodes", timeout=5).json()
            return ns if all(n["state"] == "link-error" for n in ns) else None

        nodes = wait_for(both_failed, 20, "both nodes in link-error")
        why = {n["id"]: n["link_error"] for n in nodes}
        assert "No such file or directory" in why[1] and "ENOENT" in why[1]
        assert "Connection refused" in why[2] and "ECONNREFUSED" in why[2]
        # the store writes events in batches (every 0.2 s): wait for both to land
        wait_for(lambda: {e["node"] for e in httpx.get(url + "/events", timeout=5).json()
                          if e["kind"] == "link-error"} == {1, 2}, 10,
                 "a link-error event per node in /events")
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    # the log (stderr, no terminal here): one WARNING line per cause, the facts as key=value
    lines = [ln for ln in err.splitlines() if "event=link-error" in ln]
    assert len(lines) == 2 and all(" WARNING powerflow.node: " in ln for ln in lines), err
    assert 'node=1 event=link-error detail="serial:/dev/ttyNOSUCH0' in lines[0] + lines[1]
    assert "node=2 event=link-error detail=\"tcp:127.0.0.1" in lines[0] + lines[1]
    # retried all along (0.1, 0.2, 0.4 ... s apart), but each cause said once, not per retry
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT node, COUNT(*) FROM events WHERE kind = 'link-error' "
                         "GROUP BY node").fetchall()
    assert dict(rows) == {1: 1, 2: 1}


def test_the_database_goes_to_the_state_directory(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_dir() == tmp_path / "xdg" / "powerflow"
    assert state_dir(tmp_path / "mine") == tmp_path / "mine"
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "systemd"))
    assert state_dir() == tmp_path / "systemd"
    folder = tmp_path / "s"
    real = default_db("r", emulated=False, folder=folder)
    real.write_text("history")
    assert default_db("r", emulated=False, folder=folder).read_text() == "history"  # kept
    emu = default_db("r", emulated=True, folder=folder)
    emu.write_text("last demo")
    assert not default_db("r", emulated=True, folder=folder).exists()  # each demo starts anew
    assert real.exists()


@pytest.mark.parametrize("disarmed", [False, True])
def test_a_stop_that_cannot_finish_ends_the_process_with_its_stacks(disarmed: bool) -> None:
    # the host arms this as its stop begins: a stop stuck on a thread that never ends (here
    # a non-daemon one, which the interpreter waits for at exit) must not hang the process
    code = ("import threading\n"
            "from powerflow.process import StopDeadline\n"
            "d = StopDeadline(0.5)\n"
            "d.arm()\n"
            f"if {disarmed}:\n"
            "    d.disarm()\n"
            "    threading.Event().wait(1.5)  # past the deadline: nothing may happen\n"
            "else:\n"
            "    threading.Thread(target=threading.Event().wait, name='stuck').start()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    if disarmed:
        assert r.returncode == 0 and r.stderr == "", r.stderr
        return
    assert r.returncode == 1, r.stderr
    first, *rest = r.stderr.splitlines()
    assert first == ("powerflow: error: the host did not stop within 0.5 s; the threads' "
                     "stacks follow, then exit 1"), first
    assert any("Thread 0x" in line for line in rest), r.stderr  # every thread's stack
    assert any("in wait" in line for line in rest), r.stderr  # the stuck one among them


def test_the_api_socket_sends_each_answer_at_once() -> None:
    # the server is handed this socket ready-made, so asyncio does not set TCP_NODELAY on
    # its connections; without it every kept-alive request waited 40 ms on a delayed ACK
    import socket

    with listen("127.0.0.1", 0) as server:
        with socket.create_connection(server.getsockname()[:2], timeout=5):
            conn, _ = server.accept()
            with conn:
                assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
