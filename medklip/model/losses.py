"""MedKLIP's training objective as one module returning a dict of named terms (reference/medklip.md section 4).

    loss_fn = MedKLIPLoss(LossConfig(), position_embeddings)
    terms = loss_fn(model(images), existence, positions, position_embeddings, draw=batch_number)
    terms["loss"].backward()      # also terms["existence"], terms["position"], terms["semantic"]

- existence: BCE over (image, entity) pairs whose label is 0 or 1; -1 (not mentioned or uncertain) is masked out.
- position: for each present entity with a known position, InfoNCE over 1 positive and `num_negatives` negatives
  drawn uniformly from the positions that are not positive, scored by raw dot products with the frozen position
  embeddings (no temperature, no normalisation: as the paper). Entities without any positive position are skipped.
- box (only when training has boxes, `train.boxes`; not in MedKLIP): for each (image, entity) with a box in view, -log
  of the share of its cross-attention (averaged over heads and decoder layers, as the heatmaps; the sink left out;
  before attention dropout, so the target carries no train-time noise) that falls on the patch tokens inside the box
  (`batch["box_mask"]`, `medklip.data.boxes`), summed and divided by the batch size: a batch with few boxes pulls less
  than one with many, never as hard as if every image had them.
- semantic (optional, weight 0 by default, not in MedKLIP): 1 - cos(pooled image features, mean knowledge features of
  the image's present entities), for images with at least one present entity.

Sampling is a pure function of (seed, draw): the trainer derives `draw` from (seed, rank, epoch, micro-batch), so
ranks and the micro-batches of an accumulation window draw their own negatives, and a resumed run draws the same
ones as an uninterrupted run.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from medklip.config import LossConfig


class MedKLIPLoss(nn.Module):
    """L = existence + position_weight * position + box_weight * box + semantic_weight * semantic."""

    def __init__(self, config: LossConfig, entity_mask: torch.Tensor | None = None, seed: int = 0):
        super().__init__()
        self.config = config
        self.seed = seed
        # Entities that take part in the losses (all 75, or 68 without MedKLIP's "unseen" ones).
        self.register_buffer(
            "entity_mask", entity_mask if entity_mask is not None else torch.ones(75, dtype=torch.bool)
        )

    def forward(
        self,
        outputs: dict[str, torch.Tensor],
        existence: torch.Tensor,
        positions: torch.Tensor,
        position_embeddings: torch.Tensor,
        draw: int = 0,
        box_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Named loss terms.

        Args:
            outputs: the model's outputs (`exist_logits` (B, 75), `position_features` (B, 75, H), `image_features`
                (B, D), `knowledge_features` (75, D)).
            existence: (B, 75) labels in {1, 0, -1}.
            positions: (B, 51, 75) labels in {1, 0, -1}.
            position_embeddings: (51, H) frozen position embeddings.
            draw: which draw of the negative sampling (with the loss's seed): the same draw, the same negatives.
            box_mask: (B, 75, T) bool patch tokens inside each entity's boxes; needs `outputs["attention"]`
                (B, layers, 75, T). None: no box term.
        """
        logits = outputs["exist_logits"].float()  # (B, 75)
        known = (existence >= 0) & self.entity_mask  # (B, 75)
        if known.any():
            existence_loss = F.binary_cross_entropy_with_logits(logits[known], existence[known].float())
        else:
            existence_loss = logits.sum() * 0.0  # an all-masked batch: no signal, but a graph for DDP
        terms = {"existence": existence_loss}

        position_loss = self._position_loss(
            outputs["position_features"], existence, positions, position_embeddings, draw
        )
        terms["position"] = position_loss
        total = existence_loss + self.config.position_weight * position_loss
        if box_mask is not None:
            terms["box"] = self._box_loss(outputs["attention"], box_mask)
            total = total + self.config.box_weight * terms["box"]
        if self.config.semantic_weight > 0:
            terms["semantic"] = self._semantic_loss(outputs, existence)
            total = total + self.config.semantic_weight * terms["semantic"]
        terms["loss"] = total
        return terms

    def position_candidates(
        self, existence: torch.Tensor, positions: torch.Tensor, draw: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Which (image, entity) pairs the position term scores, and the positions it scores them against.

        Returns:
            valid: (B, 75) bool, present entities (of `entity_mask`) with at least one positive position.
            candidates: (N, 1 + k) position indices for the N valid pairs in row-major order, the positive first;
                k = `num_negatives`, or fewer where some pair has fewer non-positive positions. None if N = 0.
        """
        positive = positions.permute(0, 2, 1) == 1  # (B, 75, 51)
        valid = (existence == 1) & self.entity_mask & positive.any(-1)  # (B, 75)
        if not valid.any():
            return valid, None
        positive = positive[valid]  # (N, 51)
        generator = torch.Generator(device="cpu").manual_seed((self.seed * 1_000_003 + draw) % 2**64)
        scores = torch.rand(positive.shape, generator=generator).to(positive.device)  # (N, 51)
        # Uniform choice of one positive; uniform choice of k distinct negatives among the non-positives.
        chosen_positive = scores.masked_fill(~positive, -1.0).argmax(-1, keepdim=True)  # (N, 1)
        k = min(self.config.num_negatives, int((~positive).sum(-1).min()))
        negatives = scores.masked_fill(positive, -1.0).topk(k, dim=-1).indices  # (N, k)
        return valid, torch.cat([chosen_positive, negatives], dim=-1)  # (N, 1 + k): the positive first

    def _position_loss(self, features, existence, positions, position_embeddings, draw) -> torch.Tensor:
        valid, candidates = self.position_candidates(existence, positions, draw)
        if candidates is None:
            return features.sum() * 0.0
        targets = position_embeddings[candidates].float()  # (N, 1 + k, H)
        logits = torch.einsum("nh,nkh->nk", features[valid].float(), targets)  # raw dot products
        return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))

    def _box_loss(self, attention: torch.Tensor, box_mask: torch.Tensor) -> torch.Tensor:
        weights = attention.float().mean(dim=1)  # (B, 75, T): over layers; the model averaged the heads
        boxed = box_mask.any(dim=-1) & self.entity_mask  # (B, 75)
        if not boxed.any():
            return weights.sum() * 0.0
        inside = (weights * box_mask).sum(dim=-1)[boxed]  # (N,) attention on the box's patches
        total = weights.sum(dim=-1)[boxed]  # (N,) attention on all patches (the sink takes the rest)
        return (total.clamp(min=1e-12).log() - inside.clamp(min=1e-12).log()).sum() / len(box_mask)  # per image

    def _semantic_loss(self, outputs, existence) -> torch.Tensor:
        present = ((existence == 1) & self.entity_mask).float()  # (B, 75)
        has_any = present.sum(-1) > 0
        if not has_any.any():
            return outputs["image_features"].sum() * 0.0
        knowledge = present @ outputs["knowledge_features"].float() / present.sum(-1, keepdim=True).clamp(min=1)
        cosine = F.cosine_similarity(outputs["image_features"].float(), knowledge, dim=-1)  # (B,)
        return (1 - cosine[has_any]).mean()
