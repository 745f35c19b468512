"""File references in job specs: URI syntax, and confinement of local paths to the data roots.

A reference is ``file:///abs/path``, a bare absolute path (treated as ``file``), or a remote URI
``scheme://host/...`` of a scheme the operator enabled (``remote_uri_schemes``; ``s3`` with the
S3 artifact setting) and that fsspec knows. Anything else is refused at submit: a bare
``http:/etc/passwd`` is neither a remote URI nor an absolute path, and a reader that took it for
a relative local path would skip confinement. :func:`split_reference` is the one parser; the
API and the worker (:func:`app.validation.check_spec`) both go through it.

Local paths are resolved with :meth:`pathlib.Path.resolve`, which follows symlinks, so both
``..`` and a symlink that points outside every data root are caught. Chained fsspec URLs
(``simplecache::file://...``) are refused: they would smuggle a local path past the check.
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


def split_reference(uri: str) -> tuple[str, Path | None]:
    """(scheme, local path): ``("file", path)`` for a local reference, else ``(scheme, None)``.

    Raises ValueError (a message for the client) for anything that is neither an absolute local
    path nor a ``scheme://host/...`` URI.
    """
    if not uri or uri != uri.strip():
        raise ValueError("must be a non-empty URI without surrounding spaces")
    if "::" in uri:
        raise ValueError("chained fsspec URLs are not accepted")
    if uri.startswith("/"):
        return "file", Path(uri)
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in LOCAL_SCHEMES:
        if parts.netloc not in ("", "localhost"):
            raise ValueError("file URIs must name a local path (file:///abs/path)")
        if not parts.path.startswith("/"):
            raise ValueError("file URIs must hold an absolute path (file:///abs/path)")
        return "file", Path(unquote(parts.path))
    if not scheme:
        raise ValueError("must be an absolute path or a URI such as file:///abs/path")
    if not uri[len(parts.scheme) :].startswith("://") or not parts.netloc:
        raise ValueError(
            f"a {scheme!r} reference must look like {scheme}://host/path "
            "(local files: an absolute path or file:///abs/path)"
        )
    return scheme, None


def local_path(uri: str) -> Path | None:
    """The unresolved local path a reference names, or None for a remote URI.

    The engine reads references with the same rule (``selector.io.models_io.local_path``, which
    raises where this returns None); ``tests/test_contracts.py`` pins both to one table.
    """
    return split_reference(uri)[1]


def check_uri_syntax(uri: str) -> str:
    """Reject references the service can never open; return the reference unchanged.

    Raises ValueError with a message meant for the client (pydantic turns it into a 422).
    Whether this deployment enables a remote scheme is :func:`check_scheme`'s business.
    """
    scheme, path = split_reference(uri)
    if path is None and scheme not in _fsspec_protocols():
        raise ValueError(f"scheme {scheme!r} is not supported")
    return uri


def check_scheme(uri: str, enabled: frozenset[str]) -> None:
    """Raise ValueError unless ``uri`` is local or its remote scheme is in ``enabled``."""
    scheme, path = split_reference(uri)
    if path is None and scheme not in enabled:
        allowed = ", ".join(sorted(enabled)) or "none"
        raise ValueError(
            f"remote {scheme!r} references are not enabled on this server (enabled: {allowed}); "
            "use a local path inside a data root"
        )


def confine(uri: str, roots: list[Path]) -> str:
    """The canonical ``file://`` URI of a local reference if it resolves inside a data root.

    Remote URIs come back unchanged. Raises ValueError naming the roots otherwise.
    """
    path = local_path(uri)
    if path is None:
        return uri
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long
        raise ValueError(f"path cannot be resolved ({exc})") from None
    for root in roots:
        if resolved.is_relative_to(root.resolve()):
            return resolved.as_uri()
    allowed = ", ".join(str(root) for root in roots) or "(none configured)"
    raise ValueError(f"path resolves to {resolved}, outside the data roots: {allowed}")
