# MicroPython test helpers: a node on the `sim` HAL with a virtual clock, and a
# "host" that talks to it through real frames built by a second Framer.
from pfnode.auth import Hmac, derive_session_key
from pfnode.config import Ratings
from pfnode.frame import Framer
from pfnode.hal.sim import ConverterPlant, SimHal
from pfnode.node import Node
from pfproto import defs as d

KEY = bytes(range(32))
HOST_NONCE = bytes(range(16, 32))


class Capture:
    """A link that keeps what the node sends, decoded by an independent framer."""

    def __init__(self, framer):
        self.frames = []  # (type, header session, seq, body)
        self._fr = framer  # the host's framer: its receive half

    def write(self, buf, n):
        data = bytes(buf[:n])
        self._fr.feed(data, len(data), self._block)

    def _block(self, n):
        f = self._fr.parse(n)
        if f is None:
            raise AssertionError("node sent a frame that does not parse")
        if not self._fr.decode_body(f):
            raise AssertionError("node sent a body that does not decode")
        self.frames.append((f.type, f.session, f.seq, f.body))

    def of_type(self, t):
        return [fr[3] for fr in self.frames if fr[0] == t]

    def clear(self):
        self.frames = []


class Rig:
    """One node, its plant and a host speaking to it in frames."""

    def __init__(self, keyed=False, clock_ms=1000, plant=None, ratings=None, period=5):
        self.plant = plant if plant is not None else ConverterPlant(load_ohm=2.0)
        self.hal = SimHal(self.plant, clock_ms=clock_ms)
        self.host = Framer()
        self.link = Capture(self.host)
        self.key = KEY if keyed else None
        self.node = Node(3, self.hal, self.link, ratings or Ratings(), self.key, period)
        self.seq = 0
        self.session = 0
        self.mac = None

    # ---- time ---------------------------------------------------------------
    def run(self, ms, heartbeat=True, every=None):
        """Advance `ms` of simulated time, one control period at a time; the host
        heartbeats every 500 ms unless told not to. `every(rig)` runs each step."""
        period = self.node.cfg.control_period_ms
        t = 0
        while t < ms:
            self.hal.advance(period)
            self.node.step()
            self.node.service()
            if heartbeat and self.session and (t % 500) < period:
                self.send(d.MSG_HEARTBEAT, {d.K_UPTIME_MS: t})
            if every is not None:
                every(self)
            t += period

    # ---- host side ------------------------------------------------------------
    def frame(self, msg_type, body, seq=None, session=None, mac="session", dst=3):
        if seq is None:
            self.seq += 1
            seq = self.seq
        e = self.host.begin()
        e.value(body)
        if mac == "session":
            mac = self.mac
        n = self.host.build(msg_type, d.ADDR_HOST, dst,
                            self.session if session is None else session, seq, mac)
        return bytes(self.host.tx_wire[:n])

    def deliver(self, wire):
        """Feed wire bytes to the node; return the bodies of the ACKs it sent back."""
        first = len(self.link.frames)
        fr = self.node.framer
        fr.feed(wire, len(wire), self.node.on_block)
        return [f[3] for f in self.link.frames[first:] if f[0] == d.MSG_ACK]

    def send(self, msg_type, body, **kw):
        acks = self.deliver(self.frame(msg_type, body, **kw))
        return acks[-1] if acks else None

    def open_session(self):
        mac = Hmac(self.key) if self.key else None
        self.link.clear()
        wire = self.frame(d.MSG_SESSION_INIT, {d.K_NONCE: HOST_NONCE}, session=0, mac=mac)
        self.node.framer.feed(wire, len(wire), self.node.on_block)
        acc = self.link.of_type(d.MSG_SESSION_ACCEPT)
        assert acc, "no SESSION_ACCEPT"
        self.session = acc[0][d.K_SESSION]
        self.seq = 0
        if self.key:
            self.mac = Hmac(derive_session_key(self.key, HOST_NONCE, acc[0][d.K_NONCE],
                                               self.session))
        return acc[0]

    def setpoint(self, volts, lease_ms=3000, on=True):
        return self.send(d.MSG_SETPOINT, {d.K_VOUT_COMMAND: float(volts), d.K_LEASE_MS: lease_ms,
                                          d.K_OPERATION: on})

    def config(self, **fields):
        body = {}
        for name, v in fields.items():
            body[getattr(d, "K_" + name)] = v
        return self.send(d.MSG_CONFIG, body)

    def telemetry(self):
        self.link.clear()
        self.node.send_telemetry()
        return self.link.of_type(d.MSG_TELEMETRY)[-1]


def result(ack):
    return None if ack is None else ack[d.K_RESULT]


def near(a, b, tol):
    return abs(a - b) <= tol

