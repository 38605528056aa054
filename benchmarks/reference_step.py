"""MedKLIP's training step as its authors run it: the baseline that `benchmarks/train_step.py` measures ours against.

    import reference_step                                   # from benchmarks/ (train_step.py does this)
    model = reference_step.ReferenceMedKLIP(entity_embeddings, position_embeddings)   # (75, 768), (51, 768)
    step = reference_step.ReferenceStep(model)
    batch = reference_step.loader_batch(grey_uint8, existence, positions, seed=0)     # what their loader yields
    loss = step(batch)                                      # forward, both losses, backward, AdamW

Written from the reference notes (reference/medklip.md sections 1, 4 and 1.6), not from their code: the
architecture, the two loss terms and the optimizer of the official pretraining, run as the official code runs it.

- fp32, NCHW, eager; the knowledge embeddings (BERT CLS of the 75 descriptions and 51 position prompts) are
  computed once, before the model is built, and kept as plain frozen tensors: no text encoder runs in the step.
- Input: the grey radiograph repeated to three channels and normalised with ImageNet's per-channel mean and std,
  as their loader does (PIL grey -> RGB, ToTensor, Normalize). That, and drawing the 8 position candidates per
  entity (1 positive + 7 negatives, Python's `random`), happen in the loader (`loader_batch`), outside the step.
- Image encoder: torchvision ResNet-50 (random init) through layer3 -> (B, 1024, 14, 14) -> per-patch
  Linear 1024 -> 1024, ReLU, Linear 1024 -> 256; no positional encoding.
- Decoder: DETR's sequence-first layers, pre-norm, 4 layers, 4 heads, width 256, feed-forward 1024, dropout 0.1,
  ReLU, a final LayerNorm; queries are a linear map of the entity embeddings. Both attentions return their
  head-averaged weights (`nn.MultiheadAttention`'s default `need_weights=True`), as DETR's layers ask for them.
- Heads: dropout 0.1 on the decoder output; existence Linear 256 -> 2 (two-way softmax); position Linear
  256 -> 768, raw dot products with the 8 gathered position embeddings of every (image, entity).
- Loss: cross-entropy on existence over labels 0/1 (-1 masked) + cross-entropy of the position logits against
  slot 0, over entities that exist; weights 1 and 1.
- Optimizer: `torch.optim.AdamW(lr=1e-4, weight_decay=0.02)` with no decay on biases and 1-d parameters, torch's
  default implementation; no gradient clipping, no autocast.

`load_from_ours` copies one of our `MedKLIP` models (built with the reference decoder: `attention_token_norm` and
`attention_sink` off) into a `ReferenceMedKLIP` so that both compute the same function: the test
`tests/medklip/test_reference_step.py` checks that they give the same loss.
"""

from __future__ import annotations

import random

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NUM_CANDIDATES = 8  # 1 positive + 7 negatives per entity


