"""Fine-tuned weights as a small patch over the pretrained model.

Surgical fine-tuning changes only the tuned groups, so the useful artifact is the set of tensors
that differ from the pretrained weights: for a block-1 trial that is a few percent of the model.
A patch is a safetensors file (no pickle: safe to load from anyone) whose metadata carries the
manifest; ``app.client.apply_patch`` loads it into a model after checking every key and shape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import safe_open, save_file

FORMAT = "surgical-patch/1"


def diff_state_dict(
    pretrained: Mapping[str, torch.Tensor], finetuned: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Tensors of ``finetuned`` that differ (bit for bit) from ``pretrained``."""
    missing = sorted(set(finetuned) - set(pretrained))
    if missing:
        raise KeyError(f"fine-tuned weights have keys the pretrained model lacks: {missing[:5]}")
    return {
        name: tensor.detach().cpu().contiguous().clone()
        for name, tensor in finetuned.items()
        if not torch.equal(tensor.detach().cpu(), pretrained[name].detach().cpu())
    }


def save_weights(path: str | Path, tensors: Mapping[str, torch.Tensor], manifest: Mapping[str, Any]) -> Path:
    """Write tensors with a JSON manifest in the safetensors metadata (strings only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": FORMAT, "manifest": json.dumps(manifest, sort_keys=True, default=str)}
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def read_manifest(path: str | Path) -> dict[str, Any]:
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    return json.loads(metadata.get("manifest", "{}"))
