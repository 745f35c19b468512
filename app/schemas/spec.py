"""The job specification (``POST /v1/jobs`` body), exactly the JSON of docs/ARCHITECTURE.md.

Only rules that need no configuration live here; the server limits, the data roots and the
factory allowlist are checked by :func:`app.validation.check_spec`, which the route calls with
the settings. ``model`` and ``data`` are discriminated unions on ``source``.
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from app.schemas.data_options import SplitSpec, TransformSpec
from app.schemas.json_values import first_unsafe
from app.schemas.patterns import check_group_pattern
from app.schemas.torchvision_archs import TORCHVISION_ARCHS
from app.uris import check_uri_syntax

#: Custom layer groups: how many, and how long a name or a suffix list may be. A model has at
#: most a few hundred modules worth naming; these bounds keep a spec a few KiB at most.
MAX_GROUPS = 64
MAX_GROUP_NAME_LENGTH = 100
MAX_SUFFIXES = 256
MAX_SUFFIX_LENGTH = 200

# Every shift name a builtin dataset accepts, with its kind (the paper's three families).
SHIFT_KINDS: dict[str, str] = {
    **{
        name: "input"
        for name in (
            "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear", "scale",
            "rotate", "brightness", "translate", "stripe", "fog", "spatter", "dotted_line",
            "zigzag", "canny_edges", "gaussian_noise", "contrast", "inverse",
        )
    },
    "none": "none",
    "clean": "none",
    "subpopulation": "feature",
    "label_flip": "output",
    "spurious": "output",
}  # fmt: skip

BuiltinModelName = Literal["mnist-resnet", "mnist-resnet-subpop", "mnist-resnet-spurious"]

#: The source model each built-in shift is defined against (every other shift: mnist-resnet).
#: The subpopulation model predicts 5 superclasses and the spurious one a binary label, so
#: another model cannot be evaluated on those targets.
SHIFT_MODELS: dict[str, BuiltinModelName] = {
    "subpopulation": "mnist-resnet-subpop",
    "spurious": "mnist-resnet-spurious",
}
DEFAULT_BUILTIN_MODEL: BuiltinModelName = "mnist-resnet"

#: Epochs per trial of the paper's protocol (Lee et al. 2023, Appendix: every CIFAR-10-C and
#: ImageNet-C run fine-tunes for 15 epochs). The ``paper`` strategy uses it when the request
#: gives no ``epochs``; every other strategy defaults to :data:`DEFAULT_EPOCHS`.
PAPER_EPOCHS = 15
#: The longest time budget a job may ask for (a week, in minutes).
MAX_MINUTES = 7 * 24 * 60
DEFAULT_EPOCHS = 10

Uri = Annotated[
    str,
    AfterValidator(check_uri_syntax),
    Field(
        min_length=1,
        max_length=4096,
        description="file:///abs/path, an absolute path, or an fsspec URI (s3://...) "
        "when the operator enables its scheme",
    ),
]
WEIGHTS_ENUM = re.compile(r"^[A-Z][A-Z0-9_]*$")


def _weights_ref(value: str) -> str:
    """A torchvision weights enum name (``IMAGENET1K_V1``, ``DEFAULT``) or a file URI."""
    return value if WEIGHTS_ENUM.match(value) else check_uri_syntax(value)


WeightsRef = Annotated[
    str,
    AfterValidator(_weights_ref),
    Field(description="a weights file URI, or a torchvision weights enum name such as "
          "IMAGENET1K_V1 (read from the workers' hub cache, TORCH_HOME)",
          examples=["file:///data/resnet18.pt", "IMAGENET1K_V1"]),
]
_TARGET = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")


class _Strict(BaseModel):
    """Unknown fields refused; no coercion (``true`` is not 1); no NaN or Infinity."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class BuiltinModel(_Strict):
    """A pretrained model that ships with the service (built and cached on first use).

    Without ``name`` a built-in case uses the source model its shift is defined against
    (:data:`SHIFT_MODELS`); with other data it means ``mnist-resnet``.
    """

    source: Literal["builtin"] = "builtin"
    name: BuiltinModelName | None = None


