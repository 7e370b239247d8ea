"""Deployment tooling: per-node configuration for real boards (mpremote is not run here:
no board is attached; the commands and node.json it would use are checked)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from powerflow.tools.deploy import boards, node_config


def test_board_files_build_node_configs() -> None:
    assert set(boards()) >= {"rp2-pico", "pyboard-v11"}
    for b in boards():
        conf = node_config(b, 7, bytes(32), None)
        assert conf["node_id"] == 7 and conf["key"] == "00" * 32
        assert conf["hal"] in ("rp2", "stm32") and conf["arch"] in ("armv6m", "armv7emsp")
        assert {"vref_pwm", "enable"} <= set(conf["pins"])


@pytest.mark.parametrize(("args", "message"), [
    (("nope", 1, None, None), "unknown board"),
    (("rp2-pico", 0, None, None), "outside 1..65534"),
    (("rp2-pico", 3, b"short", None), "at least 16 bytes"),
    (("rp2-pico", 3, None, "can:0"), "expected uart"),
])
def test_bad_deploy_arguments_are_refused(args, message) -> None:
    with pytest.raises(ValueError, match=message):
        node_config(*args)


def test_dry_run_prints_the_board_config_and_mpremote_commands() -> None:
    r = subprocess.run([sys.executable, "-m", "powerflow.tools.deploy", "--board", "pyboard-v11",
                        "--node-id", "12", "--new-key", "--port", "/dev/ttyACM0", "--dry-run"],
                       capture_output=True, text=True, check=True)
    text = r.stdout
    conf = json.loads(text[text.index("{"):text.rindex("}") + 1])
    assert conf["node_id"] == 12 and len(conf["key"]) == 64 and conf["hal"] == "stm32"
    assert f"key (keep it in the rack file): {conf['key']}" in text
    assert "mpremote connect /dev/ttyACM0 fs cp" in text and text.rstrip().endswith("reset")
