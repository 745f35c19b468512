"""A small on-disk cache of built artefacts: locked, atomic, verified.

Layout under the data directory (``SURGICAL_DATA_DIR``, default ``$XDG_CACHE_HOME/surgical`` or
``~/.cache/surgical``)::

    models/<name>/weights.safetensors   # tensors only: safetensors never runs code (no pickle)
    models/<name>/manifest.json         # how it was built, and the sha256 of the weights
    models/<name>.lock                  # fcntl lock held while an entry is checked or built

Why each piece:

* The lock makes concurrent first uses (two workers, a test and a CLI) build an entry once;
  the others wait and then read it.
* Files are written to a temporary name in the same directory and renamed into place; the old
  manifest is removed first and the new one written last, so a crash leaves an entry without
  a manifest, which reads as partial.
* Reading checks the manifest (present, valid JSON, expected fields), the weights' checksum and
  that safetensors can parse them. Anything wrong is logged and the entry is rebuilt; a bad
  entry is never used.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from selector.builtin.errors import CacheEntryError

log = logging.getLogger(__name__)

ENV_VAR = "SURGICAL_DATA_DIR"
WEIGHTS = "weights.safetensors"
MANIFEST = "manifest.json"

Tensors = dict[str, torch.Tensor]
Builder = Callable[[], tuple[Tensors, dict[str, Any]]]


def data_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: ``path``, else ``$SURGICAL_DATA_DIR``, else the user cache dir."""
    if path is not None:
        return Path(path).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home).expanduser() / "surgical"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``path`` (created if needed) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _replace_atomically(target: Path, write: Callable[[Path], object]) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=target.suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_entry(entry: Path, tensors: Tensors, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Write weights then manifest atomically; returns the manifest as written (with checksum)."""
    entry.mkdir(parents=True, exist_ok=True)
    for stale in entry.glob(".tmp-*"):  # left by a writer that crashed
        stale.unlink(missing_ok=True)
    (entry / MANIFEST).unlink(missing_ok=True)  # the entry reads as partial until the end
    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    _replace_atomically(entry / WEIGHTS, lambda p: save_file(contiguous, str(p)))
    written = dict(manifest)
    written["weights"] = {"file": WEIGHTS, "sha256": sha256_file(entry / WEIGHTS),
                          "bytes": (entry / WEIGHTS).stat().st_size}
    text = json.dumps(written, indent=2, sort_keys=True) + "\n"
    _replace_atomically(entry / MANIFEST, lambda p: p.write_text(text))
    return written


def read_entry(entry: Path, expect: Mapping[str, Any]) -> tuple[Tensors, dict[str, Any]]:
    """Verified tensors and manifest of ``entry``; ``CacheEntryError`` says what is wrong."""
    manifest_path, weights_path = entry / MANIFEST, entry / WEIGHTS
    if not manifest_path.is_file():
        raise CacheEntryError(f"{entry}: no {MANIFEST} (partial or interrupted build)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CacheEntryError(f"{manifest_path}: unreadable manifest ({exc})") from exc
    if not isinstance(manifest, dict):
        raise CacheEntryError(f"{manifest_path}: manifest is not a JSON object")
    for key, value in expect.items():
        if manifest.get(key) != value:
            raise CacheEntryError(f"{manifest_path}: {key} is {manifest.get(key)!r}, "
                                  f"expected {value!r} (stale entry)")
    expected_sha = (manifest.get("weights") or {}).get("sha256")
    if not weights_path.is_file():
        raise CacheEntryError(f"{entry}: {WEIGHTS} is missing")
    actual_sha = sha256_file(weights_path)
    if actual_sha != expected_sha:
        raise CacheEntryError(f"{weights_path}: sha256 {actual_sha} does not match the "
                              f"manifest's {expected_sha}")
    try:
        tensors = load_file(str(weights_path))
    except Exception as exc:  # safetensors raises its own error types
        raise CacheEntryError(f"{weights_path}: unreadable safetensors ({exc})") from exc
    return tensors, manifest


def load_or_build(entry: Path, build: Builder, expect: Mapping[str, Any],
                  validate: Callable[[Tensors], None] | None = None,
                  ) -> tuple[Tensors, dict[str, Any], bool]:
    """Return ``(tensors, manifest, built)`` for ``entry``, building it under the lock if needed.

    ``expect`` lists manifest fields that must match (name, recipe version); ``build`` returns
    tensors and a manifest (it must include ``expect``); ``validate`` may raise
    ``CacheEntryError`` for tensors that do not fit (for example a model's state dict).
    """
    with file_lock(entry.parent / f"{entry.name}.lock"):
        if entry.exists():
            try:
                tensors, manifest = read_entry(entry, expect)
                if validate is not None:
                    validate(tensors)
                return tensors, manifest, False
            except CacheEntryError as exc:
                log.warning("rebuilding cache entry %s: %s", entry, exc)
        else:
            log.info("building cache entry %s", entry)
        tensors, manifest = build()
        missing = {k: v for k, v in expect.items() if manifest.get(k) != v}
        if missing:
            raise ValueError(f"builder's manifest lacks expected fields {missing}")
        write_entry(entry, tensors, manifest)
        tensors, manifest = read_entry(entry, expect)  # read back what others will read
        return tensors, manifest, True
