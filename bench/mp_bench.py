# MicroPython side of bench_protocol.py: run with the firmware build on MICROPYPATH.
#   micropython -X heapsize=100K -c 'import mp_bench'   (compiled with mpy-cross first)
import gc
import json
import time

import micropython

gc.collect()
heap_start = gc.mem_alloc()
from pfnode.hal.sim import ConverterPlant, SimHal  # noqa: E402
from pfnode.node import Node  # noqa: E402
from pfproto import defs as d  # noqa: E402


class Null:
    def write(self, buf, n):
        pass


hal = SimHal(ConverterPlant(load_ohm=1.0), clock_ms=0)
node = Node(1, hal, Null(), key=bytes(range(32)))
gc.collect()
heap_boot = gc.mem_alloc()


def per_call_us(fn, n):
    t0 = time.ticks_us()
    for _ in range(n):
        fn()
    return time.ticks_diff(time.ticks_us(), t0) / n


# a session and a running output, so that steps and telemetry do real work
host = __import__("pfnode.frame", None, None, ["Framer"]).Framer()
mac = __import__("pfnode.auth", None, None, ["Hmac"]).Hmac(bytes(range(32)))
host.begin().value({d.K_NONCE: bytes(16)})
n = host.build(d.MSG_SESSION_INIT, 0, 1, 0, 1, mac)
w = bytes(host.tx_wire[:n])
node.framer.feed(w, len(w), node.on_block)
node.fs.heard_host(hal.ticks_ms())
node._setpoint({d.K_VOUT_COMMAND: 12.0, d.K_LEASE_MS: 600000}, hal.ticks_ms())
for _ in range(200):
    hal.advance(5)
    node.step()
node.session.mac = None  # untagged frames for the codec figures (tagged measured below)
out = {}
out["telemetry_bytes"] = node.send_telemetry()
out["telemetry_encode_us"] = per_call_us(node.send_telemetry, 500)
node.session.mac = mac
out["telemetry_bytes_tagged"] = node.send_telemetry()
out["telemetry_encode_tagged_us"] = per_call_us(node.send_telemetry, 500)
node.session.mac = None

# decode + check + apply + acknowledge one SETPOINT, fresh counter each time
seq = [1000]
wires = []
for i in range(150):  # each needs a fresh counter; 150 fit beside the node in 100K
    host.begin().value({d.K_VOUT_COMMAND: 12.0, d.K_LEASE_MS: 600000})
    n = host.build(d.MSG_SETPOINT, 0, 1, node.session.id, 1000 + i, None)
    wires.append(bytes(host.tx_wire[:n]))
it = iter(wires)


def handle():
    w = next(it)
    node.framer.feed(w, len(w), node.on_block)


out["setpoint_handle_us"] = per_call_us(handle, 150)
del wires, it
step = node.step
out["control_step_us"] = per_call_us(step, 5000)


def locked_steps(n):
    # a function, not module level: a module-level loop variable is a global,
    # and storing a global under the lock may allocate
    micropython.heap_lock()
    try:
        for _ in range(n):
            step()
        return True
    except MemoryError:
        return False
    finally:
        micropython.heap_unlock()


out["control_step_allocation_free"] = locked_steps(1000)
# steady state: 10 s of simulated running with telemetry at 10 Hz
node.cfg.telemetry_period_ms = 100
peak = 0
for i in range(2000):
    hal.advance(5)
    node.step()
    node.service()
    if i % 100 == 0:
        node.fs.heard_host(hal.ticks_ms())
        gc.collect()
        peak = max(peak, gc.mem_alloc())
gc.collect()
out["heap_modules_bytes"] = heap_boot - heap_start
out["heap_after_boot_bytes"] = heap_boot
out["heap_steady_bytes"] = gc.mem_alloc()
out["heap_steady_peak_bytes"] = peak
out["heap_total_bytes"] = gc.mem_alloc() + gc.mem_free()
print(json.dumps(out))
