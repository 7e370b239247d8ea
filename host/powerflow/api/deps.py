"""Dependencies of the native API's routers: the host service, and its refusals as HTTP."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from powerflow.api.errors import error_response
from powerflow.service import Conflict, HostService, Invalid, NodeTimeout, NotFound, ServiceError

PREFIX = "/api/v1"
STATUS = {NotFound: 404, Conflict: 409, Invalid: 422, NodeTimeout: 504}


def service(request: Request) -> HostService:
    """The host service the app was made with (`Depends(service)`)."""
    svc: HostService = request.app.state.service
    return svc


def install_service_errors(app: FastAPI) -> None:
    """A `ServiceError` from any handler answers in the API's one error style."""

    @app.exception_handler(ServiceError)
    async def refused(request: Request, exc: ServiceError) -> JSONResponse:
        status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 409)
        if status == 422:  # validation issues keep their one shape (see errors.py)
            return JSONResponse({"detail": [{"type": "value_error", "loc": ["body"],
                                             "msg": str(exc)}]}, 422)
        return error_response(status, str(exc))