class ReferenceDecoderLayer(nn.Module):
    """DETR's pre-norm decoder layer, sequence first: (Q, B, D) queries, (T, B, D) memory."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout)
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout1, self.dropout2, self.dropout3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, queries: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.norm1(queries)
        queries = queries + self.dropout1(self.self_attn(x, x, x)[0])  # (Q, B, D)
        x = self.norm2(queries)
        attended, weights = self.multihead_attn(x, memory, memory)  # weights: (B, Q, T), averaged over heads
        queries = queries + self.dropout2(attended)
        x = self.norm3(queries)
        queries = queries + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(x)))))
        return queries, weights


class ReferenceMedKLIP(nn.Module):
    """The official pretraining network (reference/medklip.md section 1), returning what its losses need."""

    def __init__(
        self,
        entity_embeddings: torch.Tensor,
        position_embeddings: torch.Tensor,
        backbone: str = "resnet50",
        d_model: int = 256,
        num_heads: int = 4,
        num_layers: int = 4,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
    ):
        super().__init__()
        # Computed once (their __init__ runs BERT under no_grad), frozen, not trained. Registered as
        # non-persistent buffers only so that `.to(device)` moves them; they are not in the state dict, as theirs.
        self.register_buffer("disease_book", entity_embeddings.float().clone(), persistent=False)  # (75, H)
        self.register_buffer("ana_book", position_embeddings.float().clone(), persistent=False)  # (51, H)
        text_dim = entity_embeddings.shape[1]
        resnet = getattr(torchvision.models, backbone)(weights=None)
        width = resnet.fc.in_features // 2  # layer3's channels: 1024 for ResNet-50
        self.res_features = nn.Sequential(*list(resnet.children())[:-3])  # conv1, bn1, relu, maxpool, layer1-3
        self.res_l1 = nn.Linear(width, width)
        self.res_l2 = nn.Linear(width, d_model)
        self.disease_embedding_layer = nn.Linear(text_dim, d_model)
        self.layers = nn.ModuleList(
            ReferenceDecoderLayer(d_model, num_heads, ffn_dim, dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.dropout_feas = nn.Dropout(dropout)
        self.classifier = nn.Linear(d_model, 2)
        self.cl_fc = nn.Linear(d_model, text_dim)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # Their init: every Linear and attention projection N(0, 0.02), zero bias; convolutions keep torchvision's.
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):
            nn.init.normal_(module.in_proj_weight, std=0.02)
            nn.init.zeros_(module.in_proj_bias)
            nn.init.normal_(module.out_proj.weight, std=0.02)
            nn.init.zeros_(module.out_proj.bias)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images: (B, 3, S, S) normalised floats -> (existence logits (B, 75, 2), position features (B, 75, H))."""
        batch = images.shape[0]
        x = self.res_features(images)  # (B, C, h, w)
        x = x.flatten(2).transpose(1, 2).reshape(-1, x.shape[1])  # (B * T, C): one row per patch
        x = self.res_l2(F.relu(self.res_l1(x)))  # (B * T, D)
        memory = x.reshape(batch, -1, x.shape[-1]).transpose(0, 1)  # (T, B, D)
        queries = self.disease_embedding_layer(self.disease_book).unsqueeze(1).repeat(1, batch, 1)  # (75, B, D)
        for layer in self.layers:
            queries, _ = layer(queries, memory)
        features = self.dropout_feas(self.norm(queries)).transpose(0, 1)  # (B, 75, D)
        return self.classifier(features), self.cl_fc(features)


def reference_loss(
    model: ReferenceMedKLIP,
    logits: torch.Tensor,
    position_features: torch.Tensor,
    existence: torch.Tensor,
    candidates: torch.Tensor,
) -> torch.Tensor:
    """loss_ce + loss_cl, as the official forward computes them.

    Args:
        logits: (B, 75, 2) existence logits; position_features: (B, 75, H).
        existence: (B, 75) labels in {1, 0, -1}; candidates: (B, 75, 8) position indices, the positive first.
    """
    labels = existence.reshape(-1)  # (B * 75,)
    known = labels != -1
    loss_ce = F.cross_entropy(logits.reshape(-1, 2)[known], labels[known])
    # The position contrast of every (image, entity), absent ones included, masked afterwards.
    gathered = model.ana_book[candidates].reshape(-1, candidates.shape[-1], model.ana_book.shape[-1])  # (B*75, 8, H)
    scores = torch.bmm(gathered, position_features.reshape(-1, position_features.shape[-1], 1)).squeeze(-1)
    present = labels == 1  # (B * 75,)
    targets = torch.zeros(len(labels), dtype=torch.long, device=labels.device)  # the positive is slot 0
    loss_cl = F.cross_entropy(scores[present], targets[present])
    return loss_ce + loss_cl


def reference_optimizer(model: nn.Module, lr: float = 1e-4, weight_decay: float = 0.02) -> torch.optim.AdamW:
    """AdamW with no decay on biases and 1-d parameters (their `add_weight_decay`), torch's default kernels."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim <= 1 or name.endswith(".bias") else decay).append(parameter)
    groups = [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


def sample_candidates(existence: torch.Tensor, positions: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """(B, 75, 8) position indices per (image, entity), as their dataset draws them with Python's `random`.

    For an entity that exists: one of its positive positions, then 7 distinct ones among the others; for the rest 8
    positions that are not positive (unused: the loss masks them).
    """
    rng = random.Random(seed)
    batch, num_positions, num_entities = positions.shape
    out = torch.empty(batch, num_entities, NUM_CANDIDATES, dtype=torch.long)
    for b in range(batch):
        for e in range(num_entities):
            column = positions[b, :, e].tolist()
            positive = [p for p in range(num_positions) if column[p] == 1]
            others = [p for p in range(num_positions) if column[p] != 1]
            if existence[b, e] == 1 and positive:
                out[b, e] = torch.tensor([rng.choice(positive)] + rng.sample(others, NUM_CANDIDATES - 1))
            else:
                out[b, e] = torch.tensor(rng.sample(others, NUM_CANDIDATES))
    return out


def loader_batch(images: torch.Tensor, existence: torch.Tensor, positions: torch.Tensor, seed: int = 0) -> dict:
    """What their DataLoader yields for grey uint8 images (B, 1, S, S): RGB floats normalised per channel, labels,
    and the 8 position candidates per entity."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    rgb = images.float().div(255).expand(-1, 3, -1, -1)  # grey -> RGB: three equal channels
    return {
        "image": ((rgb - mean) / std).contiguous(),  # (B, 3, S, S), NCHW
        "existence": existence.long(),
        "candidates": sample_candidates(existence, positions, seed),
    }


