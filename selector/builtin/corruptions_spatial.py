"""Spatial MNIST-C corruptions: affine warps (shear, scale, rotate, translate) and blurs.

Each function follows ``corruptions.py`` of google-research/mnist-c (Mu & Gilmer 2019, "MNIST-C:
A Robustness Benchmark for Computer Vision") but works on a whole batch at once, because the
original loops over images (and, for glass blur, over pixels) in Python and shells out to
ImageMagick for motion blur. All take float arrays (N, 28, 28) in 0..255, the severity's
published parameter and a ``numpy.random.Generator``, and return float32 in 0..255.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

CENTRE = 13.5  # MNIST-C keeps the image centre (13.5, 13.5) fixed in every affine warp


def gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """``skimage.filters.gaussian`` per image (mode 'nearest', truncate 4), batched."""
    return ndimage.gaussian_filter(x, sigma=(0.0, sigma, sigma), mode="nearest", truncate=4.0)


def _about_centre(linear: np.ndarray) -> np.ndarray:
    """(N, 2, 2) linear maps -> (N, 3, 3) affine maps that fix the image centre.

    Same translation as MNIST-C: ``a3 = 13.5 * (1 - a1 - a2)``, ``b3 = 13.5 * (1 - b1 - b2)``.
    """
    n = linear.shape[0]
    out = np.zeros((n, 3, 3))
    out[:, :2, :2] = linear
    out[:, :2, 2] = CENTRE * (1.0 - linear.sum(axis=2))
    out[:, 2, 2] = 1.0
    return out


def warp(x: np.ndarray, inverse_maps: np.ndarray) -> np.ndarray:
    """Batched ``skimage.transform.warp(x, inverse_map=M)``: bilinear, zero outside.

    ``inverse_maps`` (N, 3, 3) send an output pixel's homogeneous (col, row, 1) to the input
    position it samples, exactly as skimage's ``AffineTransform`` does in MNIST-C.
    """
    n, h, w = x.shape
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    points = np.stack([cols.ravel(), rows.ravel(), np.ones(h * w)])  # (3, h*w), (x, y, 1)
    mapped = inverse_maps @ points  # (N, 3, h*w)
    src_cols = mapped[:, 0].reshape(n, h, w)
    src_rows = mapped[:, 1].reshape(n, h, w)
    index = np.broadcast_to(np.arange(n, dtype=np.float64)[:, None, None], (n, h, w))
    out = ndimage.map_coordinates(x.astype(np.float64), [index, src_rows, src_cols],
                                  order=1, mode="constant", cval=0.0)
    return np.clip(out, 0, 255).astype(np.float32)


def _random_signs(rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
    return rng.choice(np.array([-1.0, 1.0]), size=size)


def shear(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    """Shear by ``c`` with a random sign about the centre.

    Uses the matrix of scikit-image < 0.20 that MNIST-C was generated with,
    ``[[1, -sin c], [0, cos c]]`` (newer versions use ``-tan c`` and no vertical squash).
    """
    s = c * _random_signs(rng, x.shape[0])
    linear = np.zeros((x.shape[0], 2, 2))
    linear[:, 0, 0] = 1.0
    linear[:, 0, 1] = -np.sin(s)
    linear[:, 1, 1] = np.cos(s)
    return warp(x, _about_centre(linear))


def rotate(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    """Rotate by ``c`` radians with a random sign about the centre."""
    a = c * _random_signs(rng, x.shape[0])
    cos, sin = np.cos(a), np.sin(a)
    linear = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], 1)
    return warp(x, _about_centre(linear))


def scale(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    """Shrink the digit to ``c`` of its size about the centre (inverse map scales by 1/c)."""
    linear = np.broadcast_to(np.eye(2) / c, (x.shape[0], 2, 2))
    return warp(x, _about_centre(linear))


def translate(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    """Shift by ``c`` pixels in x and in y, each with an independent random sign."""
    shifts = c * _random_signs(rng, (x.shape[0], 2))
    maps = np.broadcast_to(np.eye(3), (x.shape[0], 3, 3)).copy()
    maps[:, :2, 2] = shifts
    return warp(x, maps)


def glass_blur(x: np.ndarray, c: tuple[float, int, int], rng: np.random.Generator) -> np.ndarray:
    """Blur, shuffle pixels locally, blur again: MNIST-C's ``glass_blur`` (sigma, delta, iters).

    The original visits pixels from the bottom-right corner, and with probability 1/2 swaps
    each with a neighbour at offset ``randint(-delta, delta)`` (upper bound exclusive). The
    swaps are sequential, so the loop over positions stays; it runs over all images at once.
    """
    sigma, delta, iterations = c
    n = x.shape[0]
    blurred = np.floor(gaussian(x / 255.0, sigma) * 255.0).astype(np.uint8).reshape(n, -1)
    positions = [(h, w) for h in range(28 - delta, delta, -1) for w in range(28 - delta, delta, -1)]
    all_images = np.arange(n)
    for _ in range(iterations):
        swap = rng.random((len(positions), n)) < 0.5
        offsets = rng.integers(-delta, delta, size=(len(positions), n, 2))
        for k, (h, w) in enumerate(positions):
            chosen = all_images[swap[k]]
            here = h * 28 + w
            there = here + offsets[k, swap[k], 0] * 28 + offsets[k, swap[k], 1]
            moved = blurred[chosen, there]
            blurred[chosen, there] = blurred[chosen, here]
            blurred[chosen, here] = moved
    out = gaussian(blurred.reshape(n, 28, 28) / 255.0, sigma)
    return (np.clip(out, 0, 1) * 255.0).astype(np.float32)


def motion_kernel(radius: float, sigma: float, angle_deg: ArrayLike
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ImageMagick's ``MotionBlurImage`` kernel, without ImageMagick.

    A one-sided trail of ``2 * ceil(radius) + 1`` taps; tap ``i`` sits ``i`` pixels along the
    angle (rounded to whole pixels) with weight ``exp(-i^2 / (2 sigma^2))``, normalised.
    Returns weights (taps,) and integer row / column offsets (N, taps).
    """
    taps = np.arange(int(2 * np.ceil(radius) + 1))
    weights = np.exp(-(taps**2) / (2.0 * sigma**2))
    weights /= weights.sum()
    theta = np.deg2rad(np.atleast_1d(np.asarray(angle_deg, dtype=np.float64)))[:, None]
    d_cols = np.ceil(taps * np.cos(theta) - 0.5).astype(np.int64)
    d_rows = np.ceil(taps * np.sin(theta) - 0.5).astype(np.int64)
    return weights, d_rows, d_cols


def motion_blur(x: np.ndarray, c: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Motion blur with radius / sigma ``c`` at an angle drawn from U(-45, 45) degrees.

    MNIST-C calls ImageMagick's ``-motion-blur``; this applies the same kernel
    (``motion_kernel``) directly. Pixels beyond the border repeat the edge, as ImageMagick's
    default virtual-pixel method does.
    """
    radius, sigma = c
    n = x.shape[0]
    weights, d_rows, d_cols = motion_kernel(radius, sigma, rng.uniform(-45, 45, size=n))
    pad = len(weights)
    padded = np.pad(x.astype(np.float32), ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    rows = np.arange(28)[None, :, None] + pad
    cols = np.arange(28)[None, None, :] + pad
    images = np.arange(n)[:, None, None]
    out = np.zeros(x.shape, dtype=np.float32)
    for tap, weight in enumerate(weights):
        out += weight * padded[images, rows + d_rows[:, tap, None, None],
                               cols + d_cols[:, tap, None, None]]
    return np.clip(out, 0, 255).astype(np.float32)
