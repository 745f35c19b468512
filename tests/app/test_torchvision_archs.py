"""Contract: the API's static list of torchvision builders is the installed torchvision's.

The API never imports torchvision; :data:`app.schemas.torchvision_archs.TORCHVISION_ARCHS`
stands in for it at submit. The selector builds with ``torchvision.models.get_model`` and
accepts :func:`selector.io.models_io.torchvision_architectures`; both must name the same set.
"""

from __future__ import annotations

import pytest

from app.schemas.torchvision_archs import TORCHVISION_ARCHS


def test_static_builder_names_match_torchvision() -> None:
    pytest.importorskip("torchvision")
    from selector.io.models_io import torchvision_architectures

    installed = set(torchvision_architectures())
    missing, stale = installed - TORCHVISION_ARCHS, TORCHVISION_ARCHS - installed
    assert not missing and not stale, f"add {sorted(missing)}, remove {sorted(stale)}"
