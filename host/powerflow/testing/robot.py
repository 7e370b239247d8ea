"""PowerFlow keywords for Robot Framework acceptance suites, for the emulated rack and for
real boards alike.

The library drives PowerFlow's own host: `Start Rack` runs `powerflow run RACK` as a user
would (with `--emulate` for the emulated rack: the real firmware on the real MicroPython
interpreter, one process per node, over real ptys and TCP; without it, the boards the rack
file lists at `serial:/dev/ttyACM0` or `tcp:HOST:PORT`), on a port of its own, and every
keyword asks the host's API what it *measured*. Modelled on Renode's UART tester: each wait
has a timeout and fails with what it saw last.

    *** Settings ***
    Library    powerflow.testing.robot.PowerFlow    rack=${RACK}    emulate=${EMULATE}

    *** Test Cases ***
    Every node boots and reports
        Start Rack
        Node Should Report Telemetry Within    1    2s
        Bus Voltage Should Be Within    11.8    12.6

Node keywords: `Wait For Frame On Node` (telemetry or an event, a field or regex matcher),
`Node Should Report Telemetry Within`, `Write Command To Node`, `Clear Faults On Node`,
`Node Field Should Be Within`, `Node Should Be In Mode Within`, `Node State Should Become`.
Rack keywords: `Inject Fault` (the emulator's fault vocabulary), `Cut Link`, `Restore Link`,
`Node Should Be In Failsafe Within`, `Bus Voltage Should Be Within`, `Set Policy`,
`Plan Should Say`, `Alarm Should Be Active`, `Pause Control`, `Resume Control`.
Times are Robot time strings (`2s`, `500ms`, `1 min`); units V, A, °C.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from powerflow.client import ClientError, call

POLL_S = 0.2  # how often a wait asks the host again
START_S = 60.0  # the most a rack may take to come up


def _seconds(t: str | float) -> float:
    """A Robot time string (or a number of seconds) in seconds."""
    if isinstance(t, int | float):
        return float(t)
    try:
        from robot.utils import timestr_to_secs

        return float(timestr_to_secs(t))
    except ImportError:  # used without Robot: plain seconds
        return float(str(t).rstrip("s"))


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def emulated(rack: str) -> bool:
    """Whether a rack file describes an emulated rack: every node on the emulator's links
    (`pty`, `tcp`) rather than a board's (`serial:DEVICE`, `tcp:HOST:PORT`)."""
    from powerflow.model.rack import load_rack

    return all(n.link in ("pty", "tcp") for n in load_rack(rack).nodes)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PowerFlow:
    """One rack under test (see the module). `rack` is the rack file; `emulate` whether to
    run it emulated or attach to its real boards: `auto` (the default) decides by the rack
    file, emulated when its nodes have the emulator's links (`pty`, `tcp`), on boards when
    they name real ones (`serial:/dev/ttyACM0`, `tcp:HOST:PORT`), so one variable (the rack
    file) moves a suite from the emulated rack to the boards."""

    ROBOT_LIBRARY_SCOPE = "SUITE"

    def __init__(self, rack: str = "", emulate: Any = "auto") -> None:
        self.rack = rack
        self.emulate_as = str(emulate).lower()
        self.emulate = self.emulate_as not in ("false", "0", "no", "")
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.workdir: Path | None = None
        self.seen_events = 0
        self._last: Any = None  # what the last wait saw (for its failure message)

    # ---- the rack ------------------------------------------------------------------------
    def start_rack(self, rack: str = "", *options: str) -> None:
        """Run the host on `rack` (default: the library's), with extra `powerflow run`
        options (e.g. `--no-control`), and wait until every node is online (emulated) or
        the API answers (real boards)."""
        rack = rack or self.rack
        if not rack:
            raise AssertionError("no rack file: give rack=... to the library or Start Rack")
        if self.proc is not None:
            raise AssertionError("a rack is running already: Stop Rack first")
        if self.emulate_as == "auto":
            self.emulate = emulated(rack)
        port = _free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="pf-robot-"))
        cmd = [sys.executable, "-m", "powerflow.cli", "run", str(rack), "--port", str(port),
               "--db", str(self.workdir / "telemetry.sqlite3"), *options]
        if self.emulate:
            cmd.insert(5, "--emulate")
        log = (self.workdir / "host.log").open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        # a suite that dies without its teardown must not leave a rack running
        atexit.register(_kill_group, self.proc)
        self.url = f"http://127.0.0.1:{port}"
        nodes = self._until(lambda: self._nodes() if self._all_online() else None,
                            START_S, "every node online")
        self.seen_events = len(self._get("/events"))
        print(f"*INFO* rack up: {len(nodes)} nodes, API {self.url}, log {self.workdir}")

    def stop_rack(self) -> None:
        """SIGTERM the host (it stops the nodes it started); it must end cleanly."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            raise AssertionError("the host did not stop within 30 s of SIGTERM") from None
        if rc != 0:
            raise AssertionError(f"the host exited with {rc}: see {self.workdir}/host.log")

    # ---- nodes ---------------------------------------------------------------------------
    def node_should_report_telemetry_within(self, node: int | str, timeout: str = "2s"
                                            ) -> dict[str, Any]:
        """Fresh telemetry from `node` (younger than `timeout`) within `timeout`."""
        t = _seconds(timeout)
        return self._until(lambda: self._node_if(node, lambda n: n["state"] == "online" and
                                                 (n["telemetry_age_s"] or 1e9) < t),
                           t + POLL_S, f"telemetry from node {node}")

    def wait_for_frame_on_node(self, node: int | str, kind: str = "telemetry",
                               timeout: str = "5s", field: str = "", pattern: str = ".*",
                               from_start: Any = False) -> Any:
        """The next frame of `kind` from `node`: `telemetry` (its `field`, e.g. `mode`,
        matching the regex `pattern`) or `event` (an event since the last keyword that
        started the rack or injected something, or with `from_start=true` since the rack
        started, whose kind or detail matches `pattern`). Returns what matched."""
        rx = re.compile(pattern)
        t = _seconds(timeout)
        if kind == "telemetry":
            def probe() -> Any:
                n = self._node(node)
                if n["state"] != "online" or (n["telemetry_age_s"] or 1e9) > t:
                    return None
                v = n if not field else n.get(field)
                return v if rx.search(str(v)) else None
            return self._until(probe, t, f"telemetry of node {node} with {field} ~ {pattern}")
        if kind == "event":
            first = 0 if str(from_start).lower() in ("true", "1", "yes") else self.seen_events

            def probe_ev() -> Any:
                for ev in self._get("/events")[first:]:
                    if (str(ev.get("node")) == str(node)
                            and (rx.search(ev["kind"]) or rx.search(ev.get("detail") or ""))):
                        return ev
                return None
            return self._until(probe_ev, t, f"an event of node {node} ~ {pattern}")
        raise AssertionError(f"frame kind {kind!r}: telemetry or event")

    def write_command_to_node(self, node: int | str, vout: Any = None, on: Any = None
                              ) -> dict[str, Any]:
        """A setpoint to `node` (V, and on/off), confirmed by the node (pause the control
        loop first: it owns the setpoints while it runs)."""
        body: dict[str, Any] = {}
        if vout not in (None, ""):
            body["vout"] = float(vout)
        if on not in (None, ""):
            body["on"] = str(on).lower() in ("true", "1", "on", "yes")
        return self._post(f"/nodes/{int(node)}/setpoint", body)

    def forged_command_should_be_refused_by_node(self, node: int | str,
                                                 timeout: str = "5s") -> int:
        """Slip a setpoint the host did not send onto the node's serial line, tagged with a
        key that is not the node's (for an unkeyed node: in a session it never opened), as
        anyone with access to the line could; the node must refuse it (its reject counter
        rises) and keep the output it had. Returns the node's rejects after."""
        from pfproto import defs as d
        from powerflow.protocol.codec import encode_frame

        n = self._node(node)
        link = str(n.get("link") or "")
        if not link.startswith("serial:"):
            raise AssertionError(f"node {node} is on {link or 'no link'}: a frame can be "
                                 "slipped in on a serial line only")
        path = link.split(":", 1)[1].split("@", 1)[0]
        before, vcmd = int(n["rejects"]), n.get("vout_command")
        forged = encode_frame(d.MSG_SETPOINT, d.ADDR_HOST, int(node), 0x5A5A, 1,
                              {d.K_VOUT_COMMAND: 13.9, d.K_LEASE_MS: 60000,
                               d.K_OPERATION: True}, key=b"\x42" * 32)
        fd = os.open(path, os.O_WRONLY | os.O_NOCTTY)
        try:
            os.write(fd, b"\x00" + forged)
        finally:
            os.close(fd)
        after = self._until(lambda: self._node_if(node, lambda x: int(x["rejects"]) > before,
                                                  "rejects"),
                            _seconds(timeout), f"node {node} refusing the forged command")
        now = self._node(node).get("vout_command")
        if vcmd is not None and now is not None and abs(float(now) - 13.9) < 1e-3:
            raise AssertionError(f"node {node} took the forged setpoint (vout_command {now})")
        return int(after)

    def clear_faults_on_node(self, node: int | str) -> dict[str, Any]:
        return self._post(f"/nodes/{int(node)}/clear-faults", {})

    def node_field_should_be_within(self, node: int | str, field: str, low: Any, high: Any,
                                    timeout: str = "5s") -> float:
        """`field` of `node` (V, A, °C as the API gives them) within [low, high] within
        `timeout`."""
        lo, hi = float(low), float(high)
        return self._until(
            lambda: self._node_if(node, lambda n: n.get(field) is not None
                                  and lo <= float(n[field]) <= hi, field),
            _seconds(timeout), f"node {node} {field} in [{lo}, {hi}]")

    def node_should_be_in_mode_within(self, node: int | str, mode: str, timeout: str = "5s"
                                      ) -> str:
        """The node reports `mode` (off, soft_start, cv, cc, fault, failsafe, ...)."""
        return self._until(lambda: self._node_if(node, lambda n: n.get("mode") == mode, "mode"),
                           _seconds(timeout), f"node {node} in mode {mode}")

    def node_state_should_become(self, node: int | str, state: str, timeout: str = "10s"
                                 ) -> str:
        """The host's view of the node's link: online, lost, link-error, ..."""
        return self._until(lambda: self._node_if(node, lambda n: n["state"] == state, "state"),
                           _seconds(timeout), f"node {node} {state}")

    def node_should_be_in_failsafe_within(self, node: int | str, timeout: str = "10s") -> Any:
        """The node went to its failsafe (the host fell quiet for it): an event of it since
        the last fault injected (the node's own, or the host's alarm once the link is back),
        or its telemetry saying so."""
        first = self.seen_events

        def probe() -> Any:
            for ev in self._get("/events")[first:]:
                if str(ev.get("node")) == str(node) and "failsafe" in (
                        ev["kind"] + " " + (ev.get("detail") or "")):
                    return ev
            n = self._node(node)
            return n if n.get("mode") == "failsafe" else None
        return self._until(probe, _seconds(timeout), f"node {node} in failsafe")

    # ---- the rack ------------------------------------------------------------------------
    def inject_fault(self, kind: str, node: Any = None, **fields: Any) -> dict[str, Any]:
        """One fault of the emulator's vocabulary, e.g. `converter-failure    node=3`,
        `sensor-stuck    node=1    sensor=temp1    value=120`, `ambient    celsius=60`."""
        body: dict[str, Any] = {"kind": kind}
        if node not in (None, ""):
            body["node"] = int(node)
        for k, v in fields.items():
            body[k] = v if k in ("sensor", "device") else float(v)
        self.seen_events = len(self._get("/events"))  # what follows is the fault's doing
        return self._post("/emulator/faults", body)

    def cut_link(self, node: int | str) -> dict[str, Any]:
        return self.inject_fault("link-cut", node)

    def restore_link(self, node: int | str) -> dict[str, Any]:
        """Clear the cut; the event window stays where `Cut Link` put it, so what the node
        says of the outage (its failsafe) is still seen."""
        return self._post("/emulator/faults", {"kind": "link-clear", "node": int(node)})

    def bus_voltage_should_be_within(self, low: Any, high: Any, timeout: str = "5s"
                                     ) -> tuple[float, float]:
        """Every bus segment's measured voltage (the plan's measured vmin/vmax) in
        [low, high] V within `timeout`."""
        lo, hi = float(low), float(high)

        def probe() -> Any:
            m = self._get("/plan").get("measured") or {}
            if m.get("vmin") is None:
                return None
            return (m["vmin"], m["vmax"]) if lo <= m["vmin"] and m["vmax"] <= hi else None
        return self._until(probe, _seconds(timeout), f"the bus within [{lo}, {hi}] V")

    def set_policy(self, **changes: Any) -> dict[str, Any]:
        """Change policy fields (`power_saving=false`, ...); values as JSON."""
        body = {}
        for k, v in changes.items():
            try:
                body[k] = json.loads(v) if isinstance(v, str) else v
            except ValueError:
                body[k] = v
        return self._request("PUT", "/policy", body)

    def plan_should_say(self, pattern: str, timeout: str = "5s") -> str:
        """The host's plan (its JSON) matches the regex `pattern` within `timeout`."""
        rx = re.compile(pattern)

        def probe() -> Any:
            text = json.dumps(self._get("/plan"))
            m = rx.search(text)
            return m.group(0) if m else None
        return self._until(probe, _seconds(timeout), f"the plan saying {pattern}")

    def alarm_should_be_active(self, kind: str, timeout: str = "5s") -> dict[str, Any]:
        return self._until(lambda: next((a for a in self._get("/alarms") if a["kind"] == kind),
                                        None), _seconds(timeout), f"alarm {kind}")

    def events_on_node_should_number_at_most(self, node: int | str, kind: str, most: Any
                                             ) -> int:
        """The host's events of `kind` for `node` (all it recorded this run) number at most
        `most`: a condition that lasts is recorded once, not once a period."""
        n = sum(1 for e in self._get("/events") if e["node"] == int(node) and e["kind"] == kind)
        if n > int(most):
            raise AssertionError(f"{n} '{kind}' events on node {node}, expected at most {most}")
        return n

    def pause_control(self) -> None:
        self._request("PUT", "/control", {"enabled": False})

    def resume_control(self) -> None:
        self._request("PUT", "/control", {"enabled": True})

    # ---- plumbing ------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: Any = None) -> Any:
        if not self.url:
            raise AssertionError("no rack: Start Rack first")
        try:
            return call(method, self.url, path, body)
        except ClientError as e:
            raise AssertionError(f"{method} {path}: {e}") from None

    def _get(self, path: str) -> Any:
        return self._request("GET", path)

    def _post(self, path: str, body: Any) -> Any:
        return self._request("POST", path, body)

    def _nodes(self) -> list[dict[str, Any]]:
        return list(self._get("/nodes"))

    def _all_online(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"the host exited ({self.proc.returncode}): see "
                                 f"{self.workdir}/host.log")
        try:
            nodes = self._nodes()
        except AssertionError:
            return False
        return bool(nodes) and (not self.emulate or all(n["state"] == "online" for n in nodes))

    def _node(self, node: int | str) -> dict[str, Any]:
        return dict(self._get(f"/nodes/{int(node)}"))

    def _node_if(self, node: int | str, cond: Any, field: str = "") -> Any:
        n = self._node(node)
        self._last = n
        if cond(n):
            return n[field] if field else n
        return None

    def _until(self, probe: Any, timeout_s: float, what: str) -> Any:
        """probe() every POLL_S until it returns something (not None); that, or fail after
        `timeout_s` saying what was last seen."""
        end = time.monotonic() + max(timeout_s, POLL_S)
        self._last = None
        while True:
            try:
                v = probe()
            except AssertionError as e:
                if "host exited" in str(e):
                    raise
                v = None
                self._last = str(e)
            if v is not None:
                return v
            if time.monotonic() >= end:
                raise AssertionError(f"not within {timeout_s:g} s: {what} (last seen: "
                                     f"{json.dumps(self._last, default=str)[:400]})")
            time.sleep(POLL_S)
