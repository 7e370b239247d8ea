# Mutation fuzzing of the node's receive path under MicroPython.
#   micropython mp_fuzz.py COUNT SEED
# Valid host frames (every command, heartbeat, identify, session init) are mutated
# three ways: raw wire damage (bit flips, byte edits, insertions, deletions,
# truncation), damage inside the frame with CRC and COBS made valid again (so
# the CBOR decoder and the field checks see it), and random garbage. Every
# mutant goes through the node's real on_block(). Checked: no exception escapes,
# and a frame that was not accepted changed no state. Prints a JSON summary.
import json
import struct
import sys
import binascii

from mp_helpers import Rig
from pfnode.cobs import decode_in_place, encode_into
from pfproto import defs as d

COUNT = int(sys.argv[1])
_state = [int(sys.argv[2]) or 1]


def rnd(n):
    x = _state[0]
    x ^= (x << 13) & 0xFFFFFFFF
    x ^= x >> 17
    x ^= (x << 5) & 0xFFFFFFFF
    _state[0] = x
    return x % n


class NullLink:
    def write(self, buf, n):
        pass


rig = Rig()
rig.open_session()
node = rig.node
node.link = NullLink()
results = []
orig_ack = node._ack


def ack(seq, res, reason=-1, field=-1, dst=0):
    results.append(res)
    return orig_ack(seq, res, reason, field, dst)


node._ack = ack
seeds = [
    rig.frame(d.MSG_SETPOINT, {d.K_VOUT_COMMAND: 12.0, d.K_LEASE_MS: 60000, d.K_OPERATION: True}),
    rig.frame(d.MSG_PORT_SWITCH, {d.K_PORT: 1, d.K_CLOSE: True}),
    rig.frame(d.MSG_CONFIG, {d.K_DERATE_CURVE: [[80.0, 1.0], [100.0, 0.5]], d.K_GAINS: [0.3, 50.0],
                             d.K_FAULT_RESPONSE: {d.PROT_OC: [1, 3, 500]}, d.K_TON_RISE: 0.05}),
    rig.frame(d.MSG_CLEAR_FAULTS, {}),
    rig.frame(d.MSG_HEARTBEAT, {d.K_UPTIME_MS: 1000}),
    rig.frame(d.MSG_IDENTIFY, {}, session=0),
    rig.frame(d.MSG_SESSION_INIT, {d.K_NONCE: bytes(16)}, session=0),
]
# the seeds carry old counters: let the mutants reach past the replay check
rig.seq = 0
node.session.last_seq = 0


def snapshot():
    c = node.cfg
    return (node.cmd_mv, node.on, node.output_on, node.ports.state, node.fs.latched,
            node.prot.latched, node.prot.faults, repr(sorted(c.si.items())),
            node.fs.lease_valid)


def reframe(inner):
    data = bytearray(inner)
    data += b"\x00\x00\x00\x00"
    struct.pack_into(">I", data, len(data) - 4, binascii.crc32(data[:-4]) & 0xFFFFFFFF)
    out = bytearray(len(data) + len(data) // 254 + 2)
    n = encode_into(data, len(data), out)
    out[n] = 0
    return bytes(out[: n + 1])


def mutate(buf):
    b = bytes(buf)  # MicroPython's bytearray cannot insert or delete: rebuild instead
    for _ in range(1 + rnd(4)):
        op = rnd(6)
        if not b:
            break
        i = rnd(len(b))
        if op == 0:
            b = b[:i] + bytes([b[i] ^ (1 << rnd(8))]) + b[i + 1:]
        elif op == 1:
            b = b[:i] + bytes([rnd(256)]) + b[i + 1:]
        elif op == 2:
            b = b[:i] + bytes([rnd(256)]) + b[i:]
        elif op == 3:
            b = b[:i] + b[i + 1:]
        elif op == 4:
            b = b[:i]
        else:
            j = rnd(len(b))
            b = b[:i] + b[j:j + 1 + rnd(8)] + b[i:]
    return b


crashes = 0
violations = 0
accepted = 0
first_error = ""
for i in range(COUNT):
    seed = seeds[rnd(len(seeds))]
    kind = rnd(10)
    if kind < 4:
        wire = bytes(mutate(seed))
    elif kind < 9:
        raw = bytearray(seed[:-1])
        n = decode_in_place(raw, len(raw))
        inner = raw[: n - 4]
        # keep the header mostly intact so that the body checks are reached
        head, body = inner[:d.HEADER_LEN], inner[d.HEADER_LEN:]
        if rnd(4) == 0:
            head = mutate(head)
        else:
            rig.seq += 1
            head = bytearray(head)
            struct.pack_into(">I", head, 9, rig.seq)  # a fresh counter
            if head[7] or head[8]:
                struct.pack_into(">H", head, 7, node.session.id)  # the session in force
        wire = reframe(bytes(head) + bytes(mutate(body)))
    else:
        wire = bytes(rnd(256) for _ in range(1 + rnd(64))) + b"\x00"
    before = snapshot()
    before_acc = node.accepted
    results.clear()
    sid = node.session.id
    try:
        node.framer.feed(wire, len(wire), node.on_block)
    except Exception as e:  # the property under test: nothing escapes
        crashes += 1
        if not first_error:
            first_error = repr(e) + " on " + binascii.hexlify(wire).decode()
        continue
    if node.accepted != before_acc:
        accepted += 1
    ok = any(r == d.RES_OK for r in results)
    if not ok and node.session.id == sid and snapshot() != before:
        violations += 1
        if not first_error:
            first_error = "state changed by a refused frame: " + binascii.hexlify(wire).decode()
    if node.session.id != sid:
        rig.session = node.session.id  # a mutated SESSION_INIT that was valid opened a session
    node.step()

print(json.dumps({"frames": COUNT, "crashes": crashes, "violations": violations,
                  "accepted": accepted, "rejects": node.framer.rejects, "first_error": first_error}))
