"""Running in production: `run --config FILE` (flags override it, bad files named), the log
as journald reads it, and the example systemd unit checked by systemd itself."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from powerflow.testing.chaos import free_port
from tests.test_host_process import BAD_LINKS

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "examples" / "systemd" / "powerflow.service"


def run(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "powerflow.cli", "run", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "XDG_STATE_HOME": str(cwd / "state"), **(env or {})})


def setup_site(tmp: Path) -> Path:
    etc = tmp / "etc"
    etc.mkdir()
    (etc / "rack.toml").write_text(BAD_LINKS.format(port=1))  # links that fail at once
    return etc


def test_a_config_file_holds_what_the_flags_say_and_flags_override_it(tmp_path: Path) -> None:
    etc = setup_site(tmp_path)
    conf = etc / "host.toml"
    conf.write_text(f'rack = "rack.toml"\nport = {free_port()}\ndb = "t.sqlite3"\n'
                    'duration = 2\nlog-level = "info"\n')
    port = free_port()
    r = run(tmp_path, "--config", str(conf), "--port", str(port))
    assert r.returncode == 0, r.stderr
    started = next(ln for ln in r.stderr.splitlines() if "event=started" in ln)
    assert f"api=http://127.0.0.1:{port}/api/v1" in started  # the flag won over the file
    assert f"db={etc / 't.sqlite3'}" in started  # relative to the config file's folder
    assert "rack=badlinks" in started and (etc / "t.sqlite3").exists()
    assert re.search(r"event=stopping after_s=2\.\d why=duration", r.stderr)


@pytest.mark.parametrize(("text", "message"), [
    ('rack = "rack.toml"\nprot = 8470\n', "unknown setting 'prot' (known: "),
    ('rack = "rack.toml"\nport = 0\n',
     "port: '0' is out of range: expected a whole number from 1 to 65535"),
    ('rack = "rack.toml"\nemulate = "yes"\n', "emulate: expected true or false, got 'yes'"),
    ('rack = "rack.toml"\nlog-level = "loud"\n', "log-level: 'loud' is not one of debug, info"),
    ('rack = "rack.toml"\nport = [1]\n', "port: expected a string or a number"),
    ("port = 8470\n", "run: give a rack file"),
    ("rack = \n", "not valid TOML"),
])
def test_a_bad_config_file_is_one_line_naming_file_and_key(tmp_path: Path, text: str,
                                                           message: str) -> None:
    etc = setup_site(tmp_path)
    conf = etc / "host.toml"
    conf.write_text(text)
    r = run(tmp_path, "--config", str(conf), timeout=30)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not list((tmp_path / "state").glob("**/*.sqlite3"))


def test_under_journald_lines_carry_priorities_and_no_timestamps(tmp_path: Path) -> None:
    etc = setup_site(tmp_path)
    r = run(tmp_path, str(etc / "rack.toml"), "--port", str(free_port()), "--duration", "2",
            env={"JOURNAL_STREAM": "8:12345"})  # what systemd sets when stderr is the journal
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert any(ln.startswith("<6>powerflow.host: event=started") for ln in lines), lines
    assert any(ln.startswith("<4>powerflow.node: node=1 event=link-error") for ln in lines)
    assert all(re.match(r"<[0-7]>powerflow\.", ln) for ln in lines), lines
    # --log-level warning keeps the warnings and drops the info lines
    r = run(tmp_path, str(etc / "rack.toml"), "--port", str(free_port()), "--duration", "2",
            "--log-level", "warning", env={"JOURNAL_STREAM": "8:12345"})
    prios = {ln[:3] for ln in r.stderr.splitlines()}
    assert r.returncode == 0 and prios == {"<4>"}, r.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze not installed (make sysdeps installs systemd)")
def test_the_systemd_unit_verifies_and_is_hardened(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "powerflow"
    unit = tmp_path / "powerflow.service"
    unit.write_text(UNIT.read_text().replace("/opt/powerflow/bin/powerflow", str(exe)))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                       text=True, timeout=60)
    # verify exits 0 on unknown keys too, only warning: nothing printed is the pass
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", r.stderr
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for powerflow\.service: ([\d.]+)", r.stdout + r.stderr)
    assert m is not None, r.stdout + r.stderr
    assert float(m.group(1)) <= 2.5, r.stdout  # systemd's "OK" band; 1.9 when written
    text = UNIT.read_text()
    for directive in ("DynamicUser=yes", "StateDirectory=powerflow", "ProtectSystem=strict",
                      "NoNewPrivileges=yes", "CapabilityBoundingSet=\n"):
        assert directive in text
