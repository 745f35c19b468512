"""``/healthz`` (the process answers) and ``/readyz`` (the database is usable)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy.exc import SQLAlchemyError

from app.api.views import problems
from app.errors import Unavailable
from app.migrate import current_revision, head_revision

router = APIRouter(tags=["health"])


@router.get("/healthz")
def read_health() -> dict[str, str]:
    """Liveness: the process is up (touches nothing else)."""
    return {"status": "ok"}


@router.get("/readyz", responses=problems(503))
def read_readiness(request: Request) -> dict[str, str]:
    """Readiness: the database answers and our schema is at the code's head revision."""
    try:
        with request.app.state.engine.connect() as connection:
            revision = current_revision(connection)
    except SQLAlchemyError as exc:
        raise Unavailable(f"database unreachable ({type(exc).__name__})") from None
    head = head_revision()
    if revision != head:
        raise Unavailable(
            f"database schema is at {revision or 'nothing'}, code expects {head}: "
            "run `surgical db upgrade`"
        )
    return {"status": "ready", "revision": head or ""}
