"""The `powerflow` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="powerflow", description=(
        "PowerFlow: predictive power management for racks of DC-DC converters."))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo-node", help="one emulated node (real firmware) under the host")
    demo.add_argument("--duration", type=_positive, default=10.0, help="seconds to run (default 10)")
    demo.add_argument("--link", choices=("pty", "tcp"), default="pty",
                      help="pty: a serial device opened with pyserial; tcp: loopback Ethernet")
    demo.add_argument("--vout", type=_positive, default=12.0, help="output voltage, V (default 12)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo-node":
        from powerflow.demo import run_demo

        if args.vout > 14.0:
            print("powerflow: error: --vout: the demo node is rated 14 V", file=sys.stderr)
            return 2
        asyncio.run(run_demo(args.duration, args.link, vout=args.vout))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
