"""The patch manifest: what a ``patch.safetensors`` holds and how it was chosen.

One manifest, written once by the workers (``workers/artifacts.py``) into the safetensors
metadata of the patch and of the full weights, and as ``patch-manifest.json`` next to them.
It lives here, torch-free, because the client reads it too (``app.client.apply_patch`` refuses
a file of another format); ``tests/test_contracts.py`` pins the format string.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.schemas.spec import DataSpec, ModelSpec

#: Written into the safetensors metadata under ``format``; bump when the layout changes.
PATCH_FORMAT = "surgical-patch/1"
APPLY_HINT = "app.client.apply_patch(model, 'patch.safetensors')"


class PatchManifest(BaseModel):
    """The best trial's fine-tuned tensors, described: which job, trial, part and recipe."""

    model_config = ConfigDict(extra="forbid")

    format: str = PATCH_FORMAT
    job_id: str
    trial_number: int = Field(ge=0)
    label: str
    method: str
    groups: list[str]
    lr: float
    val_acc: float
    test_acc: float | None
    best_epoch: int = Field(ge=0)
    tensors: list[str] = Field(description="names of the tensors the patch replaces")
    base_model: ModelSpec
    data: DataSpec
    apply: str = APPLY_HINT

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value != PATCH_FORMAT:
            raise ValueError(f"unknown patch format {value!r}; this version reads {PATCH_FORMAT!r}")
        return value
