"""User inputs: model references and data references (facade over two small modules).

:mod:`selector.io.models_io` turns a torchvision name + weights file, a TorchScript file or a
``"pkg.module:function"`` factory into a module; :mod:`selector.io.datasets_io` turns ImageFolder
directories and tensor files (``.pt``, ``.npz``, CIFAR-10-C ``.npy``) into train/val/test splits.
"""

from selector.io.datasets_io import (
    DataSplits,
    ImageOptions,
    SplitRule,
    load_datasets,
    load_imagefolder_splits,
    load_reference,
    load_tensor_splits,
    stratified_split,
)
from selector.io.models_io import (
    build_torchvision,
    inspection_model,
    load_model,
    load_state_dict_file,
    replace_head,
    torchvision_architectures,
)

__all__ = [
    "DataSplits",
    "ImageOptions",
    "SplitRule",
    "build_torchvision",
    "inspection_model",
    "load_datasets",
    "load_imagefolder_splits",
    "load_model",
    "load_reference",
    "load_state_dict_file",
    "load_tensor_splits",
    "replace_head",
    "stratified_split",
    "torchvision_architectures",
]
