"""Node firmware behaviour, run under the real MicroPython interpreter with the heap capped.

The cases live in `mp/mp_*_cases.py` (MicroPython code); each module runs once in
its own interpreter and every case becomes one test here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import MP_TESTS, run_cases

MODULES = sorted(p.stem for p in MP_TESTS.glob("mp_*_cases.py"))
CASES = [(m, c) for m in MODULES
         for c in re.findall(r"^def (case_\w+)", (MP_TESTS / f"{m}.py").read_text(), re.M)]


@pytest.fixture(scope="module")
def results(mp_run, mp_test_modules) -> dict[str, dict[str, dict]]:
    return {m: run_cases(mp_run, mp_test_modules, m) for m in MODULES}


@pytest.mark.parametrize(("module", "case"), CASES, ids=[c for _, c in CASES])
def test_node_behaviour(results: dict[str, dict[str, dict]], module: str, case: str) -> None:
    r = results[module].get(case)
    assert r is not None, f"{case} did not run (interpreter died?)"
    assert r["ok"], r["error"]


def test_every_module_compiles_for_both_targets(firmware_build: dict[str, Path]) -> None:
    from powerflow.firmware import sources

    for arch, folder in firmware_build.items():
        for _, rel in sources():
            mpy = folder / rel.with_suffix(".mpy")
            assert mpy.exists() and mpy.stat().st_size > 0, (arch, rel)
            # .mpy header: 'M', version 6, feature flags, then the arch in the top bits
            head = mpy.read_bytes()[:4]
            assert head[0] == ord("M") and head[1] == 6, (rel, head)


def test_emulator_build_is_cached_per_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The emulated rack's build lands in the cache named by its content, with the board stub
    `/main.py`; asking again reuses it rather than compiling again."""
    from powerflow import firmware

    monkeypatch.setenv("POWERFLOW_CACHE", str(tmp_path))
    first = firmware.ensure_build("armv6m")
    assert first.parent == tmp_path / "firmware" and first.name.startswith("armv6m-")
    assert (first / "pfnode" / "main.mpy").exists() and (first / "pfproto" / "defs.mpy").exists()
    assert "from pfnode.main import main" in (first / "main.py").read_text()
    stamp = (first / "pfnode" / "node.mpy").stat().st_mtime_ns
    again = firmware.ensure_build("armv6m")
    assert again == first and (again / "pfnode" / "node.mpy").stat().st_mtime_ns == stamp
    # nothing half-built is left beside it
    assert [p.name for p in (tmp_path / "firmware").iterdir()] == [first.name]
