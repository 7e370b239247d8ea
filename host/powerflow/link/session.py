"""The host's protocol session with one node over one byte link.

`NodeSession` reads frames from the link (checking CRC, tags and counters),
answers nothing by itself, and offers: `wait_hello()`, `open_session()` (the
keyed handshake of SPEC.md, "Sessions"), `command()` (send, wait for the
acknowledgement, retry with the same counter so the node applies it once) and
`heartbeat()`. Telemetry, heartbeats and events land in `self.inbox`.

What the host accepts from a node (SPEC.md §3, "What the host accepts"): only node→host
message types, addressed to the host, from the node's own address; in a keyed session
only frames tagged with the session key, HELLO included; a node's identity and ratings
fixed for the session; a SESSION_ACCEPT only as the answer to the host's own pending
SESSION_INIT. Everything else is dropped and counted by reason in `refused`.
"""

from __future__ import annotations

import asyncio
import hmac
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pfproto import defs as d
from pfproto.fields import FIELDS, check_body
from pfproto.names import REJ_NAMES, RES_NAMES
from powerflow.protocol.codec import Frame, StreamDecoder, encode_frame, tag_of, wire_body
from powerflow.protocol.names import key_name
from powerflow.protocol.session_keys import derive_session_key


class CommandError(Exception):
    """A command the node refused (`result` is RES_*) or never acknowledged (`result` None)."""

    def __init__(self, message: str, result: int | None = None, reason: int | None = None,
                 key: int | None = None) -> None:
        super().__init__(message)
        self.result = result
        self.reason = reason
        self.key = key


def describe_refusal(ack: dict[int, Any]) -> str:
    res = ack.get(d.K_RESULT, -1)
    text = RES_NAMES.get(res, str(res))
    if d.K_REASON in ack:
        text += f" ({REJ_NAMES.get(ack[d.K_REASON], ack[d.K_REASON])})"
    if d.K_FIELD in ack:
        text += f", field {key_name(ack[d.K_FIELD])}"
    return text


def check_outgoing(msg_type: int, body: dict[int, Any], hello: dict[int, Any] | None) -> None:
    """Refuse, before anything is sent, a body the node would refuse for its form or range.

    Values are judged as the node will see them: floats rounded to float32 (what the wire
    carries), so 1e-300 is 0 and 60.000001 is 60. Raises ValueError naming the field and
    its limits.
    """
    body = wire_body(body)
    reason, key = check_body(msg_type, body)
    if reason:
        name = key_name(key) if key >= 0 else "body"
        lim = FIELDS.get(key)
        limits = f" (allowed {lim[1]}..{lim[2]})" if lim and lim[1] is not None else ""
        raise ValueError(f"{name}: {REJ_NAMES.get(reason, reason)}{limits}")
    if hello and msg_type == d.MSG_SETPOINT and body[d.K_VOUT_COMMAND] > hello[d.K_MFR_VOUT_MAX]:
        raise ValueError(f"VOUT_COMMAND: {body[d.K_VOUT_COMMAND]} V exceeds the node's rating "
                         f"of {hello[d.K_MFR_VOUT_MAX]} V")


# HELLO fields that name the node and its ratings: fixed once a session has them
IDENTITY_KEYS = (d.K_NODE_ID, d.K_BOARD, d.K_MFR_VOUT_MAX, d.K_MFR_IOUT_MAX, d.K_MFR_POUT_MAX,
                 d.K_MFR_VIN_MIN, d.K_MFR_VIN_MAX, d.K_CAPABILITIES, d.K_PORTS, d.K_KEYED)
# Unkeyed sessions: a counter this far below the highest seen is taken as the node's own
# (the higher one was not: a stray or forged frame), so one such frame cannot lock the
# genuine ones out; within the window it is a duplicate or stale frame and dropped.
RESYNC_WINDOW = 16
# host-side reasons for dropping a frame that decoded well (`NodeSession.refused`)
REFUSALS = ("direction", "destination", "source", "untagged", "identity", "stale_accept",
            "replay", "counter_resync")


@dataclass
class Received:
    """A frame from the node with the host's arrival time (s, monotonic)."""

    frame: Frame
    t: float


