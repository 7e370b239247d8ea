"""Compile the node firmware to .mpy for each target with mpy-cross.

    python -m powerflow.tools.build_firmware [--out build/firmware] [--arch armv6m armv7emsp]

Writes `OUT/ARCH/pfnode/...mpy`, `OUT/ARCH/pfproto/...mpy` and `OUT/ARCH/main.py`
(kept as source: a board runs /main.py as text). RP2040 is armv6m, STM32F4 is
armv7emsp. A module mpy-cross refuses stops the build with its message.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
FIRMWARE = ROOT / "firmware"
PROTOCOL = ROOT / "protocol"
ARCHES = {"armv6m": "RP2040", "armv7emsp": "STM32F4"}


def sources() -> list[tuple[Path, Path]]:
    """(source file, path relative to the board's filesystem) for every module."""
    out = []
    for base, pkg in ((FIRMWARE, "pfnode"), (PROTOCOL, "pfproto")):
        for f in sorted((base / pkg).rglob("*.py")):
            out.append((f, f.relative_to(base)))
    return out


def mpy_cross() -> str:
    exe = Path(sys.executable).parent / "mpy-cross"
    return str(exe) if exe.exists() else "mpy-cross"


def build(out: Path, arches: list[str]) -> dict[str, Path]:
    built = {}
    for arch in arches:
        dest = out / arch
        if dest.exists():
            shutil.rmtree(dest)
        for src, rel in sources():
            target = dest / rel.with_suffix(".mpy")
            target.parent.mkdir(parents=True, exist_ok=True)
            # -s sets the name tracebacks show: the module's path on the board
            r = subprocess.run([mpy_cross(), f"-march={arch}", "-s", str(rel), "-o", str(target),
                                str(src)], capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"mpy-cross ({arch}) refused {src}:\n{r.stderr}")
        shutil.copy(FIRMWARE / "main.py", dest / "main.py")
        built[arch] = dest
    return built


def ensure_build(arch: str = "armv6m", out: Path | None = None) -> Path:
    """The firmware build for `arch`, rebuilt when any source is newer than it."""
    out = out or ROOT / "build" / "firmware"
    stamp = out / arch / ".stamp"
    newest = max([src.stat().st_mtime for src, _ in sources()] + [(FIRMWARE / "main.py").stat().st_mtime])
    if not stamp.exists() or stamp.stat().st_mtime < newest:
        build(out, [arch])
        stamp.touch()
    return out / arch


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "firmware")
    ap.add_argument("--arch", nargs="+", default=list(ARCHES), choices=list(ARCHES))
    args = ap.parse_args(argv)
    for arch, path in build(args.out, args.arch).items():
        size = sum(p.stat().st_size for p in path.rglob("*.mpy"))
        print(f"{arch} ({ARCHES[arch]}): {path}  {size} bytes of .mpy")


if __name__ == "__main__":
    main()
