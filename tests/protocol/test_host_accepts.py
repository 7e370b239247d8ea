"""What the host accepts from a node (SPEC.md §3): crafted frames injected on a real link to
real MicroPython nodes (one keyed, one unkeyed), between the node and the host's session.

The injector sits in the byte stream from node to host, as anyone with access to the serial
line or the Ethernet segment could; each test checks that the forged frame is dropped and
counted by its reason, and that the genuine session carries on (commands acknowledged,
telemetry arriving)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from pfproto import defs as d
from powerflow.emulator.rack_emulator import EmulatedRack
from powerflow.link.session import RESYNC_WINDOW, NodeSession
from powerflow.link.transport import open_link
from powerflow.protocol.codec import encode_frame
from powerflow.model.rack import load_rack

KEY = "5a" * 32
RACK = f"""
[rack]
name = "crafted"
bus_voltage = 12.0
[feed]
voltage = 48.0
breaker_limit_w = 2000
[[segment]]
id = "A"
[[node]]
id = 1
segment = "A"
link = "tcp"
rating_w = 600
vout_max = 14.0
iout_max = 50
key = "{KEY}"
[[node]]
id = 2
segment = "A"
link = "tcp"
rating_w = 600
vout_max = 14.0
iout_max = 50
[[device]]
id = "gpu0"
segment = "A"
priority = 1
p_min_w = 50
p_max_w = 300
"""


class Tap:
    """The node's byte stream, with a way to slip frames into it on the way to the host."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.src = reader
        self.out = asyncio.StreamReader()
        self.task = asyncio.get_running_loop().create_task(self._pump())

    async def _pump(self) -> None:
        while data := await self.src.read(4096):
            self.out.feed_data(data)
        self.out.feed_eof()

    def inject(self, frame: bytes) -> None:
        self.out.feed_data(b"\x00" + frame)  # a leading delimiter: a frame of its own


