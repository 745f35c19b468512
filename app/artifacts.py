"""The Optuna artifact store that workers upload to and the API streams from.

Both sides build it from the same settings with :func:`make_artifact_store`, so the ids the
workers record in ``jobs.artifacts`` open in the API (and in optuna-dashboard started with the
same store).
"""

from __future__ import annotations

import logging
from typing import BinaryIO, Protocol

from app.settings import Settings

log = logging.getLogger(__name__)


class ArtifactStore(Protocol):
    """What the service uses of an Optuna artifact store (Optuna types its stores by this
    protocol, kept in a private module, so it is restated here)."""

    def open_reader(self, artifact_id: str) -> BinaryIO: ...

    def write(self, artifact_id: str, content_body: BinaryIO) -> None: ...

    def remove(self, artifact_id: str) -> None: ...


def make_artifact_store(settings: Settings) -> ArtifactStore:
    """A Boto3ArtifactStore when ``artifact_s3_bucket`` is set, else a FileSystemArtifactStore."""
    if settings.artifact_s3_bucket:
        try:
            import boto3  # noqa: F401  (optional dependency)
        except ImportError as exc:
            raise RuntimeError("artifact_s3_bucket is set but boto3 is not installed") from exc
        from optuna.artifacts import Boto3ArtifactStore

        return Boto3ArtifactStore(settings.artifact_s3_bucket)
    from optuna.artifacts import FileSystemArtifactStore

    assert settings.artifact_dir is not None  # filled in by Settings
    settings.artifact_dir.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(settings.artifact_dir)


def remove_artifacts(store: ArtifactStore, artifact_ids: list[str]) -> list[str]:
    """Remove artifacts, skipping ones already gone; the ids that could not be removed."""
    from optuna.artifacts.exceptions import ArtifactNotFound

    failed = []
    for artifact_id in artifact_ids:
        try:
            store.remove(artifact_id)
        except (ArtifactNotFound, FileNotFoundError):
            continue
        except Exception:
            log.exception("could not remove artifact %s", artifact_id)
            failed.append(artifact_id)
    return failed
