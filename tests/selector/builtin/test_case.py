"""``load_case`` with the real ``mnist-resnet`` (trained once per session)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from selector.builtin import Case, UnknownChoiceError, load_case, recommended_severity


@torch.no_grad()
def accuracy(model: torch.nn.Module, dataset) -> float:
    x, y = dataset.tensors
    return float((model(x).argmax(1) == y).float().mean())


def test_case_fields_follow_the_contract(clean_model):
    case = load_case(shift="impulse_noise", severity=4, seed=0)
    assert isinstance(case, Case)
    assert [f.name for f in dataclasses.fields(Case)] == [
        "name", "shift", "kind", "severity", "seed", "model", "model_name", "train", "val",
        "test", "num_classes"]
    assert (case.name, case.shift, case.kind, case.severity, case.seed) == (
        "mnist", "impulse_noise", "input", 4, 0)
    assert case.model_name == "mnist-resnet" and case.num_classes == 10
    assert (len(case.train), len(case.val), len(case.test)) == (1000, 200, 800)
    assert not case.model.training
    assert case.model is not load_case(shift="impulse_noise", severity=4).model  # fresh copy


def test_source_model_is_accurate_on_clean_target_and_hurt_by_calibrated_shift(clean_model):
    clean = load_case(shift="clean", n_per_class=1)
    assert clean.kind == "none" and clean.severity is None
    clean_acc = accuracy(clean.model, clean.test)
    assert clean_acc > 0.95
    shifted = load_case(shift="impulse_noise", severity=None, n_per_class=1)
    assert shifted.severity == recommended_severity("impulse_noise")
    shifted_acc = accuracy(shifted.model, shifted.test)
    assert shifted_acc < clean_acc - 0.2
    assert shifted_acc > 0.15  # calibrated: hurt, not destroyed


def test_label_flip_uses_the_clean_model(clean_model):
    case = load_case(shift="label_flip", severity=5, n_per_class=1)
    assert case.kind == "output" and case.severity is None and case.model_name == "mnist-resnet"
    assert accuracy(case.model, case.test) < 0.05  # every label moved


def test_bad_arguments_raise_before_any_training():
    with pytest.raises(UnknownChoiceError, match="'cifar'.*'mnist'"):
        load_case("cifar")
    with pytest.raises(UnknownChoiceError, match="shift 'snow'"):
        load_case(shift="snow")
    with pytest.raises(ValueError, match="severity 6"):
        load_case(shift="rotate", severity=6)
    with pytest.raises(UnknownChoiceError, match="mnist-resnet-subpop"):
        load_case(shift="subpopulation", model="mnist-resnet")
    with pytest.raises(UnknownChoiceError, match="builtin model 'resnet50'"):
        load_case(shift="rotate", model="resnet50")
    with pytest.raises(ValueError, match="n_per_class"):
        load_case(shift="rotate", n_per_class=500)
