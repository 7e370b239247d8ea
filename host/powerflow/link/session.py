"""The host's protocol session with one node over one byte link.

`NodeSession` reads frames from the link (checking CRC, tags and counters),
answers nothing by itself, and offers: `wait_hello()`, `open_session()` (the
keyed handshake of SPEC.md, "Sessions"), `command()` (send, wait for the
acknowledgement, retry with the same counter so the node applies it once) and
`heartbeat()`. Telemetry, heartbeats and events land in `self.inbox`.
"""

from __future__ import annotations

import asyncio
import hmac
import os
from dataclasses import dataclass, field
from typing import Any

from pfproto import defs as d
from pfproto.fields import FIELDS, check_body
from pfproto.names import REJ_NAMES, RES_NAMES
from powerflow.protocol.codec import Frame, StreamDecoder, encode_frame, tag_of
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

    Raises ValueError naming the field and its limits.
    """
    reason, key = check_body(msg_type, body)
    if reason:
        name = key_name(key) if key >= 0 else "body"
        lim = FIELDS.get(key)
        limits = f" (allowed {lim[1]}..{lim[2]})" if lim and lim[1] is not None else ""
        raise ValueError(f"{name}: {REJ_NAMES.get(reason, reason)}{limits}")
    if hello and msg_type == d.MSG_SETPOINT and body[d.K_VOUT_COMMAND] > hello[d.K_MFR_VOUT_MAX]:
        raise ValueError(f"VOUT_COMMAND: {body[d.K_VOUT_COMMAND]} V exceeds the node's rating "
                         f"of {hello[d.K_MFR_VOUT_MAX]} V")


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
        if self.key is None or f.type in (d.MSG_HELLO, d.MSG_SESSION_ACCEPT):
            return None  # HELLO precedes any session; SESSION_ACCEPT is checked in _on_frame
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
        if self.node_id is not None and f.src != self.node_id:
            return
        if f.type == d.MSG_HELLO:
            self.hello = f.body
            self.node_id = f.body[d.K_NODE_ID]
            self._hello_event.set()
            return
        if f.type == d.MSG_SESSION_ACCEPT:
            if self._accept is not None and not self._accept.done():
                # take the session at once: the node's next frames, perhaps in
                # this same read, are already tagged with the new key
                if self._take_session(f):
                    self._accept.set_result(f)
                else:
                    self._accept.set_exception(PermissionError(
                        "SESSION_ACCEPT does not verify: wrong key for this node?"))
            return
        if f.session != self.session or self.session == 0:
            return  # from a session that is not (or no longer) ours
        if f.seq <= self._rx_seq:
            self.decoder.rejects[d.REJ_REPLAY] += 1
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
        self.seq = 0
        self._send(d.MSG_SESSION_INIT, {d.K_NONCE: self._nonce}, self._next_seq(), 0, self.key)
        try:
            await asyncio.wait_for(self._accept, timeout)
        except TimeoutError:
            raise TimeoutError("the node did not accept a session") from None
        return self.session

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
