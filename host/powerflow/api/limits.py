"""A request body limit enforced before the body is read (ASGI middleware).

A `Content-Length` above the limit is answered 413 at once, without reading a byte of the
body; a body sent without a length (chunked) is counted as it arrives and refused as soon
as it passes the limit. Either way the application never sees it.

Before a refusal the rest of a body already on its way (up to DRAIN_BYTES more, for at
most DRAIN_S) is read and thrown away. A server that closes a connection with unread data
makes the kernel reset it, and a reset can destroy the 413 before the client has read it;
the client then sees a broken connection instead of the reason (nginx's "lingering close"
answers the same problem). Bodies larger than that are refused without waiting for them.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

MAX_BODY_BYTES = 64 * 1024
DRAIN_BYTES = 1024 * 1024  # the most of a refused body read (and discarded) before the 413
DRAIN_S = 2.0  # and the longest time spent reading it (s)


class _TooLarge(Exception):
    pass


class BodyLimit:
    def __init__(self, app: Any, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send: Any) -> None:
        body = json.dumps({"detail": f"the request body is over {self.max_bytes} bytes"}
                          ).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    async def _drain(receive: Any, budget: int) -> None:
        """Read and discard what is left of the body: at most `budget` bytes, DRAIN_S s."""
        try:
            async with asyncio.timeout(DRAIN_S):
                while budget > 0:
                    msg = await receive()
                    if msg["type"] != "http.request":
                        return
                    budget -= len(msg.get("body", b""))
                    if not msg.get("more_body", False):
                        return
        except TimeoutError:
            pass

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = -1  # a length that is not a number is refused too
                if length < 0 or length > self.max_bytes:
                    if 0 < length <= self.max_bytes + DRAIN_BYTES:
                        await self._drain(receive, length)
                    await self._refuse(send)
                    return
        seen = 0
        started = False

        async def counted() -> Any:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge(msg.get("more_body", False))
            return msg

        async def tracked(msg: Any) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge as e:
            if not started:
                if e.args[0]:  # more of the body is coming
                    await self._drain(receive, DRAIN_BYTES)
                await self._refuse(send)
