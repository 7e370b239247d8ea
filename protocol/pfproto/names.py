"""Readable names for the protocol's numbers (host side only; the node never imports this).

Derived from `pfproto.defs` by prefix, so a constant added there is named here
without a second list to keep in step.
"""

from pfproto import defs as _d


def _table(prefix):
    items = sorted((v, k[len(prefix):].lower()) for k, v in vars(_d).items()
                   if k.startswith(prefix) and isinstance(v, int))
    return {v: n for v, n in items}


MODE_NAMES = _table("MODE_")
RES_NAMES = _table("RES_")
REJ_NAMES = _table("REJ_")
PROT_NAMES = _table("PROT_")
EV_NAMES = _table("EV_")
FS_NAMES = _table("FS_")
RESP_NAMES = _table("RESP_")
FAULT_NAMES = _table("FAULT_")  # bit -> name


def fault_bits(mask):
    """['ov', 'ot', ...] for a FAULT_* bit mask."""
    return [n for bit, n in sorted(FAULT_NAMES.items()) if mask & bit]
