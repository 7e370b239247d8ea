"""Mutation fuzzing of the node's receive path, under MicroPython with the heap capped.

100,000 mutated frames in `make test` (bench/fuzz_firmware.py runs more). The
property: no exception escapes the node's frame handler and a frame that is not
accepted changes nothing.
"""

from __future__ import annotations

import json

FRAMES = 100_000


def test_firmware_survives_mutated_frames(mp_run, mp_test_modules) -> None:
    proc = mp_run(mp_test_modules / "mp_fuzz.py", str(FRAMES), "20261123")
    lines = [ln for ln in proc.stdout.decode().splitlines() if ln.startswith("{")]
    assert lines, proc.stderr.decode()
    r = json.loads(lines[-1])
    assert r["frames"] == FRAMES
    assert r["crashes"] == 0, r["first_error"]
    assert r["violations"] == 0, r["first_error"]
    # the mutants reached every stage: framing rejects, body rejects and acceptance
    rej = r["rejects"]
    assert rej[0] + rej[1] > 0 and rej[7] + rej[8] > 0 and r["accepted"] > 100, r
