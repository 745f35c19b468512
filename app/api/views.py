"""How rows become resources: JobPublic with its links, and the ETag of a representation."""

from __future__ import annotations

import hashlib
from urllib.parse import quote

from pydantic import BaseModel

from app.models import Job
from app.schemas import ArtifactPublic, ArtifactRecord, JobLinks, JobPublic, Problem

API_PREFIX = "/v1"


def job_path(job_id: str) -> str:
    return f"{API_PREFIX}/jobs/{job_id}"


def job_public(job: Job) -> JobPublic:
    """The client's view of a job row (the worker's bookkeeping stays private)."""
    path = job_path(job.id)
    return JobPublic.model_validate(
        {
            "id": job.id,
            "state": job.state.value,
            "done": job.state.done,
            "cancel_requested": job.cancel_requested,
            "spec": job.spec,
            "progress": job.progress,
            "error": job.error,
            "created_at": job.created_at,
            "updated_at": job.updated_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "worker_id": job.worker_id,
            "attempts": job.attempts,
            "links": JobLinks(
                self=path,
                trials=f"{path}/trials",
                result=f"{path}/result",
                artifacts=f"{path}/artifacts",
                cancel=f"{path}/cancel",
            ),
        }
    )


def artifact_public(job_id: str, record: ArtifactRecord) -> ArtifactPublic:
    return ArtifactPublic(
        name=record.name,
        content_type=record.content_type,
        size=record.size,
        description=record.description,
        href=f"{job_path(job_id)}/artifacts/{quote(record.name)}",
    )


def etag(resource: BaseModel) -> str:
    """A strong ETag: the hash of the JSON representation (heartbeats do not change it)."""
    return '"' + hashlib.sha256(resource.model_dump_json().encode()).hexdigest()[:32] + '"'


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
