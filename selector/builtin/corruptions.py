"""MNIST-C corruptions (Mu & Gilmer 2019) with their published five severities, plus three extras.

The 15 benchmark corruptions and the parameters of their five levels follow ``corruptions.py``
of google-research/mnist-c; the released MNIST-C uses one fixed level per corruption
(``MNIST_C_LEVEL``). ``gaussian_noise``, ``contrast`` and ``inverse`` come from the same file's
extra functions. Differences from the original, all to avoid ImageMagick / OpenCV / PIL and to
run batched: motion blur applies ImageMagick's kernel directly, and random numbers come from a
``numpy.random.Generator`` (so images differ from the released files, distributions do not).

Contract: ``corrupt(images, name, severity, seed)`` takes float (N, 28, 28) or (28, 28) arrays
in 0..255 and returns float32 of the same shape in 0..255. It is a pure function of
(images, name, severity, seed). Randomness does not depend on the severity, so severities of
one seed share their random draws (same rotation sign, same line position, ...): a higher
severity is then a stronger version of the same corruption of the same image.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from selector.builtin import corruptions_overlay as overlay
from selector.builtin import corruptions_spatial as spatial
from selector.builtin.errors import UnknownChoiceError

SEVERITIES = (1, 2, 3, 4, 5)

Fn = Callable[[np.ndarray, Any, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class CorruptionSpec:
    """One corruption: its batched function and the parameter of each severity.

    ``levels`` is None for corruptions without a severity parameter (stripe, dotted_line,
    zigzag, canny_edges, inverse): every severity gives the same image.
    """

    name: str
    fn: Fn
    levels: tuple[Any, ...] | None
    mnist_c: bool  # one of the 15 corruptions of the MNIST-C benchmark

    def parameter(self, severity: int) -> Any:
        return None if self.levels is None else self.levels[severity - 1]


def _unit(fn: Callable[[np.ndarray, Any, np.random.Generator], np.ndarray]) -> Fn:
    """Wrap a function written on [0, 1] images into the 0..255 contract."""

    def wrapped(x: np.ndarray, c: Any, rng: np.random.Generator) -> np.ndarray:
        return (np.clip(fn(x / 255.0, c, rng), 0, 1) * 255.0).astype(np.float32)

    wrapped.__doc__ = fn.__doc__
    return wrapped


@_unit
def gaussian_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    """Additive N(0, c^2) noise on [0, 1] pixels."""
    return x + rng.normal(scale=c, size=x.shape)


@_unit
def shot_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson(x * c) / c: fewer photons ``c`` mean more noise."""
    return rng.poisson(x * c) / float(c)


@_unit
def impulse_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    """Salt and pepper: a share ``c`` of pixels set to 0 or 1 with equal odds.

    As ``skimage.util.random_noise(mode='s&p', amount=c)``, which MNIST-C calls.
    """
    hit = rng.random(x.shape) < c
    salt = rng.random(x.shape) < 0.5
    return np.where(hit, salt.astype(np.float64), x)


@_unit
def brightness(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    """HSV value + ``c``. For grey images the HSV round trip of MNIST-C is just ``x + c``."""
    return x + c


@_unit
def contrast(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    """Pull pixels towards the image's mean by the factor ``c``."""
    means = x.mean(axis=(1, 2), keepdims=True)
    return (x - means) * c + means


def inverse(x: np.ndarray, c: None, rng: np.random.Generator) -> np.ndarray:
    """White background, black digit."""
    return (255.0 - x).astype(np.float32)


def stripe(x: np.ndarray, c: None, rng: np.random.Generator) -> np.ndarray:
    """Invert columns 0-6 and 21-27."""
    out = x.astype(np.float32, copy=True)
    out[:, :, :7] = 255.0 - out[:, :, :7]
    out[:, :, 21:] = 255.0 - out[:, :, 21:]
    return out


_SPECS = [
    CorruptionSpec("shot_noise", shot_noise, (60, 25, 12, 5, 3), True),
    CorruptionSpec("impulse_noise", impulse_noise, (0.03, 0.06, 0.09, 0.17, 0.27), True),
    CorruptionSpec("glass_blur", spatial.glass_blur,
                   ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)), True),
    CorruptionSpec("motion_blur", spatial.motion_blur,
                   ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)), True),
    CorruptionSpec("shear", spatial.shear, (0.2, 0.4, 0.6, 0.8, 1.0), True),
    CorruptionSpec("scale", spatial.scale, (0.9, 0.8, 0.7, 0.6, 0.5), True),
    CorruptionSpec("rotate", spatial.rotate, (0.2, 0.4, 0.6, 0.8, 1.0), True),
    CorruptionSpec("brightness", brightness, (0.1, 0.2, 0.3, 0.4, 0.5), True),
    CorruptionSpec("translate", spatial.translate, (1, 2, 3, 4, 5), True),
    CorruptionSpec("stripe", stripe, None, True),
    CorruptionSpec("fog", overlay.fog,
                   ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)), True),
    # (loc, scale, sigma, threshold, soften, mud): MNIST-C's table; mud is always used.
    CorruptionSpec("spatter", overlay.spatter,
                   ((0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0),
                    (0.65, 0.3, 2, 0.68, 0.5, 0), (0.65, 0.3, 1, 0.65, 1.5, 1),
                    (0.67, 0.4, 1, 0.65, 1.5, 1)), True),
    CorruptionSpec("dotted_line", overlay.dotted_line, None, True),
    CorruptionSpec("zigzag", overlay.zigzag, None, True),
    CorruptionSpec("canny_edges", overlay.canny_edges, None, True),
    CorruptionSpec("gaussian_noise", gaussian_noise, (0.08, 0.12, 0.18, 0.26, 0.38), False),
    CorruptionSpec("contrast", contrast, (0.4, 0.3, 0.2, 0.1, 0.05), False),
    CorruptionSpec("inverse", inverse, None, False),
]
CORRUPTIONS: dict[str, CorruptionSpec] = {spec.name: spec for spec in _SPECS}
MNIST_C = tuple(spec.name for spec in _SPECS if spec.mnist_c)

#: The level each corruption has in the released MNIST-C (its function's default severity).
MNIST_C_LEVEL = {"shot_noise": 5, "impulse_noise": 4, "glass_blur": 1, "motion_blur": 1,
                 "shear": 2, "scale": 3, "rotate": 2, "brightness": 5, "translate": 3,
                 "fog": 5, "spatter": 4}


def get_corruption(name: str) -> CorruptionSpec:
    try:
        return CORRUPTIONS[name]
    except KeyError:
        raise UnknownChoiceError("corruption", name, CORRUPTIONS) from None


def check_severity(severity: int) -> int:
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise UnknownChoiceError("severity", severity, SEVERITIES)
    return int(severity)


def corruption_rng(name: str, seed: int) -> np.random.Generator:
    """The generator behind ``corrupt``: one stream per (corruption, seed), shared by severities."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(name.encode())]))


def corrupt(images: np.ndarray, name: str, severity: int = 5, seed: int = 0) -> np.ndarray:
    """Apply corruption ``name`` at ``severity`` (1-5) to 0..255 images (N, 28, 28) or (28, 28)."""
    spec = get_corruption(name)
    severity = check_severity(severity)
    x = np.asarray(images, dtype=np.float64)
    single = x.ndim == 2
    if single:
        x = x[None]
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise ValueError(f"expected images of shape (N, 28, 28) or (28, 28), got {x.shape}")
    out = spec.fn(x, spec.parameter(severity), corruption_rng(name, seed))
    out = np.asarray(out, dtype=np.float32)
    return out[0] if single else out
