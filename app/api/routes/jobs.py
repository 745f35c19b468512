"""``/v1/jobs``: submit, read, list, cancel and delete jobs."""

from __future__ import annotations

import logging
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Header, Query, Request, Response
from pydantic_core import to_json

from app import store
from app.api.deps import (
    ArtifactStoreDep,
    AuthenticatedRoute,
    BearerDep,
    OwnerDep,
    SessionDep,
    SettingsDep,
    StudiesDep,
    owner_of,
)
from app.api.views import (
    etag,
    etag_matches,
    job_document,
    job_json,
    job_path,
    json_response,
    problems,
)
from app.artifacts import remove_artifacts
from app.db import session_scope
from app.schemas import JobPublic, JobSpec, JobsPublic, JobStateName
from app.validation import check_spec

log = logging.getLogger(__name__)
router = APIRouter(prefix="/jobs", tags=["jobs"], route_class=AuthenticatedRoute)


@router.post(
    "",
    status_code=202,
    response_model=JobPublic,
    responses=problems(400, 401, 409, 413, 422),
    response_description="The queued job; poll the Location header.",
)
def create_job(
    spec: JobSpec,
    session: SessionDep,
    owner: OwnerDep,
    settings: SettingsDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            description="Retrying with the same key and body returns the original job.",
        ),
    ] = None,
) -> Response:
    """Submit a fine-tuning search; it is queued and runs asynchronously."""
    job = store.create_job(session, owner, check_spec(spec, settings), idempotency_key)
    headers = {"Location": job_path(job.id), "Retry-After": str(settings.retry_after_seconds)}
    return json_response(job_json(job), 202, headers)


@router.get("", response_model=JobsPublic, responses=problems(401, 422))
def read_jobs(
    session: SessionDep,
    owner: OwnerDep,
    state: Annotated[JobStateName | None, Query(description="Only jobs in this state.")] = None,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
    page_token: Annotated[
        str | None, Query(max_length=1000, description="next_page_token of a page.")
    ] = None,
) -> Response:
    """List your jobs, newest first, a page at a time."""
    jobs, next_token = store.list_jobs(session, owner, state, page_size, page_token)
    page = {"data": [job_document(job) for job in jobs], "next_page_token": next_token}
    return json_response(to_json(page))


@router.get(
    "/{job_id}",
    response_model=JobPublic,
    responses={304: {"description": "Not modified (If-None-Match matched the ETag)."},
               **problems(401, 404)},
)  # fmt: skip
async def read_job(
    job_id: str,
    request: Request,
    settings: SettingsDep,
    _credentials: BearerDep,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
) -> Response:
    """Get a job's state and progress (send If-None-Match to poll cheaply)."""
    # The poll endpoint: clients call it every few seconds. The key check, the read and the
    # encoding happen in one worker-thread hop and one transaction (each sync dependency
    # would cost a hop of its own), on a few threads of their own: each read is a millisecond
    # or two of Python, and 20 threads fighting over the GIL made the tail ten times longer.
    content, done = await to_thread.run_sync(
        _read_own_job, request, job_id, limiter=request.app.state.poll_limiter
    )
    tag = etag(content)
    headers = {"ETag": tag, "Cache-Control": "private, no-cache"}
    if not done:
        headers["Retry-After"] = str(settings.retry_after_seconds)
    if etag_matches(if_none_match, tag):
        return Response(status_code=304, headers=headers)
    return json_response(content, headers=headers)


def _read_own_job(request: Request, job_id: str) -> tuple[bytes, bool]:
    with session_scope(request.app.state.session_factory) as session:
        job = store.read_job(session, job_id, owner_of(request, session))
        return job_json(job), job.state.done


@router.post("/{job_id}/cancel", response_model=JobPublic, responses=problems(401, 404))
def cancel_job(job_id: str, session: SessionDep, owner: OwnerDep) -> Response:
    """Cancel a job: queued jobs stop at once, running ones soon; finished ones are unchanged."""
    return json_response(job_json(store.request_cancel(session, job_id, owner)))


@router.delete("/{job_id}", status_code=204, responses=problems(401, 404, 409))
def delete_job(
    job_id: str,
    request: Request,
    owner: OwnerDep,
    studies: StudiesDep,
    artifact_store: ArtifactStoreDep,
) -> Response:
    """Delete a finished job with its trials and artifacts."""
    # Our own transaction, committed before the clean-up: on SQLite the Optuna study lives in
    # the same file, and deleting it while we still held the write lock would deadlock.
    with session_scope(request.app.state.session_factory) as session:
        deleted = store.delete_job(session, job_id, owner)
    # Best effort from here: the job is gone either way, and leftovers are only garbage.
    try:
        studies.delete(deleted.study_name)
    except Exception:
        log.exception("deleted job %s but not its study %s", job_id, deleted.study_name)
    remove_artifacts(artifact_store, deleted.artifact_ids)
    return Response(status_code=204)
