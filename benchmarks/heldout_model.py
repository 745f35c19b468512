"""A held-out source model: another depth, width and seed, trained by the built-in recipe.

Issue 12 says the diagnosis will be checked on models outside this repository. This one is
ResNet-20 (three basic blocks per stage, not two) with widths 12/24/48 (not 16/32/64), its
initialisation and data order drawn from seed 1 (not 0), trained on the same clean source
digits by the same recipe as ``mnist-resnet`` (``selector.builtin.pretrain``). Its layer groups
are again block1-3 and head, so the benchmarks' parts apply unchanged. The product does not
know it: it is built and cached here, under ``<data dir>/models/heldout-resnet20/``.

Shift names ``resnet20:SHIFT`` (SHIFT a built-in shift defined against ``mnist-resnet``: an
input corruption, label_flip or clean) put the built-in target data on this model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from torch import nn

NAME = "heldout-resnet20"
PREFIX = "resnet20:"
DEPTH, WIDTHS, SEED = 20, (12, 24, 48), 1
SOURCE = "mnist-resnet"  # whose source data and recipe it is trained with
NUM_CLASSES = 10


def build(num_classes: int = NUM_CLASSES) -> nn.Module:
    from selector.cifar_resnet import cifar_resnet

    return cifar_resnet(depth=DEPTH, num_classes=num_classes, in_channels=1, widths=WIDTHS)


def weights_path(data_dir: str | os.PathLike[str] | None = None) -> Path:
    from selector.builtin import cache

    return cache.data_dir(data_dir) / "models" / NAME / "weights.safetensors"


def load(data_dir: str | os.PathLike[str] | None = None) -> nn.Module:
    """The trained model in eval mode; trained (about a minute on two cores) and cached on
    first use. The file is written whole or not at all, so workers never read half of it."""
    from safetensors.torch import load_file, save_file

    path = weights_path(data_dir)
    if not path.exists():
        from selector.builtin.pretrain import accuracy, train_source
        from selector.builtin.sources import get_source

        spec = get_source(SOURCE)
        data = spec.data()
        model, seconds = train_source(*data.train, NUM_CLASSES, spec.recipe, SEED, build=build)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(partial))
        manifest = {"name": NAME, "depth": DEPTH, "widths": list(WIDTHS), "seed": SEED,
                    "trained_like": SOURCE, "seconds": round(seconds, 1),
                    "accuracy": {key: round(accuracy(model, *arrays), 4)
                                 for key, arrays in data.evaluations.items()}}
        (path.parent / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(partial, path)
    model = build()
    model.load_state_dict(load_file(str(path)))
    return model.eval()


def manifest(data_dir: str | os.PathLike[str] | None = None) -> dict[str, object]:
    load(data_dir)
    return json.loads((weights_path(data_dir).parent / "manifest.json").read_text())


if __name__ == "__main__":
    import sys

    print(json.dumps(manifest(sys.argv[1] if len(sys.argv) > 1 else None), indent=2))