@dataclass
class NodeSession:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    key: bytes | None = None  # the node's provisioned key, if it has one
    node_id: int | None = None  # learnt from HELLO when None
    inbox: asyncio.Queue[Received] = field(default_factory=lambda: asyncio.Queue(maxsize=1000))
    hello: dict[int, Any] | None = None
    session: int = 0
    seq: int = 0
    dropped: int = 0  # inbox overflow
    _session_key: bytes | None = None
    _nonce: bytes = b""
    _rx_seq: int = 0
    _acks: dict[int, asyncio.Future[dict[int, Any]]] = field(default_factory=dict)
    _accept: asyncio.Future[Frame] | None = None
    _hello_event: asyncio.Event = field(default_factory=asyncio.Event)
    _reader_task: asyncio.Task[None] | None = None
    _init_seq: int = 0
    _bad_accepts: int = 0
    _confirmed: asyncio.Event = field(default_factory=asyncio.Event)
    refused: Counter[str] = field(default_factory=Counter)  # host-side drops, by reason

    def __post_init__(self) -> None:
        self.decoder = StreamDecoder(key_for=self._key_for)
        # one command in flight at a time: a retry keeps its counter only while no newer
        # frame has gone out, or the node would rightly refuse it as a replay
        self._cmd_lock = asyncio.Lock()

    # ---- receiving ------------------------------------------------------------
    def _take_session(self, f: Frame) -> bool:
        sid = f.body[d.K_SESSION]
        skey = None
        if self.key is not None:
            skey = derive_session_key(self.key, self._nonce, f.body[d.K_NONCE], sid)
            if f.tag is None or not hmac.compare_digest(f.tag, tag_of(skey, f.signed)):
                self.decoder.rejects[d.REJ_TAG] += 1
                return False
        self.session = sid
        self._session_key = skey
        self._rx_seq = f.seq
        return True

    def _key_for(self, f: Frame) -> bytes | None:
        if self.key is None or f.type == d.MSG_SESSION_ACCEPT:
            return None  # unkeyed; SESSION_ACCEPT is checked against its nonces in _on_frame
        if f.type == d.MSG_HELLO and self._session_key is None:
            return None  # before a session a HELLO is untagged (and only provisional)
        return self._session_key or b"\x00" * 32  # no session key yet: any tag fails

    def start(self) -> None:
        if self._reader_task is None:
            self._reader_task = asyncio.get_running_loop().create_task(self._read_loop())

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await self.reader.read(4096)
            if not data:
                break
            now = loop.time()
            for item in self.decoder.feed(data):
                if isinstance(item, Frame):
                    self._on_frame(item, now)
        for fut in self._acks.values():
            if not fut.done():
                fut.set_exception(ConnectionError("link closed"))

    def _on_frame(self, f: Frame, now: float) -> None:
        if f.type not in d.TO_HOST:
            self.decoder.rejects[d.REJ_DIRECTION] += 1
            self.refused["direction"] += 1
            return
        if f.dst != d.ADDR_HOST:
            self.refused["destination"] += 1
            return
        if self.node_id is not None and f.src != self.node_id:
            self.refused["source"] += 1
            return
        if f.type == d.MSG_HELLO:
            self._on_hello(f)
            return
        if f.type == d.MSG_SESSION_ACCEPT:
            self._on_accept(f)
            return
        if f.session != self.session or self.session == 0:
            return  # from a session that is not (or no longer) ours
        if f.seq <= self._rx_seq:
            if self.key is None and self._rx_seq - f.seq > RESYNC_WINDOW:
                self.refused["counter_resync"] += 1  # taken: see RESYNC_WINDOW
            else:
                self.decoder.rejects[d.REJ_REPLAY] += 1
                self.refused["replay"] += 1
                return
        self._rx_seq = f.seq
        if f.type == d.MSG_ACK:
            fut = self._acks.get(f.body[d.K_ACK_SEQ])
            if fut is not None and not fut.done():
                fut.set_result(f.body)
            return
        if self.inbox.full():
            self.inbox.get_nowait()
            self.dropped += 1
        self.inbox.put_nowait(Received(f, now))

    def _on_hello(self, f: Frame) -> None:
        """A HELLO names its sender (NODE_ID = the frame's source = the node expected). In a
        keyed session it counts only tagged with the session key (the decoder has checked
        the tag); before the session it is provisional, and `confirm_identity` asks for it
        again inside the session. Once confirmed, a HELLO must repeat the same identity."""
        nid = f.body[d.K_NODE_ID]
        if nid != f.src or (self.node_id is not None and nid != self.node_id):
            self.refused["identity"] += 1
            return
        authentic = self.key is None or (self._session_key is not None and f.tag is not None)
        if self.key is not None and self._session_key is not None and f.tag is None:
            self.refused["untagged"] += 1
            return
        if self._confirmed.is_set() and self.hello is not None and any(
                f.body.get(k) != self.hello.get(k) for k in IDENTITY_KEYS):
            self.refused["identity"] += 1
            return
        if self._confirmed.is_set() and not authentic:
            self.refused["untagged"] += 1
            return
        if authentic:
            self._confirmed.set()
        self.hello = f.body
        self.node_id = nid
        self._hello_event.set()

    def _on_accept(self, f: Frame) -> None:
        """Only the answer to this host's pending SESSION_INIT; anything else is stale (an
        old or replayed accept) and ignored, so it cannot abort a handshake."""
        if (self._accept is None or self._accept.done()
                or f.body.get(d.K_ACK_SEQ) != self._init_seq):
            self.refused["stale_accept"] += 1
            return
        # take the session at once: the node's next frames, perhaps in this same read,
        # are already tagged with the new key
        if self._take_session(f):
            self._accept.set_result(f)
        else:
            self._bad_accepts += 1
            self.refused["stale_accept"] += 1

    # ---- sending ----------------------------------------------------------------
    def _send(self, msg_type: int, body: dict[int, Any], seq: int, session: int,
              key: bytes | None) -> None:
        dst = self.node_id if self.node_id is not None else d.ADDR_BROADCAST
        self.writer.write(encode_frame(msg_type, d.ADDR_HOST, dst, session, seq, body, key))

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    async def wait_hello(self, timeout: float = 5.0) -> dict[int, Any]:
        """Wait for the node's HELLO, asking for it with IDENTIFY once a second."""
        self.start()
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not self._hello_event.is_set():
            self._send(d.MSG_IDENTIFY, {}, self._next_seq(), 0, None)
            left = end - loop.time()
            if left <= 0:
                raise TimeoutError("no HELLO from the node")
            try:
                await asyncio.wait_for(self._hello_event.wait(), min(1.0, left))
            except TimeoutError:
                pass
        assert self.hello is not None
        return self.hello

    async def open_session(self, timeout: float = 2.0) -> int:
        """Start a fresh session (new nonces, counters from 1); returns its id."""
        self.start()
        self._nonce = os.urandom(16)
        self._accept = asyncio.get_running_loop().create_future()
        self.session = 0
        self._session_key = None
        self._confirmed.clear()
        self._bad_accepts = 0
        self.seq = 0
        self._init_seq = self._next_seq()
        self._send(d.MSG_SESSION_INIT, {d.K_NONCE: self._nonce}, self._init_seq, 0, self.key)
        try:
            await asyncio.wait_for(self._accept, timeout)
        except TimeoutError:
            if self._bad_accepts:
                raise PermissionError("SESSION_ACCEPT does not verify: wrong key for this "
                                      "node?") from None
            raise TimeoutError("the node did not accept a session") from None
        finally:
            self._accept = None
        return self.session

    async def confirm_identity(self, timeout: float = 2.0) -> dict[int, Any]:
        """In a keyed session, the node's HELLO again, tagged with the session key: the
        identity and ratings the host keeps (the HELLO before the session was untagged,
        so anyone on the link could have sent it). Unkeyed: the HELLO already had."""
        assert self.hello is not None
        if self.key is None:
            self._confirmed.set()  # the identity had is the session's from now on
            return self.hello
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not self._confirmed.is_set():
            self._send(d.MSG_IDENTIFY, {}, self._next_seq(), self.session, self._session_key)
            left = end - loop.time()
            if left <= 0:
                raise TimeoutError("no authenticated HELLO from the node in its session")
            try:
                await asyncio.wait_for(self._confirmed.wait(), min(0.5, left))
            except TimeoutError:
                pass
        return self.hello

    async def command(self, msg_type: int, body: dict[int, Any], timeout: float = 0.3,
                      retries: int = 3) -> dict[int, Any]:
        """Send a command and return its acknowledgement body once the node says OK.

        The body is checked first (ValueError, nothing sent). A lost frame or ack
        is retried with the same counter, which the node acknowledges again
        without applying twice. Raises CommandError when refused or unanswered.
        """
        check_outgoing(msg_type, body, self.hello)
        if self.session == 0:
            raise CommandError("no session with the node")
        async with self._cmd_lock:
            return await self._command(msg_type, body, timeout, retries)

    async def _command(self, msg_type: int, body: dict[int, Any], timeout: float,
                       retries: int) -> dict[int, Any]:
        seq = self._next_seq()
        fut: asyncio.Future[dict[int, Any]] = asyncio.get_running_loop().create_future()
        self._acks[seq] = fut
        try:
            for _ in range(retries + 1):
                self._send(msg_type, body, seq, self.session, self._session_key)
                try:
                    ack = await asyncio.wait_for(asyncio.shield(fut), timeout)
                    break
                except TimeoutError:
                    continue
            else:
                raise CommandError(f"no acknowledgement after {retries + 1} tries")
        finally:
            self._acks.pop(seq, None)
        if ack[d.K_RESULT] != d.RES_OK:
            raise CommandError(f"refused: {describe_refusal(ack)}", ack[d.K_RESULT],
                               ack.get(d.K_REASON), ack.get(d.K_FIELD))
        return ack

    def heartbeat(self, uptime_ms: int) -> None:
        """Send a heartbeat, unless a command is in flight (which shows the host alive)."""
        if self.session and not self._cmd_lock.locked():
            self._send(d.MSG_HEARTBEAT, {d.K_UPTIME_MS: uptime_ms & 0xFFFFFFFF},
                       self._next_seq(), self.session, self._session_key)

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
        self.writer.close()
