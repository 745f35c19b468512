"""MNIST-C corruptions that draw over the digit: fog, spatter, dotted line, zigzag, Canny edges.

Ported from ``corruptions.py`` of google-research/mnist-c (Mu & Gilmer 2019) to work on whole
batches. Same contract as ``corruptions_spatial``: float (N, 28, 28) in 0..255 in, float32 out.
"""

from __future__ import annotations

import numpy as np
from skimage import feature

from selector.builtin.corruptions_spatial import gaussian

PLASMA_SIZE = 256  # MNIST-C draws a 256x256 plasma map and crops its top-left 28x28
_PLASMA_CHUNK = 32  # images per batched diamond-square pass (32 * 256^2 float32 = 8 MiB)


def plasma_fractal(n: int, decay: float, rng: np.random.Generator,
                   size: int = PLASMA_SIZE) -> np.ndarray:
    """``n`` diamond-square height maps (n, size, size) in [0, 1], as MNIST-C's fog uses.

    Same recursion as the original (itself from FLHerne/mapgen): the noise added at step size
    ``s`` is ``U(-w, w) * w`` where ``w`` starts at 100 and is divided by ``decay`` per level;
    each map is normalised by its own min and max.
    """
    maps = np.empty((n, size, size), dtype=np.float32)
    maps[:, 0, 0] = 0.0
    step, wibble = size, 100.0

    def wibbled_mean(total: np.ndarray) -> np.ndarray:
        return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape).astype(np.float32)

    while step >= 2:
        half = step // 2
        corners = maps[:, 0:size:step, 0:size:step]
        squares = corners + np.roll(corners, -1, axis=1)
        squares = squares + np.roll(squares, -1, axis=2)
        maps[:, half:size:step, half:size:step] = wibbled_mean(squares)
        centres = maps[:, half:size:step, half:size:step]
        corners = maps[:, 0:size:step, 0:size:step]
        left_right = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=2)
        maps[:, 0:size:step, half:size:step] = wibbled_mean(left_right)
        top_bottom = centres + np.roll(centres, 1, axis=2) + corners + np.roll(corners, -1, axis=1)
        maps[:, half:size:step, 0:size:step] = wibbled_mean(top_bottom)
        step //= 2
        wibble /= decay
    maps -= maps.min(axis=(1, 2), keepdims=True)
    return maps / maps.max(axis=(1, 2), keepdims=True)


def fog(x: np.ndarray, c: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Add ``c[0]`` times a plasma fractal (decay ``c[1]``), then rescale to the image's max."""
    strength, decay = c
    x = x / 255.0
    top = x.max(axis=(1, 2), keepdims=True)
    out = np.empty_like(x)
    for start in range(0, len(x), _PLASMA_CHUNK):
        part = slice(start, start + _PLASMA_CHUNK)
        plasma = plasma_fractal(len(x[part]), decay, rng)[:, :28, :28]
        out[part] = x[part] + strength * plasma
    out = np.clip(out * top / (top + strength), 0, 1)
    return (out * 255.0).astype(np.float32)


def spatter(x: np.ndarray, c: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """Mud blobs of grey 63/255: thresholded blurred noise, softened, thresholded at 0.8."""
    loc, scale, sigma, threshold, soften = c[:5]
    x = x / 255.0
    liquid = gaussian(rng.normal(loc, scale, size=x.shape), sigma)
    mask = gaussian((liquid > threshold).astype(np.float64), soften)
    mask[mask < 0.8] = 0.0
    out = x * (1.0 - mask) + 63.0 / 255.0 * mask
    return (np.clip(out, 0, 1) * 255.0).astype(np.float32)


def line_from_points(c0: np.ndarray, r0: np.ndarray, c1: np.ndarray, r1: np.ndarray
                     ) -> np.ndarray:
    """MNIST-C's anti-aliased line from (c0, r0) to (c1, r1), one per row of the inputs.

    Intensity ``log(1 - d / 2.3) + 1`` at vertical distance ``d`` from the line, clipped to
    [0, 1], and zero outside columns ``[floor(c0), ceil(c1))``. Vertical lines are blank.
    """
    c0, r0, c1, r1 = (np.asarray(v, dtype=np.float64)[:, None, None] for v in (c0, r0, c1, r1))
    cols = np.arange(28.0)[None, None, :]
    rows = np.arange(28.0)[None, :, None]
    vertical = c1 == c0
    slope = (r1 - r0) / np.where(vertical, 1.0, c1 - c0)
    dist = np.clip(np.abs(rows - (slope * (cols - c0) + r0)), 0, 2.3 - 1e-10)
    line = np.clip(np.log(1 - dist / 2.3) + 1, 0, 1)
    inside = (cols >= np.floor(c0)) & (cols < np.ceil(c1)) & ~vertical
    return np.where(inside, line, 0.0)


def dotted_line(x: np.ndarray, c: None, rng: np.random.Generator) -> np.ndarray:
    """A line across the image between random rows, with every other 2-px segment removed."""
    r0, r1 = rng.integers(0, 27, size=(2, x.shape[0]))
    line = line_from_points(np.zeros(len(x)), r0, np.full(len(x), 27.0), r1)
    line[:, :, (np.arange(28) // 2) % 2 == 0] = 0.0
    return (np.clip(x / 255.0 + line, 0, 1) * 255.0).astype(np.float32)


def _zigzag_endpoints(r0: float, r1: float, a: float = 2.0, b: float = 2.0,
                      c0: float = 2.0, c1: float = 25.0) -> np.ndarray:
    """Vertices (2, k) as (col, row) of MNIST-C's zigzag from (c0, r0) towards (c1, r1)."""
    theta = np.arctan((r1 - r0) / (c1 - c0))
    length = (c1 - c0) / np.cos(theta)
    points = [(0.0, 0.0)]
    r_i = 0.0
    for i in range(int((length - a) // (2 * a)) + 1):
        r_i = (-1) ** i * b
        points.append(((2 * i + 1) * a, r_i))
    max_c = (2 * a) * (length // (2 * a))
    if length != max_c:  # the original's closing vertex, kept as written
        points.append((length, r_i / (2 * (length - max_c))))
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    cols, rows = rot @ np.array(points).T
    return np.stack([cols + c0, rows + r0])


def zigzag(x: np.ndarray, c: None, rng: np.random.Generator) -> np.ndarray:
    """A zigzag line across columns 2-25 starting at a random row, slope within 5 rows."""
    n = x.shape[0]
    starts = np.asarray(rng.integers(0, 27, size=n))
    rows = np.stack([starts, starts + rng.integers(-5, 5, size=n)], axis=1)
    vertices = [_zigzag_endpoints(float(r0), float(r1)) for r0, r1 in rows]
    k = max(v.shape[1] for v in vertices)
    # Pad short polylines by repeating the last vertex: a zero-length segment draws nothing.
    padded = np.stack([np.pad(v, ((0, 0), (0, k - v.shape[1])), mode="edge") for v in vertices])
    out = x / 255.0
    for s in range(k - 1):
        out = out + line_from_points(padded[:, 0, s], padded[:, 1, s],
                                     padded[:, 0, s + 1], padded[:, 1, s + 1])
    # The original clips after every segment; all segments are non-negative, so one clip at
    # the end gives the same image.
    return (np.clip(out, 0, 1) * 255.0).astype(np.float32)


def canny_edges(x: np.ndarray, c: None, rng: np.random.Generator) -> np.ndarray:
    """The binary Canny edge map (scikit-image defaults, sigma 1) scaled to 0 / 255."""
    edges = np.stack([feature.canny(image / 255.0) for image in x])
    return edges.astype(np.float32) * 255.0
