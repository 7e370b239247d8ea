"""The live views: server-sent events of the rack's state, and the dashboard page."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from powerflow.api.deps import service
from powerflow.service import HostService

router = APIRouter()
page = APIRouter()


def state(svc: HostService) -> dict[str, Any]:
    """One `state` event: nodes, the last allocation, alarms and forecasts, as measured."""
    a = svc.allocation()
    return {"t": time.time(), "nodes": svc.nodes(), "allocation": a.as_dict() if a else None,
            "alarms": [al.as_dict() for al in svc.alarms()],
            "forecasts": svc.forecasts() if svc.has_control else None}


@router.get("/stream", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "server-sent events, one `state` a period"}})
async def stream(request: Request, svc: HostService = Depends(service)) -> StreamingResponse:
    """Server-sent events: `state` (nodes and the allocation) every period, `event` for
    each new node event."""

    async def gen() -> AsyncIterator[str]:
        since = time.time()
        while not await request.is_disconnected():
            yield f"event: state\ndata: {json.dumps(state(svc))}\n\n"
            for e in svc.events(since):
                since = max(since, e["t"] + 1e-6)
                yield f"event: event\ndata: {json.dumps(e)}\n\n"
            await asyncio.sleep(svc.period_s)

    return StreamingResponse(gen(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


@page.get("/", include_in_schema=False)
def dashboard() -> HTMLResponse:
    return HTMLResponse((Path(__file__).parent.parent / "dashboard.html").read_text())
