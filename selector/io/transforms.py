"""Image transforms: what the user asks for (:class:`ImageOptions`) resolved into one
deterministic :class:`ResolvedTransform`, recorded in the job's result.

A transform has two halves, kept apart on purpose:

- the *geometry* (resize the shorter side, centre-crop or resize to ``image_size``, convert
  channels) runs once per image when it is decoded; its output is uint8 and can be cached on
  disk (:mod:`selector.io.decode_cache`);
- the *normalisation* (``(x / 255 - mean) / std``) runs per batch, on the batch's device.

Presets:

- ``"none"``: decode only (pixels in [0, 1], no resizing);
- ``"imagenet"``: shorter side 256, centre crop 224, ImageNet mean/std (what torchvision's
  ImageNet weights were trained with); an explicit ``image_size`` keeps the 256/224 ratio for
  the resize unless ``resize`` is given too;
- ``"weights"``: the torchvision weights enum's own ``transforms()`` (crop, resize, mean, std).

Explicit fields override the preset's. Without a preset, ``image_size`` alone resizes to that
size (no crop); with ``resize`` it is the centre crop after resizing the shorter side.
Nothing here is random: the paper's protocol has no augmentation, and the frozen-prefix cache
and the decode cache are only exact for deterministic transforms.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from selector.errors import ConfigError, ImageShapeError
from selector.io.data_spec import ImageOptions, image_size

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PRESETS",
    "ResolvedTransform",
    "default_preset",
    "resolve_transform",
    "weights_enum",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRESETS = ("none", "imagenet", "weights")
_IMAGENET_RESIZE, _IMAGENET_CROP = 256, 224


@dataclass(frozen=True)
class ResolvedTransform:
    """A deterministic transform. ``resize``: shorter side before the crop (None: no such
    resize); ``image_size``: (H, W) of the output, a centre crop after ``resize`` or a plain
    resize without it; ``channels``: 1 or 3 (None: keep what the data has; image files
    decode to RGB); ``mean``/``std``: normalisation after scaling to [0, 1]."""

    preset: str = "none"
    resize: int | None = None
    image_size: tuple[int, int] | None = None
    channels: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    weights: str | None = None
    interpolation: str = "bilinear"

    def record(self) -> dict[str, Any]:
        """The JSON the job result shows, so users see what ran."""
        return {
            "preset": self.preset,
            "resize": self.resize,
            "image_size": list(self.image_size) if self.image_size else None,
            "channels": self.channels,
            "mean": list(self.mean) if self.mean else None,
            "std": list(self.std) if self.std else None,
            "weights": self.weights,
            "interpolation": self.interpolation,
        }

    def geometry_key(self) -> str:
        """Identifies the geometric half (what the decode cache stores)."""
        text = json.dumps([self.resize, self.image_size, self.channels, self.interpolation])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def normalises(self) -> bool:
        return self.mean is not None or self.std is not None

    def normalise(self, x: Tensor) -> Tensor:
        """uint8 or [0, 1] float images (N, C, H, W) -> normalised float32 (on x's device)."""
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        if not self.normalises:
            return x
        channels = x.shape[1]
        mean = torch.tensor(self.mean or (0.0,) * channels, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std or (1.0,) * channels, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def apply_pil(self, image: Any) -> Tensor:
        """A PIL image -> uint8 tensor (C, H, W) after the geometric half."""
        import numpy as np
        from torchvision.transforms import functional as TF

        image = image.convert("L" if self.channels == 1 else "RGB")
        if self.resize is not None:
            image = TF.resize(image, self.resize, antialias=True)
        if self.image_size is not None:
            image = (TF.center_crop(image, list(self.image_size)) if self.resize is not None
                     else TF.resize(image, list(self.image_size), antialias=True))
        array = np.asarray(image, dtype=np.uint8)
        array = array[:, :, None] if array.ndim == 2 else array
        return torch.from_numpy(array.copy()).permute(2, 0, 1)

    def apply_tensor(self, x: Tensor) -> Tensor:
        """Float images (N, C, H, W) in [0, 1] -> the geometric half applied, then normalised."""
        from torchvision.transforms.v2 import functional as TF

        if self.channels is not None and x.shape[1] != self.channels:
            if self.channels == 3 and x.shape[1] == 1:
                x = x.repeat(1, 3, 1, 1)
            elif self.channels == 1 and x.shape[1] == 3:
                x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
            else:
                raise ImageShapeError(f"cannot convert {x.shape[1]} channels to {self.channels}")
        if self.resize is not None or self.image_size is not None:
            chunks = []
            for chunk in x.split(512):
                if self.resize is not None:
                    chunk = TF.resize(chunk, [self.resize], antialias=True)
                if self.image_size is not None:
                    chunk = (TF.center_crop(chunk, list(self.image_size))
                             if self.resize is not None
                             else TF.resize(chunk, list(self.image_size), antialias=True))
                chunks.append(chunk)
            x = torch.cat(chunks)
        return self.normalise(x)


def default_preset(model_ref: Mapping[str, Any] | None) -> str:
    """torchvision models get ``"imagenet"`` (what their pretrained weights expect); every
    other model gets ``"none"``."""
    if isinstance(model_ref, Mapping) and model_ref.get("source") == "torchvision":
        return "imagenet"
    return "none"


def resolve_transform(options: ImageOptions | Mapping[str, Any] | None = None,
                      model_ref: Mapping[str, Any] | None = None) -> ResolvedTransform:
    """The transform to run: the preset (or the model's default), then explicit fields."""
    if options is None:
        options = ImageOptions()
    if isinstance(options, Mapping):
        options = options_from_mapping(options)
    preset = options.preset or default_preset(model_ref)
    if preset not in PRESETS:
        raise ConfigError(f"unknown transform preset {preset!r}; expected one of {PRESETS}")
    base = ResolvedTransform(preset=preset)
    if preset == "imagenet":
        base = ResolvedTransform("imagenet", _IMAGENET_RESIZE, (_IMAGENET_CROP, _IMAGENET_CROP),
                                 3, IMAGENET_MEAN, IMAGENET_STD)
    elif preset == "weights":
        base = _from_weights(model_ref)
    size = image_size(options.image_size) if options.image_size is not None else None
    resize = options.resize
    if size is not None and resize is None and base.resize is not None and base.image_size:
        # keep the preset's resize/crop ratio (256/224 for ImageNet) at the new size
        resize = round(min(size) * base.resize / min(base.image_size))
    resolved = ResolvedTransform(
        preset=preset,
        resize=resize if resize is not None else base.resize,
        image_size=size if size is not None else base.image_size,
        channels=options.channels if options.channels is not None else base.channels,
        mean=tuple(options.mean) if options.mean is not None else base.mean,
        std=tuple(options.std) if options.std is not None else base.std,
        weights=base.weights,
        interpolation=base.interpolation,
    )
    _check(resolved)
    return resolved


def options_from_mapping(spec: Mapping[str, Any]) -> ImageOptions:
    """The job spec's ``data.transform`` object as :class:`ImageOptions`."""
    known = {"preset", "image_size", "resize", "channels", "mean", "std"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ConfigError(f"unknown transform fields {unknown}; known: {sorted(known)}")
    size = spec.get("image_size")
    return ImageOptions(
        image_size=tuple(size) if isinstance(size, Sequence) else size,  # type: ignore[arg-type]
        channels=spec.get("channels"),
        mean=tuple(spec["mean"]) if spec.get("mean") is not None else None,
        std=tuple(spec["std"]) if spec.get("std") is not None else None,
        preset=spec.get("preset"),
        resize=spec.get("resize"),
    )


def weights_enum(arch: str, name: str) -> Any:
    """The torchvision weights enum member ``name`` (e.g. ``"IMAGENET1K_V1"``, ``"DEFAULT"``)
    of architecture ``arch``."""
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(arch)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"torchvision has no pretrained weights for {arch!r}") from exc
    try:
        return enum[name]
    except KeyError:
        known = [member.name for member in enum]
        raise ConfigError(f"{arch} has no weights {name!r}; known: {known + ['DEFAULT']}") from None


def is_weights_name(text: str | None) -> bool:
    """A weights reference that names an enum member rather than a file."""
    return bool(text) and str(text).replace("_", "").isalnum() and str(text).isupper()


def _from_weights(model_ref: Mapping[str, Any] | None) -> ResolvedTransform:
    ref = model_ref or {}
    weights = ref.get("weights")
    if ref.get("source") != "torchvision" or not is_weights_name(weights):
        raise ConfigError('transform preset "weights" needs a torchvision model whose weights '
                          'name a torchvision weights enum (e.g. "IMAGENET1K_V1")')
    member = weights_enum(str(ref["arch"]), str(weights))
    preset = member.transforms()
    crop = [int(v) for v in getattr(preset, "crop_size", [])]
    resize = [int(v) for v in getattr(preset, "resize_size", [])]
    interpolation = getattr(getattr(preset, "interpolation", None), "value", "bilinear")
    if interpolation != "bilinear":
        raise ConfigError(f"{ref['arch']} {weights}: its transforms() interpolate with "
                          f"{interpolation!r}, which this service does not reproduce; give "
                          "an explicit transform instead")
    return ResolvedTransform(
        preset="weights",
        resize=resize[0] if resize else None,
        image_size=image_size(crop[0] if len(crop) == 1 else crop) if crop else None,
        channels=3,
        mean=tuple(float(v) for v in preset.mean),
        std=tuple(float(v) for v in preset.std),
        weights=f"{type(member).__name__}.{member.name}",
    )


def _check(t: ResolvedTransform) -> None:
    if t.resize is not None and t.resize < 1:
        raise ConfigError(f"transform resize must be positive, got {t.resize}")
    if t.image_size is not None and min(t.image_size) < 1:
        raise ConfigError(f"transform image_size must be positive, got {list(t.image_size)}")
    if t.channels not in (None, 1, 3):
        raise ConfigError(f"transform channels must be 1 or 3, got {t.channels}")
    if t.mean is not None and t.std is not None and len(t.mean) != len(t.std):
        raise ConfigError(f"transform mean has {len(t.mean)} values but std {len(t.std)}")
    for name, values in (("mean", t.mean), ("std", t.std)):
        if values is not None and t.channels is not None and len(values) != t.channels:
            raise ConfigError(f"transform {name} has {len(values)} values for "
                              f"{t.channels} channels")
    if t.std is not None and any(v <= 0 for v in t.std):
        raise ConfigError(f"transform std must be positive, got {list(t.std)}")