class ReferenceStep:
    """One optimisation step of their loop: zero_grad, forward, loss, backward, AdamW step."""

    def __init__(self, model: ReferenceMedKLIP, optimizer: torch.optim.Optimizer | None = None):
        self.model = model.train()
        self.optimizer = optimizer or reference_optimizer(model)

    def loss(self, batch: dict) -> torch.Tensor:
        logits, position_features = self.model(batch["image"])
        return reference_loss(self.model, logits, position_features, batch["existence"], batch["candidates"])

    def __call__(self, batch: dict) -> torch.Tensor:
        self.optimizer.zero_grad()
        loss = self.loss(batch)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


@torch.no_grad()
def load_from_ours(reference: ReferenceMedKLIP, ours: nn.Module) -> ReferenceMedKLIP:
    """Copies our `MedKLIP` (reference decoder: no token norm, no attention sink) into `reference`, so that both
    compute the same function on the same grey images.

    conv1: ours sees one channel normalised by the grey mean and std, theirs three channels normalised by
    ImageNet's. With their channel weights w_c = w * std_c / (3 * grey std), the sum over channels of
    w_c * (x - mean_c) / std_c is w * (x - mean(mean_c)) / grey std, which is ours exactly (the grey mean is the
    mean of ImageNet's, and zero padding is zero in both). Existence: ours has one logit z; a two-way softmax over
    (0, z) gives the same cross-entropy.
    """
    from medklip.model.network import GRAY_STD

    if ours.config.attention_token_norm or ours.config.attention_sink:
        raise ValueError("ours must use the reference decoder (model.attention_token_norm and attention_sink off)")
    state = ours.state_dict()
    mapped = {}
    stage_to_child = {"0": None, "1": "4", "2": "5", "3": "6"}
    for name, value in state.items():
        parts = name.split(".")
        if parts[0] == "image_encoder" and parts[1] == "stages":
            stage, rest = parts[2], parts[3:]
            if stage == "0":  # Sequential(conv1, bn1, relu, maxpool) -> res_features.0 and .1
                mapped[".".join(["res_features", rest[0], *rest[1:]])] = value
            else:
                mapped[".".join(["res_features", stage_to_child[stage], *rest])] = value
        elif parts[0] == "image_encoder" and parts[1] == "project":
            mapped[".".join([{"0": "res_l1", "2": "res_l2"}[parts[2]], *parts[3:]])] = value
        elif parts[0] == "query_projection":
            mapped[".".join(["disease_embedding_layer", *parts[1:]])] = value
        elif parts[0] == "layers":
            renamed = {
                "norm_self": "norm1", "self_attention": "self_attn", "norm_cross": "norm2",
                "cross_attention": "multihead_attn", "norm_ffn": "norm3",
            }  # fmt: skip
            if parts[2] == "ffn":
                mapped[".".join(["layers", parts[1], {"0": "linear1", "3": "linear2"}[parts[3]], *parts[4:]])] = value
            else:
                mapped[".".join(["layers", parts[1], renamed[parts[2]], *parts[3:]])] = value
        elif parts[0] == "norm":
            mapped[name] = value
        elif parts[0] == "position_head":
            mapped[".".join(["cl_fc", *parts[1:]])] = value
        elif parts[0] == "exist_head":
            pair = torch.zeros((2, *value.shape[1:]), dtype=value.dtype)
            pair[1] = value[0]
            mapped[".".join(["classifier", *parts[1:]])] = pair
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    mapped["res_features.0.weight"] = mapped["res_features.0.weight"] * std / (3 * GRAY_STD)  # (64, 3, 7, 7)
    reference.load_state_dict(mapped, strict=True)
    reference.disease_book.copy_(ours.entity_embeddings)
    reference.ana_book.copy_(ours.position_embeddings)
    return reference
