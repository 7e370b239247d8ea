"""The Robot Framework acceptance suites (`tests/acceptance/*.robot`) as part of `make test`:
run by Robot itself, on the emulated rack, keeping Robot's log.html, report.html and
output.xml in build/acceptance as artifacts; every suite must pass."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET

from tests.conftest import ROOT

OUT = ROOT / "build" / "acceptance"


def test_the_acceptance_suites_pass() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([sys.executable, "-m", "robot", "--outputdir", str(OUT), "--pythonpath",
                        str(ROOT), "--consolewidth", "100", str(ROOT / "tests" / "acceptance")],
                       capture_output=True, text=True, timeout=600)
    stats = ET.parse(OUT / "output.xml").getroot().find("./statistics/total/stat")
    assert stats is not None
    passed, failed = int(stats.get("pass", 0)), int(stats.get("fail", 0))
    assert passed >= 15, r.stdout[-3000:]  # every suite ran
    assert failed == 0 and r.returncode == 0, r.stdout[-6000:]
    assert (OUT / "log.html").exists() and (OUT / "report.html").exists()


def test_the_rack_file_says_emulated_or_boards(tmp_path) -> None:
    """One variable moves the suites to real boards: the rack file's links decide."""
    from powerflow.testing.robot import emulated

    small = ROOT / "examples" / "racks" / "small.toml"
    assert emulated(str(small))
    boards = tmp_path / "boards.toml"
    text = small.read_text().replace('link = "pty"', 'link = "serial:/dev/ttyACM0"')
    boards.write_text(text.replace('link = "tcp"', 'link = "tcp:127.0.0.1:7000"'))
    assert not emulated(str(boards))