async def open_retrying(addr: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The node's link, once its process listens (at most 15 s)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + 15
    while True:
        try:
            return await open_link(addr)
        except OSError:
            if loop.time() > end:
                raise
            await asyncio.sleep(0.05)


async def connect(addr: Any, key: bytes | None, node_id: int
                  ) -> tuple[NodeSession, Tap]:
    r, w = await open_retrying(addr)
    tap = Tap(r)
    s = NodeSession(tap.out, w, key=key, node_id=node_id)
    await s.wait_hello()
    await s.open_session()
    await s.confirm_identity()
    await s.command(d.MSG_CONFIG, {d.K_TELEMETRY_PERIOD_MS: 100})
    return s, tap


async def telemetry_after(s: NodeSession, n: int = 3, timeout: float = 5.0) -> int:
    """Drain the inbox until `n` fresh telemetry frames arrived; returns how many did."""
    loop = asyncio.get_running_loop()
    end, got = loop.time() + timeout, 0
    while got < n and loop.time() < end:
        try:
            rx = await asyncio.wait_for(s.inbox.get(), max(0.01, end - loop.time()))
        except TimeoutError:
            break
        got += rx.frame.type == d.MSG_TELEMETRY
        s.heartbeat(0)
    return got


def hello_body(node_id: int, vout_max: float = 14.0) -> dict[int, Any]:
    return {d.K_NODE_ID: node_id, d.K_FW_VERSION: "forged", d.K_BOARD: "emu",
            d.K_MFR_VOUT_MAX: vout_max, d.K_MFR_IOUT_MAX: 50.0, d.K_MFR_POUT_MAX: 600.0,
            d.K_MFR_VIN_MIN: 36.0, d.K_MFR_VIN_MAX: 60.0, d.K_CAPABILITIES: 7, d.K_PORTS: 0,
            d.K_UPTIME_MS: 1, d.K_KEYED: False, d.K_BOOT_REASON: 0}


Case = Callable[[dict[int, tuple[NodeSession, Tap]]], Awaitable[None]]


@pytest.fixture(scope="module")
def rack_addrs(tmp_path_factory: pytest.TempPathFactory):
    p: Path = tmp_path_factory.mktemp("crafted") / "rack.toml"
    p.write_text(RACK)
    rack = load_rack(p)
    emu = EmulatedRack(rack)
    addrs = emu.start()
    try:
        yield addrs
    finally:
        emu.stop()


def run(addrs: dict, case: Case) -> None:
    async def main() -> None:
        links = {1: await connect(addrs[1], bytes.fromhex(KEY), 1),
                 2: await connect(addrs[2], None, 2)}
        try:
            await case(links)
        finally:
            for s, tap in links.values():
                tap.task.cancel()
                await s.close()

    asyncio.run(main())


def test_an_untagged_hello_in_a_keyed_session_changes_nothing(rack_addrs) -> None:
    async def case(links: dict) -> None:
        s, tap = links[1]
        before = dict(s.hello)
        # the review's attack: another NODE_ID (re-addressing the node), then a 60 V rating
        tap.inject(encode_frame(d.MSG_HELLO, 1, d.ADDR_HOST, 0, 1, hello_body(5)))
        tap.inject(encode_frame(d.MSG_HELLO, 1, d.ADDR_HOST, s.session, 10**6,
                                hello_body(1, 60.0)))
        assert await telemetry_after(s) == 3
        assert s.node_id == 1 and s.hello == before
        assert s.hello[d.K_MFR_VOUT_MAX] == 14.0
        # in the session a HELLO must carry the session key's tag: both refused as untagged
        assert s.decoder.rejects[d.REJ_NO_TAG] == 2
        ack = await s.command(d.MSG_SETPOINT, {d.K_VOUT_COMMAND: 12.0, d.K_LEASE_MS: 2000})
        assert ack[d.K_RESULT] == d.RES_OK  # commands still reach node 1

    run(rack_addrs, case)


def test_identity_is_fixed_for_an_unkeyed_session_too(rack_addrs) -> None:
    async def case(links: dict) -> None:
        s, tap = links[2]
        tap.inject(encode_frame(d.MSG_HELLO, 2, d.ADDR_HOST, 0, 1, hello_body(2, 60.0)))
        tap.inject(encode_frame(d.MSG_HELLO, 2, d.ADDR_HOST, 0, 2, hello_body(7)))
        assert await telemetry_after(s) == 3
        assert s.hello[d.K_MFR_VOUT_MAX] == 14.0 and s.node_id == 2
        assert s.refused["identity"] == 2

    run(rack_addrs, case)


def test_host_direction_frames_and_other_addresses_are_dropped(rack_addrs) -> None:
    async def case(links: dict) -> None:
        s, tap = links[2]
        sess, seq = s.session, 10**5
        tap.inject(encode_frame(d.MSG_SETPOINT, 2, d.ADDR_HOST, sess, seq,
                                {d.K_VOUT_COMMAND: 1.0, d.K_LEASE_MS: 1000}))
        tap.inject(encode_frame(d.MSG_HEARTBEAT, 2, 9, sess, seq + 1,
                                {d.K_UPTIME_MS: 1}))
        tap.inject(encode_frame(d.MSG_HEARTBEAT, 3, d.ADDR_HOST, sess, seq + 2,
                                {d.K_UPTIME_MS: 1}))
        assert await telemetry_after(s) == 3
        assert (s.refused["direction"], s.refused["destination"], s.refused["source"]) == (1, 1, 1)
        assert s.decoder.rejects[d.REJ_DIRECTION] == 1

    run(rack_addrs, case)


def test_one_forged_counter_cannot_lock_out_an_unkeyed_node(rack_addrs) -> None:
    async def case(links: dict) -> None:
        s, tap = links[2]
        tap.inject(encode_frame(d.MSG_HEARTBEAT, 2, d.ADDR_HOST, s.session, 2**31,
                                {d.K_UPTIME_MS: 1}))
        # the genuine frames that follow are far below the forged counter: taken, not replays
        assert await telemetry_after(s, 5) == 5
        assert s.refused["counter_resync"] == 1
        assert s.refused["replay"] == 0
        # within the window, a frame below the highest is a duplicate and dropped
        top = s._rx_seq
        tap.inject(encode_frame(d.MSG_HEARTBEAT, 2, d.ADDR_HOST, s.session, max(1, top - min(3, RESYNC_WINDOW)),
                                {d.K_UPTIME_MS: 1}))
        assert await telemetry_after(s) == 3
        assert s.refused["replay"] == 1

    run(rack_addrs, case)


def test_a_stale_session_accept_does_not_abort_a_handshake(rack_addrs) -> None:
    async def case(links: dict) -> None:
        s, tap = links[1]
        old = encode_frame(d.MSG_SESSION_ACCEPT, 1, d.ADDR_HOST, s.session, 1,
                           {d.K_NONCE: b"\x01" * 16, d.K_SESSION: s.session, d.K_ACK_SEQ: 1},
                           bytes.fromhex(KEY))
        tap.inject(old)  # no handshake pending: stale
        assert await telemetry_after(s, 1) == 1
        assert s.refused["stale_accept"] == 1

        async def replay_during_handshake() -> None:
            await asyncio.sleep(0)  # once the SESSION_INIT is out
            tap.inject(old)

        t = asyncio.get_running_loop().create_task(replay_during_handshake())
        sid = await s.open_session()  # the forged accept is ignored; the genuine one counts
        await t
        assert sid == s.session != 0 and s.refused["stale_accept"] == 2
        await s.confirm_identity()
        ack = await s.command(d.MSG_SETPOINT, {d.K_VOUT_COMMAND: 12.0, d.K_LEASE_MS: 2000})
        assert ack[d.K_RESULT] == d.RES_OK

    run(rack_addrs, case)


def test_a_keyed_nodes_identity_comes_from_inside_its_session(rack_addrs) -> None:
    async def main() -> None:
        r, w = await open_retrying(rack_addrs[1])
        tap = Tap(r)
        s = NodeSession(tap.out, w, key=bytes.fromhex(KEY), node_id=1)
        # before any session, a forged HELLO claims 60 V: taken only as provisional
        tap.inject(encode_frame(d.MSG_HELLO, 1, d.ADDR_HOST, 0, 1, hello_body(1, 60.0)))
        await s.wait_hello()
        await s.open_session()
        hello = await s.confirm_identity()
        assert hello[d.K_MFR_VOUT_MAX] == 14.0 and hello[d.K_KEYED] is True
        tap.task.cancel()
        await s.close()

    asyncio.run(main())
