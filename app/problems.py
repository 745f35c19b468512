"""The one place where errors become HTTP responses: RFC 9457 problem details.

Domain errors (:mod:`app.errors`), request validation errors, Starlette's HTTP errors (unknown
route 404, 405, 413, ...), database outages and anything unexpected all leave as
``application/problem+json``. Unexpected errors are logged with their traceback and answered
with a generic 500 that never includes it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from app.errors import AppError, Invalid, NotFinished, Unauthorized, Unavailable
from app.schemas import UNION_TAGS, Problem, ProblemFieldError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_BASE = "urn:surgical:problem:"
_LOCATION_ROOTS = {"body", "query", "path", "header", "cookie"}


def problem_response(
    status: int,
    detail: str | None,
    request: Request,
    *,
    slug: str | None = None,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    """A problem-details response; ``slug`` names the problem type (else about:blank)."""
    problem = Problem(
        type=f"{PROBLEM_TYPE_BASE}{slug}" if slug else "about:blank",
        title=title or HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=request.url.path,
        **extensions,
    )
    return JSONResponse(
        problem.model_dump(mode="json", exclude_none=True),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def field_path(loc: Sequence[str | int]) -> str:
    """``("body", "data", "builtin", "shift")`` -> ``"data.shift"`` (union tags dropped)."""
    parts = list(loc)
    if parts and parts[0] in _LOCATION_ROOTS:
        root, parts = parts[0], parts[1:]
        if root == "body" and parts and isinstance(parts[0], int):
            parts = []  # a JSON syntax error reports a character offset
    if len(parts) >= 2 and parts[1] in UNION_TAGS.get(str(parts[0]), ()):
        del parts[1]
    return ".".join(str(part) for part in parts) or "body"


def _message(text: str) -> str:
    return text.removeprefix("Value error, ")


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    extensions: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if isinstance(exc, Invalid):
        extensions["errors"] = [
            ProblemFieldError(field=e.field, message=e.message) for e in exc.errors
        ]
    if isinstance(exc, NotFinished):
        extensions["state"] = exc.state
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="surgical"'
    if isinstance(exc, Unavailable):
        headers["Retry-After"] = str(request.app.state.settings.retry_after_seconds)
    return problem_response(
        exc.status, exc.detail, request, slug=exc.slug, title=exc.title, headers=headers,
        **extensions,
    )  # fmt: skip


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        ProblemFieldError(
            # A model-level rule names the field it is about in its context.
            field=(err.get("ctx") or {}).get("field") or field_path(err.get("loc", ())),
            message=_message(str(err.get("msg", "invalid"))),
            loc=[p if isinstance(p, int) else str(p) for p in err.get("loc", ())],
            type=err.get("type"),
        )
        for err in exc.errors()
    ]
    detail = f"{errors[0].field}: {errors[0].message}" if errors else "invalid request"
    return problem_response(
        422, detail, request, slug="invalid-request", title="Invalid Request", errors=errors
    )


#: FastAPI answers 400 with this detail when the body is not JSON it can decode: invalid UTF-8,
#: an integer with more digits than Python converts, or nesting deeper than its recursion limit.
_UNPARSABLE_BODY = "There was an error parsing the body"


def allowed_methods(request: Request) -> list[str]:
    """Every method the API documents on this path (Starlette's 405 names only the first
    matching route's, but ``/v1/jobs/{id}`` is served by a GET route and a DELETE route)."""
    app = request.app
    table = getattr(app.state, "allowed_methods", None)
    if table is None:
        table = [
            (compile_path(path)[0], {method.upper() for method in operations})
            for path, operations in app.openapi().get("paths", {}).items()
        ]
        app.state.allowed_methods = table
    methods: set[str] = set()
    for pattern, path_methods in table:
        if pattern.match(request.url.path):
            methods |= path_methods
    return sorted(methods)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = str(exc.detail)
    headers = dict(exc.headers or {})
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route for {request.method} {request.url.path}"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
        headers["Allow"] = ", ".join(allowed_methods(request))
    elif exc.status_code == 400 and detail == _UNPARSABLE_BODY:
        detail = (
            "the body could not be parsed: it must be UTF-8 JSON with integers of at most "
            "4300 digits and nesting of reasonable depth"
        )
        return problem_response(400, detail, request, slug="unparsable-body", headers=headers)
    return problem_response(exc.status_code, detail, request, headers=headers)


async def _database_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database error on %s %s: %s", request.method, request.url.path, exc)
    retry = str(request.app.state.settings.retry_after_seconds)
    return problem_response(
        503, "the database is unavailable or busy; retry later", request,
        slug="unavailable", headers={"Retry-After": retry},
    )  # fmt: skip


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(
        500, "an unexpected error occurred; it has been logged", request, slug="internal"
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Route every error class to its problem-details handler."""
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_down)
    app.add_exception_handler(Exception, _unexpected)
