"""Mixed precision and the CUDA speed switches a trial trains with.

``precision`` (the job spec's ``search.precision``):

- ``"auto"``: bf16 autocast on CUDA devices that support it, else fp16 autocast with a grad
  scaler; fp32 on CPU (CPU autocast is slower than fp32 for the small models of the tests);
- ``"fp32"``: no autocast;
- ``"bf16"`` / ``"fp16"``: autocast to that type on any device (CPU autocast supports both;
  fp16 always gets a grad scaler, whose loss scaling keeps small gradients from flushing to
  zero).

Losses are computed in fp32 from the logits, and the optimizer steps fp32 master weights:
autocast only changes the dtype of the matmuls and convolutions inside the forward.
On CUDA, convolutional models run channels_last (faster tensor-core convolutions) and
``cudnn.benchmark`` picks the fastest kernels unless the run asks to be ``deterministic``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from selector.errors import ConfigError

__all__ = ["PRECISIONS", "Precision", "cudnn_benchmark", "resolve_precision"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """The resolved choice for one device: ``name`` is fp32, bf16 or fp16."""

    name: str
    device: torch.device
    channels_last: bool = False

    @property
    def dtype(self) -> torch.dtype | None:
        return _DTYPES.get(self.name)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler | None:
        """A grad scaler for fp16 (None otherwise)."""
        if self.name != "fp16":
            return None
        return torch.amp.GradScaler(self.device.type)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        if self.channels_last:
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return model

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x


def resolve_precision(precision: str, device: torch.device, model: nn.Module | None = None
                      ) -> Precision:
    """``precision`` for ``device``; channels_last when ``model`` has convolutions on CUDA."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    cuda = device.type == "cuda"
    name = precision
    if precision == "auto":
        name = "fp32" if not cuda else (
            "bf16" if torch.cuda.is_bf16_supported() else "fp16")
    convolutional = model is not None and any(
        isinstance(m, nn.Conv2d) for m in model.modules())
    return Precision(name, device, channels_last=cuda and convolutional)


@contextlib.contextmanager
def cudnn_benchmark(device: torch.device, deterministic: bool) -> Iterator[None]:
    """``cudnn.benchmark`` on CUDA unless ``deterministic`` (which turns on cudnn's
    deterministic kernels instead); restored afterwards (the flags are process-wide)."""
    if device.type != "cuda":
        yield
        return
    before = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before
