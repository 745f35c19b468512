"""Pydantic schemas: the job specification, the API resources and the job result.

Import from here (``from app.schemas import JobSpec``); the submodules are an implementation
detail. Workers import :class:`JobSpec` to read a claimed job and :class:`JobResult` to write one.
"""

from app.schemas.data_options import SplitSpec, TransformSpec
from app.schemas.patch import PATCH_FORMAT, PatchManifest
from app.schemas.resources import (
    ArtifactPublic,
    ArtifactRecord,
    ArtifactsPublic,
    JobError,
    JobLinks,
    JobProgress,
    JobPublic,
    JobsPublic,
    JobStateName,
    Problem,
    ProblemFieldError,
    TrialPublic,
    TrialsPublic,
)
from app.schemas.result import GroupInfo, JobResult, LeaderboardRow, Recommendation, Selection
from app.schemas.spec import (
    SHIFT_KINDS,
    UNION_TAGS,
    BuiltinData,
    BuiltinModel,
    DataSpec,
    FactoryModel,
    ImageFolderData,
    JobCreate,
    JobSpec,
    ModelSpec,
    SearchSpec,
    TensorsData,
    TorchscriptModel,
    TorchvisionModel,
    Uri,
)

__all__ = [
    "PATCH_FORMAT",
    "SHIFT_KINDS",
    "UNION_TAGS",
    "ArtifactPublic",
    "ArtifactRecord",
    "ArtifactsPublic",
    "BuiltinData",
    "BuiltinModel",
    "DataSpec",
    "FactoryModel",
    "GroupInfo",
    "ImageFolderData",
    "JobCreate",
    "JobError",
    "JobLinks",
    "JobProgress",
    "JobPublic",
    "JobResult",
    "JobSpec",
    "JobStateName",
    "JobsPublic",
    "LeaderboardRow",
    "ModelSpec",
    "PatchManifest",
    "Problem",
    "ProblemFieldError",
    "Recommendation",
    "SearchSpec",
    "Selection",
    "SplitSpec",
    "TensorsData",
    "TorchscriptModel",
    "TorchvisionModel",
    "TransformSpec",
    "TrialPublic",
    "TrialsPublic",
    "Uri",
]
