"""Redfish's SessionService: log in (POST gives an X-Auth-Token), list, read, log out."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from powerflow.api.access import Throttled
from powerflow.api.auth import Principal
from powerflow.api.redfish.common import (HEADERS, MSG, V1, access_of, authed, error, not_found,
                                          ok, otype, ref, throttled, unauthorised, who)
from powerflow.api.sessions import SessionsFull, SessionStore

SERVICE = V1 + "/SessionService"
SESSIONS = SERVICE + "/Sessions"


class Sessions:
    """The session resources over the host's `SessionStore` (bounded, expiring)."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store

    def service_body(self) -> dict[str, Any]:
        return {"@odata.id": SERVICE, "@odata.type": otype("SessionService"),
                "Id": "SessionService", "Name": "Session Service", "ServiceEnabled": True,
                "SessionTimeout": int(self.store.timeout_s),
                "Status": {"State": "Enabled", "Health": "OK"}, "Sessions": ref(SESSIONS)}

    def collection_body(self) -> dict[str, Any]:
        members = [ref(f"{SESSIONS}/{s.id}") for s in self.store.listing()]
        return {"@odata.id": SESSIONS, "@odata.type": otype("SessionCollection"),
                "Name": "Sessions", "Members": members, "Members@odata.count": len(members)}

    @staticmethod
    def body(sid: str, p: Principal) -> dict[str, Any]:
        return {"@odata.id": f"{SESSIONS}/{sid}", "@odata.type": otype("Session"), "Id": sid,
                "Name": f"Session {sid}", "UserName": p.name}

    def open(self, p: Principal) -> JSONResponse:
        """A new session for an authenticated principal: 201 with its token, or 503 full."""
        try:
            tok, sess = self.store.create(p)
        except SessionsFull as e:
            resp = error(503, str(e), MSG + "ServiceTemporarilyUnavailable",
                         [str(int(self.store.timeout_s))])
            resp.headers["Retry-After"] = "60"
            return resp
        return ok(self.body(sess.id, p), 201,
                  {"X-Auth-Token": tok, "Location": f"{SESSIONS}/{sess.id}"})

    def get(self, sid: str) -> JSONResponse:
        sess = self.store.get(sid)
        if sess is None:
            raise not_found("Session", sid)
        return ok(self.body(sess.id, sess.principal))

    def close(self, sid: str, p: Principal) -> Response:
        """Log out: one's own session, or any with the operator role."""
        sess = self.store.get(sid)
        if sess is None:
            raise not_found("Session", sid)
        if sess.principal.name != p.name and not p.may_write:
            return error(403, f"'{p.name}' may end only its own sessions",
                         MSG + "InsufficientPrivilege")
        self.store.remove(sid)
        return Response(status_code=204, headers=HEADERS)


def sessions_of(request: Request) -> Sessions:
    return Sessions(access_of(request).sessions)


open_router = APIRouter(include_in_schema=False)  # login and logout authenticate themselves
router = APIRouter(include_in_schema=False, dependencies=[Depends(authed)])


@router.get(SERVICE)
def session_service(sessions: Sessions = Depends(sessions_of)) -> JSONResponse:
    return ok(sessions.service_body())


@router.get(SESSIONS)
def session_list(sessions: Sessions = Depends(sessions_of)) -> JSONResponse:
    return ok(sessions.collection_body())


@router.get(SESSIONS + "/{sid}")
def session_get(sid: str, sessions: Sessions = Depends(sessions_of)) -> JSONResponse:
    return sessions.get(sid)


@open_router.post(SESSIONS)
async def session_new(request: Request, sessions: Sessions = Depends(sessions_of)
                      ) -> JSONResponse:
    try:
        body = json.loads(await request.body())
        user, pw = body["UserName"], body["Password"]
        if not isinstance(user, str) or not isinstance(pw, str):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return error(400, "give UserName and Password", MSG + "PropertyMissing", ["UserName"])
    # audited as data, the user name only (capped), never the password
    request.state.audit_body = json.dumps({"UserName": user[:200]})
    try:
        p = access_of(request).login(request, user, pw)
    except Throttled as e:
        return throttled(e).response
    request.state.principal = p
    if p is None:
        return error(401, "the user name and password do not match",
                     MSG + "InsufficientPrivilege")
    return sessions.open(p)


@open_router.delete(SESSIONS + "/{sid}")
def session_end(sid: str, request: Request, sessions: Sessions = Depends(sessions_of)
                ) -> Response:
    """Log out: one's own session, or any with the operator role."""
    p = who(request)
    if p is None:
        return unauthorised()
    return sessions.close(sid, p)
