"""Protocol and firmware figures: frame sizes, encode/decode times on the host and on
MicroPython (unix port), the node's heap, and the control step's time.

    .venv/bin/python bench/bench_protocol.py

The host codec (cbor2 + cobs + zlib) is compared in the same process with the
node's own codec run under CPython, on the same telemetry frame.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from pfproto import defs as d
from powerflow.protocol.codec import decode_block, encode_frame
from powerflow.firmware import ensure_build

TELEMETRY = {
    d.K_UPTIME_MS: 123456, d.K_READ_VIN: 48.125, d.K_READ_IIN: 10.2, d.K_READ_VOUT: 12.003,
    d.K_READ_IOUT: 20.5, d.K_READ_POUT: 246.06, d.K_READ_TEMPERATURE_1: 61.25,
    d.K_READ_TEMPERATURE_2: 55.0, d.K_READ_TEMPERATURE_3: 27.4, d.K_READ_HUMIDITY: 41.0,
    d.K_STATUS_WORD: 0, d.K_IOUT_LIMIT: 50.0, d.K_MODE: d.MODE_CV, d.K_REJECTS: [0] * d.N_REJ,
    d.K_PORT_STATE: 1, d.K_LEASE_LEFT_MS: 2500, d.K_FAULTS: 0, d.K_VOUT_COMMAND: 12.0,
    d.K_WARNINGS: 0}


def per_call_us(fn, n: int = 20000) -> float:
    return min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6


def host_figures() -> dict[str, float]:
    from pfnode.auth import Hmac
    from pfnode.frame import Framer

    key = bytes(range(32))
    wire = encode_frame(d.MSG_TELEMETRY, 1, 0, 7, 9, TELEMETRY)
    tagged = encode_frame(d.MSG_TELEMETRY, 1, 0, 7, 9, TELEMETRY, key)
    fr = Framer()
    mac = Hmac(key)

    def fw_encode():
        fr.begin().value(TELEMETRY)
        fr.build(d.MSG_TELEMETRY, 1, 0, 7, 9, None)

    def fw_decode():
        fr.rx[: len(wire) - 1] = wire[:-1]
        f = fr.parse(len(wire) - 1)
        fr.decode_body(f)

    out = {
        "telemetry_bytes": len(wire),
        "telemetry_bytes_tagged": len(tagged),
        "host_encode_us": per_call_us(lambda: encode_frame(d.MSG_TELEMETRY, 1, 0, 7, 9, TELEMETRY)),
        "host_decode_us": per_call_us(lambda: decode_block(wire[:-1])),
        "host_decode_tagged_us": per_call_us(lambda: decode_block(tagged[:-1], lambda f: key)),
        "node_codec_cpython_encode_us": per_call_us(fw_encode),
        "node_codec_cpython_decode_us": per_call_us(fw_decode),
        "hmac_tag_cpython_us": per_call_us(lambda: mac.tag(wire)),
    }
    return out


def micropython_figures(heap: str) -> dict[str, float]:
    fw = ensure_build("armv6m")
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        # compiled like the firmware, so the heap figures are not the compiler's
        subprocess.run([str(bin_dir / "mpy-cross"), "-o", f"{tmp}/mp_bench.mpy",
                        str(ROOT / "bench" / "mp_bench.py")], check=True)
        env = dict(os.environ, MICROPYPATH=f"{fw}:{tmp}:.frozen")
        r = subprocess.run([str(bin_dir / "micropython"), "-X", f"heapsize={heap}", "-c",
                            "import mp_bench"], capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(f"mp_bench failed:\n{r.stdout}{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    h = host_figures()
    m = micropython_figures("192K")  # room for the benchmark's own frames beside the node
    print("| figure | value |\n|---|---|")
    print(f"| telemetry frame on the wire (untagged / tagged) | {h['telemetry_bytes']} / "
          f"{h['telemetry_bytes_tagged']} B |")
    print(f"| host codec (cbor2): encode / decode / decode + verify tag | {h['host_encode_us']:.1f} / "
          f"{h['host_decode_us']:.1f} / {h['host_decode_tagged_us']:.1f} us |")
    print(f"| node codec under CPython: encode / decode | {h['node_codec_cpython_encode_us']:.1f} / "
          f"{h['node_codec_cpython_decode_us']:.1f} us "
          f"(x{h['node_codec_cpython_encode_us'] / h['host_encode_us']:.2f} / "
          f"x{h['node_codec_cpython_decode_us'] / h['host_decode_us']:.2f} of the host codec) |")
    print(f"| MicroPython: telemetry encode + frame (untagged / tagged) | "
          f"{m['telemetry_encode_us']:.0f} / {m['telemetry_encode_tagged_us']:.0f} us |")
    print(f"| MicroPython: SETPOINT decode, check, apply, ACK | {m['setpoint_handle_us']:.0f} us |")
    print(f"| MicroPython: control step | {m['control_step_us']:.1f} us "
          f"(allocation-free: {m['control_step_allocation_free']}) |")
    print(f"| MicroPython heap: firmware modules + node / after boot / steady (peak) of "
          f"{m['heap_total_bytes'] // 1024} KB | {m['heap_modules_bytes']} / "
          f"{m['heap_after_boot_bytes']} / {m['heap_steady_bytes']} ({m['heap_steady_peak_bytes']}) B |")


if __name__ == "__main__":
    main()
