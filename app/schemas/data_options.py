"""The parts of a ``data`` object that describe a user's own data: the image transform and the
split rule (``data.transform``, ``data.split``).

The same rules are enforced again by ``selector.io.transforms`` / ``selector.io.data_spec`` when a
worker resolves them (the library is also used without the API); ``tests/app/test_own_data_spec``
pins that both sides accept and refuse the same values. Validators are written by hand where a
pydantic union would report its errors under opaque member names instead of the field's.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

PRESETS = ("none", "imagenet", "weights")
MAX_IMAGE_SIDE = 4096


class TransformSpec(BaseModel):
    """How images are resized and normalised before the model sees them.

    ``preset``: ``"none"`` (pixels in [0, 1]), ``"imagenet"`` (shorter side 256, centre crop
    224, ImageNet mean/std) or ``"weights"`` (the torchvision weights enum's ``transforms()``).
    Explicit fields override the preset. Without a preset, torchvision models get
    ``"imagenet"`` and other models ``"none"``. The resolved transform is in the job result.
    """

    model_config = ConfigDict(
        extra="forbid", strict=True, allow_inf_nan=False,
        json_schema_extra={"examples": [{"preset": "imagenet"},
                                        {"image_size": [64, 64], "channels": 3,
                                         "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}]},
    )

    preset: Literal["none", "imagenet", "weights"] | None = Field(
        default=None, description='"none", "imagenet" or "weights"; null: the model\'s default')
    image_size: int | list[int] | None = Field(
        default=None, description="output size: a square side or [h, w]; a plain resize, or "
        "the centre crop after `resize`", examples=[224, [224, 224]])
    resize: int | None = Field(default=None, ge=1, le=MAX_IMAGE_SIDE,
                               description="shorter side before the centre crop")
    channels: Literal[1, 3] | None = None
    mean: list[float] | None = Field(default=None, min_length=1, max_length=3)
    std: list[float] | None = Field(default=None, min_length=1, max_length=3)

    @field_validator("image_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        if value is None:
            return None
        sides = value if isinstance(value, list) else [value]
        if (isinstance(value, list) and len(value) != 2) or not all(
                isinstance(s, int) and not isinstance(s, bool) for s in sides):
            raise ValueError("must be a positive integer or a list [h, w] of two")
        if not all(1 <= s <= MAX_IMAGE_SIDE for s in sides):
            raise ValueError(f"sizes must be between 1 and {MAX_IMAGE_SIDE}")
        return value

    @field_validator("mean")
    @classmethod
    def _mean_fits_channels(cls, value: list[float] | None, info: ValidationInfo
                            ) -> list[float] | None:
        channels = info.data.get("channels")
        if value is not None and channels is not None and len(value) != channels:
            raise ValueError(f"has {len(value)} values but channels is {channels}")
        return value

    @field_validator("std")
    @classmethod
    def _std_fits(cls, value: list[float] | None, info: ValidationInfo) -> list[float] | None:
        if value is None:
            return None
        if any(v <= 0 for v in value):
            raise ValueError("values must be positive")
        mean, channels = info.data.get("mean"), info.data.get("channels")
        if mean is not None and len(mean) != len(value):
            raise ValueError(f"has {len(value)} values but mean has {len(mean)}")
        if channels is not None and len(value) != channels:
            raise ValueError(f"has {len(value)} values but channels is {channels}")
        return value


class SplitSpec(BaseModel):
    """How one pool (a ``root`` folder or a tensors file) is cut per class, seeded by the job's
    seed: ints are per-class counts, floats below 1 per-class fractions (rounded up);
    without ``train`` the rest trains. Counts larger than a class holds fail the job before
    any trial, naming the class."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, json_schema_extra={
        "examples": [{"train": 25, "val": 10, "test": 50}, {"val": 0.1, "test": 0.2}]})

    train: int | float | None = Field(default=None, examples=[25])
    val: int | float = Field(examples=[10])
    test: int | float | None = Field(default=None, examples=[50])

    @field_validator("train", "val", "test", mode="before")
    @classmethod
    def _amount(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("must be a per-class count (integer) or a fraction below 1")
        if isinstance(value, float) and not value.is_integer():
            if not 0 < value < 1:
                raise ValueError("a fraction must be between 0 and 1 (exclusive)")
            return value
        if isinstance(value, float) and value < 1:
            raise ValueError("a fraction must be between 0 and 1 (exclusive)")
        least = 0 if info.field_name == "test" else 1
        if int(value) < least:
            raise ValueError(f"a per-class count must be >= {least}")
        return int(value)
