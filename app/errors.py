"""The service's domain errors, in one tree.

The data layer and the validation raise these; exactly one place turns them into HTTP problem
details (:mod:`app.problems`) and one into CLI messages (:mod:`app.cli`)::

    AppError                    500  anything we raise on purpose
    ├── NotFound                404  no such job (or it belongs to another owner)
    ├── Conflict                409  the job's state forbids the operation
    │   └── NotFinished         409  asked for the result of a job that has none (carries state)
    ├── Invalid                 422  the request is well-formed JSON but wrong (carries field errors)
    │   └── InvalidSpec         422  the job specification breaks a rule or a server limit
    ├── Unauthorized            401  missing, unknown or revoked API key
    └── Unavailable             503  a dependency (database, schema, storage) is not ready
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One offending field: a dotted path into the request (``search.max_trials``) and why."""

    field: str
    message: str


class AppError(Exception):
    """Base of every error the service raises on purpose; ``status`` is its HTTP status."""

    status: int = 500
    slug: str = "internal"
    title: str = "Internal Server Error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(AppError):
    status, slug, title = 404, "not-found", "Not Found"


class Conflict(AppError):
    status, slug, title = 409, "conflict", "Conflict"


class NotFinished(Conflict):
    """The job has no result (yet): the problem carries the job's state so clients can wait."""

    slug, title = "not-finished", "Job Not Finished"

    def __init__(self, detail: str, state: str) -> None:
        super().__init__(detail)
        self.state = state


class Invalid(AppError):
    """Semantically invalid input; ``errors`` lists every offending field, the first in detail."""

    status, slug, title = 422, "invalid", "Unprocessable Content"

    def __init__(self, errors: list[FieldError]) -> None:
        if not errors:
            raise ValueError("Invalid needs at least one FieldError")
        first = errors[0]
        super().__init__(f"{first.field}: {first.message}")
        self.errors = errors


class InvalidSpec(Invalid):
    slug, title = "invalid-spec", "Invalid Job Specification"


class Unauthorized(AppError):
    status, slug, title = 401, "unauthorized", "Unauthorized"


class Unavailable(AppError):
    status, slug, title = 503, "unavailable", "Service Unavailable"
