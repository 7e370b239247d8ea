"""The host's local HTTP API (FastAPI): the native API under /api/v1, Redfish under /redfish,
Prometheus at /metrics and the dashboard at /. OpenAPI document at /openapi.json.

The app is a thin layer over one `HostService`: the middleware here authenticates, authorises
and audits; the routers (`api/routers/`) translate requests to service calls and service
answers to typed response models.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Response

from powerflow import __version__
from powerflow.api.access import Access, Throttled
from powerflow.api.auth import Tokens
from powerflow.api.deps import PREFIX, install_service_errors
from powerflow.api.errors import COMMON_ERRORS, error_response, install_errors
from powerflow.api.limits import MAX_BODY_BYTES, BodyLimit
from powerflow.api.routers import control, inputs, nodes, rack, stream
from powerflow.api.sessions import DEFAULT_MAX_SESSIONS, DEFAULT_TIMEOUT_S, SessionStore
from powerflow.api.throttle import Lockout
from powerflow.service import HostService


DOCS_ASSETS = "/docs-assets"


def install_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) with its script served by the host itself, from the
    `fastapi-offline` package's copy: a rack network has no CDN, and the page must not fetch
    code from the internet. (No /redoc: ReDoc loads its logo from cdn.redoc.ly whatever it
    is told, which the dashboard test caught.)"""
    from importlib.resources import files

    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    app.mount(DOCS_ASSETS, StaticFiles(directory=str(files("fastapi_offline") / "static")),
              name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - API",
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png")


def create_app(svc: HostService, tokens: Tokens | None = None,
               session_timeout_s: float = DEFAULT_TIMEOUT_S,
               max_sessions: int = DEFAULT_MAX_SESSIONS,
               max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    app = FastAPI(title="PowerFlow host", version=__version__,
                  description="Rack controller API: nodes, commands, telemetry history, "
                              "forecasts, allocation and policy. Bearer tokens with a read "
                              "or operator role when the host runs with --tokens; every "
                              "write is audited. Failed authentications are throttled "
                              "(429 with Retry-After); request bodies are limited to "
                              f"{max_body_bytes} bytes (413).",
                  responses=COMMON_ERRORS, docs_url=None, redoc_url=None)
    install_docs(app)
    tokens = tokens or Tokens()
    app.state.service = svc

    def lockout(lk: Lockout) -> None:
        kind, value = lk.key
        svc.record_event("auth_lockout",
                         f"{'client' if kind == 'addr' else 'user'} {value}: {lk.failures} "
                         f"failed authentications, locked out for {lk.seconds:.0f} s")

    access = Access(tokens, SessionStore(session_timeout_s, max_sessions),
                    on_lockout=lockout)
    app.state.access = access
    install_errors(app)
    install_service_errors(app)

    @app.middleware("http")
    async def authorise(request: Request, call_next: Any) -> Response:
        path = request.url.path
        redfish = path.startswith("/redfish")
        write = request.method not in ("GET", "HEAD", "OPTIONS")
        if not (path.startswith(PREFIX) or path == "/metrics" or (redfish and write)):
            return await call_next(request)  # the dashboard's page, the OpenAPI document,
            #                                  Redfish reads (which authenticate themselves)
        # read before anything else (bounded by BodyLimit) so the handler can still read it
        raw = await request.body() if write else b""
        who = None
        if redfish:  # Redfish writes authenticate in their handlers; audited here
            resp = await call_next(request)
            who = getattr(request.state, "principal", None)
        else:
            try:
                who = access.authenticate(request)
            except Throttled as e:
                resp = error_response(429, str(e), {"Retry-After": str(e.retry_after)})
            else:
                if who is None:
                    resp = error_response(401, "a valid bearer token is needed "
                                               "(Authorization: Bearer SECRET)",
                                          {"WWW-Authenticate": "Bearer"})
                elif write and not who.may_write:
                    resp = error_response(403, f"token '{who.name}' is read-only: changes "
                                               "need an operator token")
                else:
                    request.state.principal = who
                    resp = await call_next(request)
        if write:
            # the body is stored only for an authenticated caller, as data, capped; a
            # handler may replace it (the Redfish login keeps the user name, never the
            # password)
            body = getattr(request.state, "audit_body", None)
            if body is None:
                body = raw.decode("utf-8", "replace") if who is not None else ""
            svc.record_audit(who.name if who else "-", who.role if who else "-",
                             request.method, path, body, resp.status_code)
        return resp

    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)

    from powerflow.api.redfish import install

    install(app)
    for r in (rack.router, nodes.router, control.router, inputs.router, stream.router):
        app.include_router(r, prefix=PREFIX)
    app.include_router(stream.page)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        from powerflow.api.metrics import exposition

        return Response(exposition(svc), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
