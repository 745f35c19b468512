"""End to end on real data: pretrain on sklearn's digits, shift the input, and check that
surgical fine-tuning of the first block recovers accuracy (the paper's input-level case)."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from selector import discover_groups, surgical_finetune
from selector.cifar_resnet import CifarResNet


def test_tuning_block1_recovers_from_an_input_shift(digits) -> None:
    x, y = digits
    torch.manual_seed(0)
    source = CifarResNet(depth=8, widths=(8, 16, 32), in_channels=1).eval()
    pretrained = surgical_finetune(source, "all", TensorDataset(x[:900], y[:900]),
                                   TensorDataset(x[900:1100], y[900:1100]),
                                   lr=1e-2, epochs=6, bn_mode="train")
    assert pretrained.best_val_acc > 0.9
    source.load_state_dict(pretrained.state_dict)

    def shift(images: torch.Tensor) -> torch.Tensor:  # low contrast on a grey background
        return 0.3 * images + 0.5

    target = [TensorDataset(shift(x[a:b]), y[a:b]) for a, b in ((1100, 1300), (1300, 1400),
                                                                 (1400, 1797))]
    none = surgical_finetune(source, [], *target, lr=1e-2, epochs=5)
    block1 = surgical_finetune(source, ["block1"], *target, lr=1e-2, epochs=5)
    head = surgical_finetune(source, ["head"], *target, lr=1e-2, epochs=5)
    assert block1.best_val_acc > none.initial_val_acc + 0.2
    assert block1.test_acc > none.test_acc + 0.2
    assert block1.test_acc >= head.test_acc
    assert block1.tuned_share < 0.1  # a small part of the model
    assert block1.tuned_parameter_names == list(discover_groups(source)[0].parameters)
