"""The native API's error answers: one shape per kind, documented in the OpenAPI.

- 422 (a request the API cannot take: wrong field, out of range, unknown field) is always
  `{"detail": [{"type", "loc", "msg"}, ...]}`, whether the schema or a handler refused it.
- Every other 4xx is `{"detail": "what is wrong and what to do"}`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException


class ErrorMessage(BaseModel):
    detail: str = Field(description="what is wrong, and what to do about it")


class ValidationIssue(BaseModel):
    type: str = Field(description="the kind of problem, e.g. missing, extra_forbidden, "
                                  "less_than_equal, value_error")
    loc: list[str | int] = Field(description="where: body, query or path, then the field")
    msg: str


class ValidationErrors(BaseModel):
    detail: list[ValidationIssue]


def _doc(description: str, model: type[BaseModel] = ErrorMessage) -> dict[str, Any]:
    return {"model": model, "description": description}


RESPONSES: dict[int, dict[str, Any]] = {
    401: _doc("no valid credentials (tokens are configured)"),
    403: _doc("the token is read-only: changes need the operator role"),
    404: _doc("no such node, metric, device or allocation"),
    409: _doc("refused in the present state (the control loop owns the setpoints, the node "
              "is not online, the host runs without that part, an interlock)"),
    413: _doc("the request body is over the limit"),
    422: _doc("the request is malformed or a value is out of range", ValidationErrors),
    429: _doc("too many failed authentications: wait Retry-After seconds"),
    504: _doc("the node did not acknowledge the command"),
}
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {k: RESPONSES[k] for k in (401, 403, 413, 422, 429)}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route that can answer these codes as well as the common ones."""
    return {k: RESPONSES[k] for k in codes}


def error_response(status: int, message: str, headers: dict[str, str] | None = None
                   ) -> JSONResponse:
    return JSONResponse({"detail": message}, status, headers=headers)


def _issues(errs: list[Any]) -> list[dict[str, Any]]:
    return [{"type": str(e.get("type", "value_error")), "loc": list(e.get("loc", ["body"])),
             "msg": str(e.get("msg", ""))} for e in errs]


def install_errors(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # the input itself is not echoed back: it may be large, or a secret
        return JSONResponse({"detail": _issues(list(exc.errors()))}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = getattr(exc, "headers", None)
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            # a body that is not JSON at all is malformed like any other: 422, one shape
            return JSONResponse({"detail": [{"type": "json_invalid", "loc": ["body"],
                                             "msg": "the body is not valid JSON"}]}, 422)
        if exc.status_code == 422:
            detail = exc.detail
            issues = (_issues(detail) if isinstance(detail, list) else
                      [{"type": "value_error", "loc": ["body"], "msg": str(detail)}])
            return JSONResponse({"detail": issues}, 422, headers=headers)
        return JSONResponse({"detail": str(exc.detail)}, exc.status_code, headers=headers)
