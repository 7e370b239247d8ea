"""Shared fixtures: the firmware compiled with mpy-cross, and a runner for MicroPython."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from powerflow.firmware import micropython
from powerflow.firmware import mpy_cross as mpy_cross_exe

ROOT = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    """The project's shared material (`../shared`): beside this checkout, or, for a clone
    made elsewhere (CI clones to /tmp), beside the repository it was cloned from;
    $POWERFLOW_SHARED overrides both."""
    if os.environ.get("POWERFLOW_SHARED"):
        return Path(os.environ["POWERFLOW_SHARED"])
    here = ROOT.parent / "shared"
    if here.is_dir():
        return here
    try:
        origin = subprocess.run(["git", "-C", str(ROOT), "config", "remote.origin.url"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        origin = ""
    if origin and Path(origin).is_dir():
        return Path(origin).resolve().parent / "shared"
    return here


SHARED = _shared_dir()
# firmware builds for the emulated racks the tests start land in the checkout, not in ~/.cache
os.environ.setdefault("POWERFLOW_CACHE", str(ROOT / "build" / "cache"))
MP_TESTS = ROOT / "tests" / "firmware" / "mp"
# The smallest target (STM32F4) leaves MicroPython about 100 KB of heap. The unix
# port is 64-bit, so the same objects take more room here than on the board:
# the cap is stricter than the hardware's.
HEAP_SMALLEST = "100K"
# scripts the interpreter is started with stay source; the modules they import are compiled
ENTRY_SCRIPTS = {"mp_runner.py", "mp_vectors.py", "mp_fuzz.py"}


@pytest.fixture(scope="session")
def firmware_build(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The firmware compiled for both targets; returns {arch: folder}."""
    from powerflow.firmware import build

    return build(tmp_path_factory.mktemp("firmware"), ["armv6m", "armv7emsp"])


@pytest.fixture(scope="session")
def mp_test_modules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MicroPython test modules, precompiled as a board would get them."""
    out = tmp_path_factory.mktemp("mp_tests")
    for src in MP_TESTS.glob("*.py"):
        if src.name in ENTRY_SCRIPTS:
            (out / src.name).write_text(src.read_text())
            continue
        subprocess.run([mpy_cross_exe(), "-march=armv6m", "-o", str(out / (src.stem + ".mpy")),
                        str(src)], check=True)
    return out


MpRun = Callable[..., subprocess.CompletedProcess]


@pytest.fixture(scope="session")
def mp_run(firmware_build: dict[str, Path], mp_test_modules: Path) -> MpRun:
    """Run a script under the real MicroPython interpreter, heap capped, firmware on its path."""

    def run(script: Path | str, *args: str, heap: str = HEAP_SMALLEST, timeout: float = 600,
            input: bytes | None = None) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        env["MICROPYPATH"] = f"{firmware_build['armv6m']}:{mp_test_modules}:.frozen"
        return subprocess.run([micropython(), "-X", f"heapsize={heap}", str(script), *args],
                              capture_output=True, timeout=timeout, env=env, input=input,
                              cwd=mp_test_modules)

    return run


def run_cases(mp_run: MpRun, mp_test_modules: Path, module: str) -> dict[str, dict]:
    """Run every case_* of a MicroPython test module; {case: {"ok", "error"}}."""
    proc = mp_run(mp_test_modules / "mp_runner.py", module)
    results = {}
    for line in proc.stdout.decode().splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            results[r["case"]] = r
    if not results:
        raise AssertionError(f"{module} reported nothing:\n{proc.stdout.decode()}\n{proc.stderr.decode()}")
    return results
