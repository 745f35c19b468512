"""``/v1/jobs/{id}/trials|result|artifacts``: what a job produced, read-only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO
from urllib.parse import quote

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from app import store
from app.api.deps import ArtifactStoreDep, AuthenticatedRoute, OwnerDep, SessionDep, StudiesDep
from app.api.views import artifact_public, problems
from app.errors import NotFinished, NotFound
from app.models import JobState
from app.schemas import ArtifactRecord, ArtifactsPublic, JobResult, TrialsPublic

router = APIRouter(prefix="/jobs", tags=["results"], route_class=AuthenticatedRoute)
CHUNK = 64 * 1024


@router.get("/{job_id}/trials", response_model=TrialsPublic, responses=problems(401, 404))
def read_trials(
    job_id: str, session: SessionDep, owner: OwnerDep, studies: StudiesDep
) -> TrialsPublic:
    """List a job's trials (empty until its Optuna study exists)."""
    job = store.get_job(session, job_id, owner)
    return TrialsPublic(data=studies.trials(job.study_name))


@router.get("/{job_id}/result", response_model=JobResult, responses=problems(401, 404, 409))
def read_result(job_id: str, session: SessionDep, owner: OwnerDep) -> JobResult:
    """Get a succeeded job's recommendation and leaderboard (409 with the state otherwise)."""
    job = store.get_job(session, job_id, owner)
    if job.state != JobState.succeeded or job.result is None:
        raise NotFinished(f"job {job_id} is {job.state.value} and has no result", job.state.value)
    return JobResult.model_validate(job.result)


def _records(job_artifacts: list[dict[str, object]]) -> list[ArtifactRecord]:
    return [ArtifactRecord.model_validate(a) for a in job_artifacts]


@router.get("/{job_id}/artifacts", response_model=ArtifactsPublic, responses=problems(401, 404))
def read_artifacts(job_id: str, session: SessionDep, owner: OwnerDep) -> ArtifactsPublic:
    """List a job's artifacts."""
    job = store.get_job(session, job_id, owner)
    return ArtifactsPublic(data=[artifact_public(job.id, r) for r in _records(job.artifacts)])


def _chunks(reader: BinaryIO) -> Iterator[bytes]:
    try:
        while chunk := reader.read(CHUNK):
            yield chunk
    finally:
        reader.close()


def content_disposition(name: str) -> str:
    """RFC 6266 attachment header with an ASCII fallback and the UTF-8 name."""
    fallback = name.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name)}"


@router.get(
    "/{job_id}/artifacts/{name}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, **problems(401, 404)},
)
def download_artifact(
    job_id: str, name: str, session: SessionDep, owner: OwnerDep, artifact_store: ArtifactStoreDep
) -> StreamingResponse:
    """Download one artifact of a job."""
    from optuna.artifacts.exceptions import ArtifactNotFound

    job = store.get_job(session, job_id, owner)
    record = next((r for r in _records(job.artifacts) if r.name == name), None)
    if record is None:
        raise NotFound(f"job {job_id} has no artifact named {name!r}")
    try:
        reader = artifact_store.open_reader(record.artifact_id)
    except ArtifactNotFound:
        raise NotFound(f"artifact {name!r} is missing from the artifact store") from None
    headers = {"Content-Disposition": content_disposition(name)}
    if record.size is not None:
        headers["Content-Length"] = str(record.size)
    return StreamingResponse(_chunks(reader), media_type=record.content_type, headers=headers)