class TorchvisionModel(_Strict):
    """A torchvision architecture, optionally with a weights file, and its class count."""

    source: Literal["torchvision"]
    arch: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64, examples=["resnet18"])
    weights: WeightsRef | None = None
    num_classes: int = Field(ge=1, le=100_000)

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, value: str) -> str:
        if value not in TORCHVISION_ARCHS:
            close = difflib.get_close_matches(value, sorted(TORCHVISION_ARCHS), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown torchvision architecture {value!r}{hint}")
        return value


class TorchscriptModel(_Strict):
    """A TorchScript archive."""

    source: Literal["torchscript"]
    path: Uri


class FactoryModel(_Strict):
    """``pkg.module:function`` called with ``kwargs``; only for operator-allowlisted modules."""

    source: Literal["factory"]
    target: str = Field(max_length=200, examples=["mypkg.models:build"])
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("target")
    @classmethod
    def _target_syntax(cls, value: str) -> str:
        if not _TARGET.match(value):
            raise ValueError("must look like 'package.module:function'")
        return value

    @property
    def module(self) -> str:
        return self.target.split(":", 1)[0]


ModelSpec = Annotated[
    BuiltinModel | TorchvisionModel | TorchscriptModel | FactoryModel,
    Field(discriminator="source"),
]


class BuiltinData(_Strict):
    """A builtin benchmark: MNIST under one of :data:`SHIFT_KINDS` (sizes are per class)."""

    source: Literal["builtin"] = "builtin"
    name: Literal["mnist"] = "mnist"
    shift: str = "impulse_noise"
    severity: int | None = Field(
        default=None, ge=1, le=5,
        description="1..5 (MNIST-C levels); null: the level calibrated to hurt the source model "
        "without destroying the signal (selector/builtin/CALIBRATION.md).",
    )
    n_per_class: int = Field(default=100, ge=1)
    n_val: int = Field(default=20, ge=1)
    n_test: int = Field(default=80, ge=1)

    @field_validator("shift")
    @classmethod
    def _known_shift(cls, value: str) -> str:
        if value not in SHIFT_KINDS:
            raise ValueError(f"unknown shift {value!r}; known: {', '.join(SHIFT_KINDS)}")
        return value


#: At most this many source-reference images are read (a seeded sample of the file or folder):
#: the diagnosis compares at most 1,000 images per side (``selector.diagnose_shift``'s
#: ``max_examples``), so more would cost decoding time and memory and change nothing.
MAX_REFERENCE_IMAGES = 1000


class SourceReference(_Strict):
    """Clean, labelled images of the distribution the model was trained on: the shift
    diagnosis's null. Without one the diagnosis of a BatchNorm model falls back to an analytic
    null, and a model without running statistics (LayerNorm, GroupNorm) cannot be diagnosed.

    Exactly one of ``root`` (an ImageFolder directory of class folders; with ImageFolder target
    data its class folders must be among the target's) or ``path`` (a tensors file, read like
    ``data.path``: ``.pt`` / ``.npz`` images and labels, or a ``.npy`` with ``labels``). It is
    read with the target data's transform; at most :data:`MAX_REFERENCE_IMAGES` images (a
    seeded sample) are used."""

    root: Uri | None = None
    path: Uri | None = None
    labels: Uri | None = Field(default=None, description="labels of a .npy path (default: "
                               "labels.npy beside it)")

    @model_validator(mode="after")
    def _one_kind(self) -> SourceReference:
        if (self.root is None) == (self.path is None):
            raise PydanticCustomError(
                "reference_kind", "give exactly one of root (an image folder) or path (a "
                "tensors file)", {"field": "data.source_reference.root"})
        if self.labels is not None and self.path is None:
            raise PydanticCustomError(
                "reference_kind", "labels go with a .npy path, not with an image folder",
                {"field": "data.source_reference.labels"})
        return self


class _OwnData(_Strict):
    """What every user-data source accepts: the transform, few-shot sampling of train, and a
    source reference for the shift diagnosis."""

    transform: TransformSpec | None = None
    n_per_class: int | None = Field(
        default=None, ge=1, description="keep this many training images per class (seeded, "
        "stratified): the paper's few-shot regime")
    source_reference: SourceReference | None = Field(
        default=None, description="clean images of the model's source distribution, for the "
        f"shift diagnosis only (never trained on); at most {MAX_REFERENCE_IMAGES} are read")


class ImageFolderData(_OwnData):
    """ImageFolder directories (one class folder per class): ``train`` and ``val`` (and
    ``test``; without it the test metrics are omitted), or one ``root`` cut by ``split``."""

    source: Literal["imagefolder"]
    train: Uri | None = None
    val: Uri | None = None
    test: Uri | None = None
    root: Uri | None = None
    split: SplitSpec | None = None

    @model_validator(mode="after")
    def _one_layout(self) -> ImageFolderData:
        if self.root is not None:
            for name in ("train", "val", "test"):
                if getattr(self, name) is not None:
                    raise PydanticCustomError(
                        "layout", "give either root (with split) or train/val/test directories, "
                        "not both", {"field": f"data.{name}"})
            if self.split is None:
                self.split = SplitSpec(val=0.1, test=0.2)
            return self
        for name in ("train", "val"):
            if getattr(self, name) is None:
                raise PydanticCustomError(
                    "layout", "required: give train and val directories, or a root folder and "
                    "a split", {"field": f"data.{name}"})
        if self.split is not None:
            raise PydanticCustomError("layout", "split applies to a root folder; separate "
                                      "train/val directories are already split",
                                      {"field": "data.split"})
        return self


class TensorsData(_OwnData):
    """A tensors file: ``.pt`` / ``.npz`` (images + labels, or per-split keys) or a
    CIFAR-10-C-style ``.npy`` (``severity`` picks one of its 5 stacked levels; labels from
    ``labels`` or ``labels.npy`` beside it). A single pool is cut by ``split``."""

    source: Literal["tensors"]
    path: Uri
    labels: Uri | None = None
    severity: int | None = Field(default=None, ge=1, le=5,
                                 description="1..5, for a .npy of 5 stacked severities")
    split: SplitSpec | None = None


DataSpec = Annotated[BuiltinData | ImageFolderData | TensorsData, Field(discriminator="source")]

# Union tags per field: pydantic puts them into error locations; app.problems drops them.
UNION_TAGS: dict[str, frozenset[str]] = {
    "model": frozenset({"builtin", "torchvision", "torchscript", "factory"}),
    "data": frozenset({"builtin", "imagefolder", "tensors"}),
}


class SearchSpec(_Strict):
    """How to search: strategy, trial budget and the training recipe shared by every trial."""

    strategy: Literal["auto", "paper", "tpe", "auto-rgn", "diagnose"] = Field(
        default="auto", description="'diagnose' runs no training: the shift diagnosis and the "
        "untouched model's accuracy only (seconds).")
    max_trials: int = Field(default=12, ge=1)
    max_minutes: float | None = Field(
        default=None, gt=0, le=MAX_MINUTES,
        description="Wall-clock budget in minutes, counted from when a worker starts the job "
        "(loading the model and data and the shift diagnosis count; time in the queue does "
        "not): no trial starts after it, and trials running then stop after their current "
        "epoch, keeping the epochs they trained. The result's notes say so. Left out: only "
        "max_trials bounds the search.",
    )
    epochs: int = Field(
        default=DEFAULT_EPOCHS, ge=1,
        description=f"Epochs per trial; when left out, {PAPER_EPOCHS} (the paper's) for the "
        f"paper strategy, {DEFAULT_EPOCHS} for the others.",
    )
    lr_min: float = Field(default=1e-5, gt=0, le=10)
    lr_max: float = Field(default=1e-1, gt=0, le=10)
    granularity: Literal["stage", "block"] = "stage"
    groups: dict[str, str | list[str]] | None = Field(
        default=None,
        description="Ordered custom layer groups: name -> regex over module names, "
        "or a list of module-name suffixes (PEFT style). Input to output order.",
        examples=[{"stem": r"^(conv1|bn1)$", "head": ["fc"]}],
    )
    batch_size: int = Field(default=64, ge=1)
    baselines: bool = True
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto", description="auto: bf16 autocast on CUDA devices that support it, "
        "else fp16 with a grad scaler; fp32 on CPU")
    deterministic: bool = Field(
        default=False, description="keep cudnn.benchmark off (reproducible CUDA kernels)")
    prefer: Literal["parsimony", "accuracy"] = Field(
        default="parsimony",
        description="How the recommendation is chosen: 'parsimony' = the fewest tuned "
        "parameters within one standard error of the best validation accuracy; 'accuracy' = "
        "the best validation accuracy (ties: fewer tuned parameters).",
    )

    @model_validator(mode="after")
    def _lr_range(self) -> SearchSpec:
        # A model-level rule, so that it also runs when lr_max is left at its default.
        if self.lr_max <= self.lr_min:
            raise PydanticCustomError(
                "lr_range",
                "must be greater than lr_min ({lr_min})",
                {"lr_min": self.lr_min, "field": "search.lr_max"},
            )
        return self

    @model_validator(mode="after")
    def _paper_epochs(self) -> SearchSpec:
        """``paper`` is the paper's protocol: its epoch count too, unless the request set one."""
        if self.strategy == "paper" and "epochs" not in self.model_fields_set:
            self.epochs = PAPER_EPOCHS
        return self

    @field_validator("groups", mode="before")
    @classmethod
    def _groups(cls, value: Any) -> Any:
        # Checked by hand: a plain str | list[str] union would report errors under opaque
        # member locations ("str", "list[str]") instead of the group's name.
        if value is None:
            return None
        if not isinstance(value, dict) or not value:
            raise ValueError("must be a non-empty object: group name -> regex or suffix list")
        if len(value) > MAX_GROUPS:
            raise ValueError(f"at most {MAX_GROUPS} groups")
        for name, matcher in value.items():
            if not isinstance(name, str) or not name.strip():
                raise ValueError("group names must be non-empty strings")
            if len(name) > MAX_GROUP_NAME_LENGTH:
                raise ValueError(f"group names may have at most {MAX_GROUP_NAME_LENGTH} characters")
            if isinstance(matcher, str):
                try:
                    check_group_pattern(matcher)
                except ValueError as exc:
                    raise ValueError(f"group {name!r}: {exc}") from None
            elif not (
                isinstance(matcher, list)
                and 0 < len(matcher) <= MAX_SUFFIXES
                and all(isinstance(s, str) and 0 < len(s) <= MAX_SUFFIX_LENGTH for s in matcher)
            ):
                raise ValueError(
                    f"group {name!r}: must be a regex or a list of 1 to {MAX_SUFFIXES} suffixes "
                    f"of 1 to {MAX_SUFFIX_LENGTH} characters"
                )
        return value


