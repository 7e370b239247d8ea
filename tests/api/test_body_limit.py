"""The body limit's refusal, driven as ASGI: what it reads of a refused body, and what not."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from powerflow.api.limits import DRAIN_BYTES, BodyLimit

LIMIT = 1000


async def _reader(scope: Any, receive: Any, send: Any) -> None:
    """An app that reads the whole body and answers 200."""
    while (await receive()).get("more_body", False):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _drive(chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> tuple[int, list[Any]]:
    """Run one request through BodyLimit; returns how many body messages it took from the
    client and what it sent back."""
    taken = 0
    sent: list[Any] = []

    async def receive() -> Any:
        nonlocal taken
        if taken >= len(chunks):
            return {"type": "http.disconnect"}
        taken += 1
        return {"type": "http.request", "body": chunks[taken - 1],
                "more_body": taken < len(chunks)}

    async def send(msg: Any) -> None:
        sent.append(msg)

    scope = {"type": "http", "headers": headers}
    asyncio.run(BodyLimit(_reader, max_bytes=LIMIT)(scope, receive, send))
    return taken, sent


def _status(sent: list[Any]) -> int:
    return int(next(m["status"] for m in sent if m["type"] == "http.response.start"))


def test_a_streamed_body_over_the_limit_is_read_to_its_end_before_the_413() -> None:
    # without the rest read, closing the connection resets it and can destroy the answer
    chunks = [b"x" * 100] * 50  # 5,000 bytes in 50 pieces, no length given
    taken, sent = _drive(chunks, [])
    assert _status(sent) == 413 and taken == len(chunks)
    assert "over 1000 bytes" in json.loads(sent[-1]["body"])["detail"]


def test_a_body_far_over_the_limit_is_not_read_beyond_the_drain_bound() -> None:
    chunks = [b"x" * 65536] * (4 * DRAIN_BYTES // 65536)
    taken, sent = _drive(chunks, [])
    assert _status(sent) == 413
    assert taken * 65536 <= LIMIT + 65536 + DRAIN_BYTES < len(chunks) * 65536


def test_a_declared_length_over_the_limit_is_refused_and_a_huge_one_unread() -> None:
    chunks = [b"x" * 100] * 20
    taken, sent = _drive(chunks, [(b"content-length", b"2000")])
    assert _status(sent) == 413 and taken == len(chunks)  # small: read and thrown away
    taken, sent = _drive(chunks, [(b"content-length", str(50 * DRAIN_BYTES).encode())])
    assert _status(sent) == 413 and taken == 0  # huge: refused without reading a byte
    taken, sent = _drive(chunks, [(b"content-length", b"lots")])
    assert _status(sent) == 413 and taken == 0


def test_a_body_within_the_limit_reaches_the_application() -> None:
    taken, sent = _drive([b"x" * 100] * 10, [(b"content-length", b"1000")])
    assert _status(sent) == 200 and taken == 10
