# Decode every protocol test vector with the node's codec and re-encode the valid
# ones; prints one JSON line per vector: {"name", "reject": reason name or null,
# "wire": the re-encoded frame in hex (valid vectors)}. Usage:
#   micropython mp_vectors.py VECTOR_FILE...
import json
import sys
from binascii import hexlify, unhexlify

from pfnode.auth import Hmac
from pfnode.frame import Framer
from pfproto import defs as d
from pfproto.fields import check_body

# the node's codec checks bodies of both directions here, so load the host's tables
from pfproto import fields_host  # noqa: F401

REJ = {}
for _k in dir(d):
    if _k.startswith("REJ_"):
        REJ[getattr(d, _k)] = _k[4:].lower()


def check(vec):
    fr = Framer()
    wire = unhexlify(vec["wire"])
    mac = Hmac(unhexlify(vec["mac_key"])) if vec.get("mac_key") else None
    out = {"name": vec["name"], "reject": None, "wire": None}
    blocks = []
    fr.feed(wire, len(wire), lambda n: blocks.append(n))
    before = sum(fr.rejects)

    def counted():
        for i in range(d.N_REJ):
            if fr.rejects[i]:
                return REJ[i]
        return "uncounted"

    if not blocks:
        out["reject"] = counted()
        return out
    f = fr.parse(blocks[0])
    if f is None:
        out["reject"] = counted()
        return out
    if f.type not in d.TO_NODE and f.type not in d.TO_HOST:
        out["reject"] = "unknown_msg"
        return out
    if mac is not None:
        if not f.tagged:
            out["reject"] = "no_tag"
            return out
        if not fr.check_tag(f, mac):
            out["reject"] = counted()
            return out
    ctx = vec.get("context", {})
    if "last_seq" in ctx and f.seq <= ctx["last_seq"]:
        out["reject"] = "replay"
        return out
    if not fr.decode_body(f):
        out["reject"] = counted()
        return out
    reason, key = check_body(f.type, f.body)
    if reason:
        out["reject"] = REJ[reason]
        return out
    assert sum(fr.rejects) == before
    fr.begin().value(f.body)
    n = fr.build(f.type, f.src, f.dst, f.session, f.seq, mac if f.tagged else None)
    out["wire"] = hexlify(fr.tx_wire[:n]).decode()
    return out


for path in sys.argv[1:]:
    with open(path) as fh:
        vec = json.load(fh)
    print(json.dumps(check(vec)))
