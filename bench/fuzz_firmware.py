"""A longer mutation-fuzz run of the node's receive path than `make test` does.

    .venv/bin/python bench/fuzz_firmware.py [FRAMES] [SEED]     (default 1,000,000)

Prints the frames run, crashes, state changes by refused frames, frames
accepted, the reject counts by reason, and the rate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    frames = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    seed = sys.argv[2] if len(sys.argv) > 2 else "1"
    from pfproto.names import REJ_NAMES
    from powerflow.firmware import ensure_build

    fw = ensure_build("armv6m")
    bin_dir = Path(sys.executable).parent
    mp = ROOT / "tests" / "firmware" / "mp"
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("mp_helpers",):
            subprocess.run([str(bin_dir / "mpy-cross"), "-o", f"{tmp}/{name}.mpy",
                            str(mp / f"{name}.py")], check=True)
        env = dict(os.environ, MICROPYPATH=f"{fw}:{tmp}:.frozen")
        t0 = time.perf_counter()
        r = subprocess.run([str(bin_dir / "micropython"), "-X", "heapsize=100K",
                            str(mp / "mp_fuzz.py"), str(frames), seed],
                           capture_output=True, text=True, env=env, cwd=tmp)
        dt = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(r.stdout + r.stderr)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"frames {out['frames']}, crashes {out['crashes']}, state changed by a refused frame "
          f"{out['violations']}, accepted {out['accepted']}, {out['frames'] / dt:,.0f} frames/s")
    print("rejects: " + ", ".join(f"{REJ_NAMES[i]} {n}" for i, n in enumerate(out["rejects"]) if n))
    if out["first_error"]:
        print("first error:", out["first_error"])


if __name__ == "__main__":
    main()
