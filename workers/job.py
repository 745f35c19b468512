"""A claimed job as the workers see it: its id and its typed specification.

The job row stores the spec as the JSON of a validated :class:`app.schemas.JobSpec`; it is
parsed back once, when a worker takes the row (as owner or helper), and travels typed from
there, so no worker function re-reads defaults from a dict.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.models import Job
from app.schemas import JobSpec


@dataclass(frozen=True)
class ClaimedJob:
    id: str
    spec: JobSpec

    @classmethod
    def from_row(cls, row: Job) -> ClaimedJob:
        """Raises ``pydantic.ValidationError`` when the stored spec no longer validates."""
        return cls(row.id, JobSpec.model_validate(row.spec))
