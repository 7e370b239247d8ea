"""Node entry point, on a board (its `/main.py` calls `main()`, which reads `/node.json`) and
on the unix port.

    micropython main.py [path/to/node.json]     (main.py: the stub the firmware build writes)

node.json:
    {"node_id": 3, "key": "<64 hex digits, optional>", "hal": "rp2" | "stm32" | "sim",
     "link": "uart:0:1000000" | "usb" | "tcp:0.0.0.0:7700" | "pty:/dev/pts/7",
     "ratings": {"vout_max": 14.0, "iout_max": 50.0, "pout_max": 600.0,
                 "vin_min": 40.0, "vin_max": 60.0, "board": "rp2-pico"},
     "pins": {...}, "control_period_ms": 5, "watchdog_ms": 1000, "sim": {...}}

Bad provisioning stops here with a message and the output never enabled.
"""

import json
import sys


def make_link(spec):
    kind, _, rest = spec.partition(":")
    if kind == "pty":
        from pfnode.link import open_pty

        return open_pty(rest)
    if kind == "tcp":
        from pfnode.link import TcpLink

        host, _, port = rest.rpartition(":")
        return TcpLink(host or "0.0.0.0", int(port))
    if kind == "uart":
        import machine  # type: ignore[import-not-found]

        from pfnode.link import StreamLink

        uid, _, baud = rest.partition(":")
        return StreamLink(machine.UART(int(uid), baudrate=int(baud or 1000000), timeout=0))
    if kind == "usb":
        import micropython

        from pfnode.link import StreamLink

        micropython.kbd_intr(-1)  # 0x03 is data on this link, not Ctrl-C
        return StreamLink(sys.stdin.buffer, sys.stdout.buffer)  # type: ignore[attr-defined]
    raise ValueError("unknown link: " + spec)


def build(conf):
    from pfnode import hal as hal_mod
    from pfnode.config import Ratings
    from pfnode.node import Node

    ratings = Ratings(**conf.get("ratings", {}))
    name = conf.get("hal", "sim")
    if name == "sim":
        from pfnode.hal.sim import ConverterPlant

        plant = ConverterPlant(nports=ratings.ports, **conf.get("sim", {}))
        hal = hal_mod.load("sim", plant=plant)
    elif name == "emu":
        emu = conf["emu"]
        hal = hal_mod.load("emu", sensors=emu["sensors"], actuators=emu["actuators"],
                           nports=ratings.ports, reset_cause=emu.get("reset_cause", 0))
    else:
        hal = hal_mod.load(name, pins=conf["pins"])
    key = conf.get("key")
    key_bytes = bytes.fromhex(key) if key else None
    if key_bytes is not None and len(key_bytes) < 16:
        raise ValueError("key must be at least 16 bytes (32 hex digits)")
    node_id = conf["node_id"]
    if not 1 <= node_id <= 0xFFFE:
        raise ValueError("node_id must be 1..65534")
    return Node(node_id, hal, None, ratings, key_bytes, conf.get("control_period_ms", 5))


def main(path="/node.json"):
    from pfnode.runner import Runner

    with open(path) as f:
        conf = json.load(f)
    node = build(conf)
    link = make_link(conf.get("link", "usb"))
    Runner(node, link, conf.get("watchdog_ms", 1000)).run(conf.get("duration_ms", -1))
