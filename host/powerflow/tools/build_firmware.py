"""Compile the node firmware to .mpy for each target with mpy-cross.

    python -m powerflow.tools.build_firmware [--out build/firmware] [--arch armv6m armv7emsp]

Writes `OUT/ARCH/pfnode/...mpy`, `OUT/ARCH/pfproto/...mpy` and `OUT/ARCH/main.py`
(kept as source: a board runs /main.py as text). RP2040 is armv6m, STM32F4 is
armv7emsp. A module mpy-cross refuses stops the build with its message. The
emulated rack builds its own copy on demand (`powerflow.firmware.ensure_build`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from powerflow.firmware import ARCHES, FirmwareError, build


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("build") / "firmware",
                    help="directory to write ARCH/ builds into (default build/firmware)")
    ap.add_argument("--arch", nargs="+", default=list(ARCHES), choices=list(ARCHES),
                    help="targets to build (default: all)")
    args = ap.parse_args(argv)
    try:
        built = build(args.out, args.arch)
    except FirmwareError as e:
        raise SystemExit(str(e)) from None
    for arch, path in built.items():
        size = sum(p.stat().st_size for p in path.rglob("*.mpy"))
        print(f"{arch} ({ARCHES[arch]}): {path}  {size} bytes of .mpy")


if __name__ == "__main__":
    main()