_EXAMPLE: dict[str, Any] = {
    "model": {"source": "builtin", "name": "mnist-resnet"},
    "data": {
        "source": "builtin", "name": "mnist", "shift": "impulse_noise", "severity": 5,
        "n_per_class": 100,
    },
    "search": {
        "strategy": "auto", "max_trials": 12, "epochs": 10, "lr_min": 1e-5, "lr_max": 1e-1,
        "granularity": "stage", "groups": None, "batch_size": 64, "baselines": True,
        "precision": "auto", "deterministic": False,
    },
    "seed": 0,
}  # fmt: skip


class JobSpec(_Strict):
    """What to fine-tune, on which data, and how to search; ``model`` and ``data`` suffice."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                _EXAMPLE,
                {
                    "model": {"source": "torchvision", "arch": "resnet18",
                              "weights": "file:///data/resnet18.pt", "num_classes": 10},
                    "data": {"source": "imagefolder", "train": "file:///data/train",
                             "val": "file:///data/val", "test": None,
                             "transform": {"preset": "imagenet"}},
                },
                {
                    "model": {"source": "torchvision", "arch": "resnet50",
                              "weights": "IMAGENET1K_V2", "num_classes": 5},
                    "data": {"source": "imagefolder", "root": "file:///data/photos",
                             "split": {"train": 25, "val": 10, "test": 50}, "n_per_class": 5,
                             "transform": {"preset": "weights"}},
                    "search": {"precision": "auto"},
                },
                {
                    "model": {"source": "torchscript", "path": "file:///data/model.pt"},
                    "data": {"source": "tensors", "path": "file:///data/CIFAR-10-C/fog.npy",
                             "labels": "file:///data/CIFAR-10-C/labels.npy", "severity": 5,
                             "split": {"train": 100, "val": 10, "test": 90},
                             "transform": {"mean": [0.49, 0.48, 0.45],
                                           "std": [0.25, 0.24, 0.26]},
                             "source_reference": {"path": "file:///data/cifar10-test.npz"}},
                },
            ]
        },
    )  # fmt: skip

    model: ModelSpec
    data: DataSpec
    search: SearchSpec = Field(default_factory=SearchSpec)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        """Refuse NaN/Infinity, NUL characters and lone surrogates anywhere (keys included):
        no database stores them faithfully, and a factory's free-form kwargs could hide them."""
        found = first_unsafe(value)
        if found:
            field, message = found
            raise PydanticCustomError("unstorable", message, {"field": field or "body"})
        return value

    @model_validator(mode="after")
    def _weights_preset_needs_an_enum(self) -> JobSpec:
        """``transform.preset: "weights"`` reads the torchvision weights enum the model names."""
        transform = getattr(self.data, "transform", None)
        if transform is None or transform.preset != "weights":
            return self
        model = self.model
        if not (isinstance(model, TorchvisionModel) and model.weights
                and WEIGHTS_ENUM.match(model.weights)):
            raise PydanticCustomError(
                "weights_preset",
                'preset "weights" needs a torchvision model whose weights name a torchvision '
                'weights enum (e.g. "IMAGENET1K_V1"); use "imagenet" or explicit values',
                {"field": "data.transform.preset"},
            )
        return self

    @model_validator(mode="after")
    def _builtin_model_fits_the_shift(self) -> JobSpec:
        """Name the built-in model a built-in shift needs, or refuse one that cannot fit."""
        if not isinstance(self.model, BuiltinModel):
            return self
        if not isinstance(self.data, BuiltinData):
            self.model.name = self.model.name or DEFAULT_BUILTIN_MODEL
            return self
        needed = SHIFT_MODELS.get(self.data.shift, DEFAULT_BUILTIN_MODEL)
        if self.model.name is None:
            self.model.name = needed
        elif self.model.name != needed:
            raise PydanticCustomError(
                "model_mismatch",
                "the {shift} shift is defined against the built-in model "
                "'{needed}', not '{given}' (leave model.name out to get the right one)",
                {"shift": self.data.shift, "needed": needed, "given": self.model.name,
                 "field": "model.name"},
            )
        return self


JobCreate = JobSpec  # the request body of POST /v1/jobs is the spec itself
