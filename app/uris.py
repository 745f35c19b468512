"""File references in job specs: URI syntax, and confinement of local paths to the data roots.

A reference is ``file:///abs/path``, a bare absolute path (treated as ``file``), or, only when
fsspec is installed, a URI of another fsspec protocol (``s3://...``). Local paths are resolved
with :meth:`pathlib.Path.resolve`, which follows symlinks, so both ``..`` and a symlink that
points outside every data root are caught. Chained fsspec URLs (``simplecache::file://...``)
are refused: they would smuggle a local path past the confinement check.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

LOCAL_SCHEMES = frozenset({"file", "local"})


@cache
def _fsspec_protocols() -> frozenset[str]:
    if importlib.util.find_spec("fsspec") is None:
        return frozenset()
    from fsspec.registry import known_implementations

    return frozenset(known_implementations) - LOCAL_SCHEMES


def local_path(uri: str) -> Path | None:
    """The unresolved local path a reference names, or None for a remote URI.

    The engine reads references with the same rule (``selector.io.models_io.local_path``, which
    raises where this returns None); ``tests/test_contracts.py`` pins both to one table.
    """
    if uri.startswith("/"):
        return Path(uri)
    parts = urlsplit(uri)
    if parts.scheme in LOCAL_SCHEMES:
        return Path(unquote(parts.path))
    return None


def check_uri_syntax(uri: str) -> str:
    """Reject references the service can never open; return the reference unchanged.

    Raises ValueError with a message meant for the client (pydantic turns it into a 422).
    """
    if not uri or uri != uri.strip():
        raise ValueError("must be a non-empty URI without surrounding spaces")
    if "::" in uri:
        raise ValueError("chained fsspec URLs are not accepted")
    if uri.startswith("/"):
        return uri
    parts = urlsplit(uri)
    if parts.scheme in LOCAL_SCHEMES:
        if parts.netloc not in ("", "localhost"):
            raise ValueError("file URIs must name a local path (file:///abs/path)")
        if not parts.path.startswith("/"):
            raise ValueError("file URIs must hold an absolute path (file:///abs/path)")
        return uri
    if not parts.scheme:
        raise ValueError("must be an absolute path or a URI such as file:///abs/path")
    if parts.scheme not in _fsspec_protocols():
        raise ValueError(
            f"scheme {parts.scheme!r} is not supported "
            "(file:// always; other fsspec protocols when fsspec is installed)"
        )
    return uri


def confine(uri: str, roots: list[Path]) -> str:
    """The canonical ``file://`` URI of a local reference if it resolves inside a data root.

    Remote URIs come back unchanged. Raises ValueError naming the roots otherwise.
    """
    path = local_path(uri)
    if path is None:
        return uri
    resolved = path.resolve()
    for root in roots:
        if resolved.is_relative_to(root.resolve()):
            return resolved.as_uri()
    allowed = ", ".join(str(root) for root in roots) or "(none configured)"
    raise ValueError(f"path resolves to {resolved}, outside the data roots: {allowed}")
