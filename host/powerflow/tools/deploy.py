"""Put the node firmware and its per-node configuration on a board with mpremote.

    python -m powerflow.tools.deploy --board rp2-pico --node-id 3 --port /dev/ttyACM0 \\
        [--key-file node3.key | --new-key] [--link uart:0:1000000] [--dry-run]

Builds the firmware for the board's architecture (mpy-cross), writes `node.json`
(node id, key, HAL backend, pin map, ratings, link) from the board file in
`firmware/pfnode/boards/`, copies both to the board's filesystem and resets it. The
board then boots into `main.py` with its output off until a host opens a
session. `--dry-run` prints the node.json and the mpremote commands instead.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from powerflow.firmware import boards_dir, build


def boards() -> list[str]:
    return sorted(p.stem for p in boards_dir().glob("*.json"))


def node_config(board: str, node_id: int, key: bytes | None, link: str | None) -> dict[str, Any]:
    """The node.json for one node; ValueError says what is wrong."""
    path = boards_dir() / f"{board}.json"
    if not path.exists():
        raise ValueError(f"unknown board {board!r}; known: {', '.join(boards())}")
    conf = json.loads(path.read_text())
    if not 1 <= node_id <= 0xFFFE:
        raise ValueError(f"node id {node_id} outside 1..65534")
    if key is not None and len(key) < 16:
        raise ValueError("a key must be at least 16 bytes")
    conf["node_id"] = node_id
    if key is not None:
        conf["key"] = key.hex()
    if link:
        kind = link.split(":", 1)[0]
        if kind not in ("uart", "usb", "tcp"):
            raise ValueError(f"link {link!r}: expected uart:ID:BAUD, usb or tcp:HOST:PORT")
        conf["link"] = link
    return conf


def commands(port: str, build_dir: Path, conf_path: Path) -> list[list[str]]:
    mp = [sys.executable, "-m", "mpremote", "connect", port]
    return [
        mp + ["fs", "cp", "-r", str(build_dir / "pfnode"), ":"],
        mp + ["fs", "cp", "-r", str(build_dir / "pfproto"), ":"],
        mp + ["fs", "cp", str(build_dir / "main.py"), ":main.py"],
        mp + ["fs", "cp", str(conf_path), ":node.json"],
        mp + ["reset"],
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", required=True, help=f"one of: {', '.join(boards())}")
    ap.add_argument("--node-id", type=int, required=True)
    ap.add_argument("--port", default="auto", help="serial port of the board (mpremote's name)")
    keys = ap.add_mutually_exclusive_group()
    keys.add_argument("--key-file", type=Path, help="file with the node's key in hex")
    keys.add_argument("--new-key", action="store_true", help="generate a key and print it")
    ap.add_argument("--link", help="override the board file's link")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    key = None
    try:
        if args.key_file:
            key = bytes.fromhex(args.key_file.read_text().strip())
        elif args.new_key:
            key = os.urandom(32)
        conf = node_config(args.board, args.node_id, key, args.link)
    except (ValueError, OSError) as e:
        print(f"deploy: error: {e}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        out = build(Path(tmp) / "fw", [conf["arch"]])[conf["arch"]]
        conf_path = Path(tmp) / "node.json"
        conf_path.write_text(json.dumps(conf, indent=1))
        if args.new_key:
            print(f"node {args.node_id} key (keep it in the rack file): {key.hex() if key else ''}")
        cmds = commands(args.port, out, conf_path)
        if args.dry_run:
            print(conf_path.read_text())
            for c in cmds:
                print(" ".join(c))
            return 0
        for c in cmds:
            r = subprocess.run(c)
            if r.returncode != 0:
                print(f"deploy: error: {' '.join(c)} failed ({r.returncode})", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
