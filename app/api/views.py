"""How rows become resources: a job's JSON document with its links, and the ETag of it.

A job is served as it was stored: the spec was validated and normalised once, at submit, and
progress, error and result when a worker wrote them. Reading a job never re-validates them
(re-validating a stored spec recompiled every regex of every group on each poll, and would
turn a later tightening of the rules into 500s on old jobs); the document is built from the row
and encoded once, and its ETag is the hash of those exact bytes. :class:`app.schemas.JobPublic`
still describes the document in OpenAPI and is what clients validate against.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import quote

from fastapi import Response
from pydantic_core import to_json
from sqlalchemy import Row

from app.models import Job
from app.schemas import ArtifactPublic, ArtifactRecord, JobProgress, Problem

API_PREFIX = "/v1"
JSON = "application/json"


def job_path(job_id: str) -> str:
    return f"{API_PREFIX}/jobs/{job_id}"


def job_document(job: Job | Row[Any]) -> dict[str, Any]:
    """The client's view of a job row (the worker's bookkeeping stays private); an ORM job or
    a plain row of the jobs table (:func:`app.store.read_job`) read alike."""
    path = job_path(job.id)
    return {
        "id": job.id,
        "state": job.state.value,
        "done": job.state.done,
        "cancel_requested": job.cancel_requested,
        "spec": job.spec,
        "progress": _progress(job),
        "error": job.error,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "worker_id": job.worker_id,
        "attempts": job.attempts,
        "links": {
            "self": path,
            "trials": f"{path}/trials",
            "result": f"{path}/result",
            "artifacts": f"{path}/artifacts",
            "cancel": f"{path}/cancel",
        },
    }


def job_json(job: Job | Row[Any]) -> bytes:
    """The job document encoded once (pydantic's encoder: the same datetimes as the models)."""
    return to_json(job_document(job))


def json_response(
    content: bytes, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(content, status_code=status_code, media_type=JSON, headers=headers)


def artifact_public(job_id: str, record: ArtifactRecord) -> ArtifactPublic:
    return ArtifactPublic(
        name=record.name,
        content_type=record.content_type,
        size=record.size,
        description=record.description,
        href=f"{job_path(job_id)}/artifacts/{quote(record.name)}",
    )


def etag(content: bytes) -> str:
    """A strong ETag: the hash of the representation's bytes (heartbeats do not change it)."""
    return '"' + hashlib.sha256(content).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str | None, current: str) -> bool:
    """RFC 9110 If-None-Match: weak comparison against a list of tags, or ``*``."""
    if not if_none_match:
        return False
    candidates = [tag.strip() for tag in if_none_match.split(",")]
    return "*" in candidates or current in {tag.removeprefix("W/") for tag in candidates}


def problems(*codes: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI entries declaring problem-details responses for these status codes."""
    schema = {"schema": {"$ref": "#/components/schemas/Problem"}}
    return {
        code: {"model": Problem, "content": {"application/problem+json": schema}} for code in codes
    }


def _progress(job: Job | Row[Any]) -> dict[str, Any]:
    """The stored progress as this API version knows it: fields written by newer workers
    (during a rolling upgrade, before the API is upgraded) are left out rather than failing
    the response, and a finished job's phase is null (it is doing nothing)."""
    known = {k: v for k, v in (job.progress or {}).items() if k in JobProgress.model_fields}
    return {**known, "phase": None} if job.state.done else known
