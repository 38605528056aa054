"""The benchmark's baseline (benchmarks/reference_step.py) computes what our model computes, given the same weights.

`benchmarks/train_step.py` compares our training step with MedKLIP's as its authors run it; the speed-up means
something only if both do the same arithmetic. A tiny config (the `debug` sizes, dropout off) keeps it to seconds.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from medklip.config import load_config
from medklip.model.losses import MedKLIPLoss
from medklip.model.network import GRAY_STD, MedKLIP

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "reference_step.py"
spec = importlib.util.spec_from_file_location("reference_step", PATH)
reference_step = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reference_step)

REFERENCE_DECODER = {"model.attention_token_norm": False, "model.attention_sink": False, "model.dropout": 0.0}


def consistent_labels(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Position labels in {1, 0, -1}; existence derived from them as MedKLIP's dataset does (any 1, else any 0)."""
    generator = torch.Generator().manual_seed(seed)
    positions = torch.full((batch, 51, 75), -1)
    draw = torch.rand(batch, 51, 75, generator=generator)
    positions[draw < 0.03] = 1
    positions[(draw >= 0.03) & (draw < 0.08)] = 0
    existence = torch.where((positions == 1).any(1), 1, torch.where((positions == 0).any(1), 0, -1))
    return existence, positions


def pair(seed: int = 0, **overrides):
    config = load_config("debug", {**REFERENCE_DECODER, **overrides})
    torch.manual_seed(seed)
    ours = MedKLIP(config.model, torch.randn(75, 24), torch.randn(51, 24)).train()
    m = config.model
    reference = reference_step.ReferenceMedKLIP(
        ours.entity_embeddings, ours.position_embeddings, m.backbone, m.d_model, m.num_heads,
        m.num_decoder_layers, m.ffn_dim, m.dropout,
    )  # fmt: skip
    reference_step.load_from_ours(reference, ours)
    return config, ours, reference.train()


def losses(config, ours, reference, batch: int = 4, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 1, 64, 64), dtype=torch.uint8, generator=generator)
    existence, positions = consistent_labels(batch, seed)
    loss_fn = MedKLIPLoss(config.loss)
    ours_loss = loss_fn(ours(images), existence, positions, ours.position_embeddings, draw=3)["loss"]

    loaded = reference_step.loader_batch(images, existence, positions, seed=seed)
    valid, candidates = loss_fn.position_candidates(existence, positions, draw=3)
    loaded["candidates"][valid] = candidates  # the same negatives as ours drew; the rest are masked anyway
    reference_loss = reference_step.ReferenceStep(reference).loss(loaded)
    return ours_loss, reference_loss


def test_reference_and_ours_compute_the_same_loss_in_fp32():
    config, ours, reference = pair()
    ours_loss, reference_loss = losses(config, ours, reference)
    assert ours_loss.dtype == reference_loss.dtype == torch.float32
    assert ours_loss.item() > 0.1  # a real loss, not a masked-out zero
    assert abs(ours_loss.item() - reference_loss.item()) < 1e-5

    ours_loss.backward()
    reference_loss.backward()  # and the gradients agree where the parameters are the same tensors' copies
    assert torch.allclose(ours.image_encoder.project[2].weight.grad, reference.res_l2.weight.grad, atol=1e-6)
    assert torch.allclose(ours.layers[0].ffn[0].weight.grad, reference.layers[0].linear1.weight.grad, atol=1e-6)
    # conv1: theirs is w * std_c / (3 * grey std) per channel, so d/dw = sum_c d/dw_c * std_c / (3 * grey std).
    std = torch.tensor(reference_step.IMAGENET_STD).view(1, 3, 1, 1)
    chained = (reference.res_features[0].weight.grad * std).sum(1, keepdim=True) / (3 * GRAY_STD)
    assert torch.allclose(ours.image_encoder.stages[0][0].weight.grad, chained, rtol=1e-4, atol=1e-6)


def test_negative_control_other_weights_give_another_loss():
    config, ours, reference = pair()
    with torch.no_grad():
        reference.layers[0].linear2.weight.add_(0.05 * torch.randn_like(reference.layers[0].linear2.weight))
    ours_loss, reference_loss = losses(config, ours, reference)
    assert abs(ours_loss.item() - reference_loss.item()) > 1e-4


def test_ours_with_the_grounding_additions_is_refused():
    config = load_config("debug")
    torch.manual_seed(0)
    ours = MedKLIP(config.model, torch.randn(75, 24), torch.randn(51, 24))
    reference = reference_step.ReferenceMedKLIP(
        ours.entity_embeddings, ours.position_embeddings, "resnet18", 32, 2, 1, 64
    )
    with pytest.raises(ValueError, match="reference decoder"):
        reference_step.load_from_ours(reference, ours)


def test_loader_candidates_put_a_positive_first_and_seven_distinct_others():
    existence, positions = consistent_labels(3, seed=5)
    candidates = reference_step.sample_candidates(existence, positions, seed=0)
    assert candidates.shape == (3, 75, 8)
    for b, e in zip(*torch.nonzero(existence == 1, as_tuple=True), strict=True):
        row = candidates[b, e]
        assert positions[b, row[0], e] == 1 and (positions[b, row[1:], e] != 1).all()
        assert len(set(row.tolist())) == 8
