"""Losses on tiny tensors: masking, position sampling, the semantic term, determinism per step."""

from __future__ import annotations

import torch

from medklip.config import LossConfig
from medklip.model.losses import MedKLIPLoss


def outputs(batch: int = 2, dim: int = 8, requires_grad: bool = True) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {
        "exist_logits": torch.randn(batch, 75, requires_grad=requires_grad),
        "position_features": torch.randn(batch, 75, dim, requires_grad=requires_grad),
        "image_features": torch.randn(batch, 16, requires_grad=requires_grad),
        "knowledge_features": torch.randn(75, 16),
    }


def labels(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    existence = torch.full((batch, 75), -1)
    positions = torch.full((batch, 51, 75), -1)
    return existence, positions


def test_all_masked_batch_is_zero_and_differentiable():
    out = outputs()
    existence, positions = labels()
    terms = MedKLIPLoss(LossConfig())(out, existence, positions, torch.randn(51, 8))
    assert terms["loss"].item() == 0.0 and torch.isfinite(terms["loss"])
    terms["loss"].backward()
    assert out["exist_logits"].grad is not None and out["exist_logits"].grad.abs().sum() == 0


def test_existence_loss_ignores_masked_entries():
    out = outputs()
    existence, positions = labels()
    existence[0, 8] = 1
    existence[1, 10] = 0
    terms = MedKLIPLoss(LossConfig(position_weight=0))(out, existence, positions, torch.randn(51, 8))
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.stack([out["exist_logits"][0, 8], out["exist_logits"][1, 10]]), torch.tensor([1.0, 0.0])
    )
    assert torch.allclose(terms["existence"], expected)


def test_position_loss_prefers_the_true_position_and_is_deterministic_per_draw():
    existence, positions = labels(1)
    existence[0, 8] = 1
    positions[0, 5, 8] = 1  # effusion at position 5
    embeddings = torch.eye(51, 51)  # position i is the one-hot e_i
    features = torch.zeros(1, 75, 51)
    out = {**outputs(1, 51, requires_grad=False), "position_features": features}
    loss = MedKLIPLoss(LossConfig())
    neutral = loss(out, existence, positions, embeddings, draw=3)["position"]
    assert torch.allclose(neutral, torch.log(torch.tensor(8.0)))  # uniform over 1 positive + 7 negatives
    out["position_features"] = features.clone()
    out["position_features"][0, 8, 5] = 10.0  # points at the positive
    assert loss(out, existence, positions, embeddings, draw=3)["position"] < 1e-3
    out["position_features"] = features.clone()
    out["position_features"][0, 8] = 10.0  # points everywhere except the positive
    out["position_features"][0, 8, 5] = 0.0
    first = loss(out, existence, positions, embeddings, draw=3)["position"]
    assert first > 5 and torch.equal(first, loss(out, existence, positions, embeddings, draw=3)["position"])


def test_position_loss_skips_absent_and_unlocated_entities():
    existence, positions = labels(1)
    existence[0, 8] = 0
    positions[0, 5, 8] = 1  # a position for an absent entity: ignored
    existence[0, 9] = 1  # present but no positive position: skipped
    terms = MedKLIPLoss(LossConfig())(outputs(1), existence, positions, torch.randn(51, 8))
    assert terms["position"].item() == 0.0


def test_semantic_term_only_when_weighted_and_only_for_images_with_findings():
    existence, positions = labels()
    existence[0, 8] = 1
    plain = MedKLIPLoss(LossConfig())(outputs(), existence, positions, torch.randn(51, 8))
    assert "semantic" not in plain
    weighted = MedKLIPLoss(LossConfig(semantic_weight=0.5))(outputs(), existence, positions, torch.randn(51, 8))
    out = outputs()
    cosine = torch.nn.functional.cosine_similarity(out["image_features"][0], out["knowledge_features"][8], dim=0)
    assert torch.allclose(weighted["semantic"], 1 - cosine)
    assert torch.allclose(weighted["loss"], weighted["existence"] + weighted["position"] + 0.5 * weighted["semantic"])


def test_excluded_entities_do_not_count():
    existence, positions = labels(1)
    existence[0, 20] = 1  # pneumonia, one of the "unseen" entities
    mask = torch.ones(75, dtype=torch.bool)
    mask[20] = False
    terms = MedKLIPLoss(LossConfig(), entity_mask=mask)(outputs(1), existence, positions, torch.randn(51, 8))
    assert terms["existence"].item() == 0.0
