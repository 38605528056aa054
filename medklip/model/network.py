"""The MedKLIP network, top to bottom: image -> patch tokens; entity knowledge -> queries; decoder; heads.

    from medklip.config import load_config
    from medklip.model.network import MedKLIP
    model = MedKLIP.build(load_config("debug").model)     # encodes the knowledge once
    out = model(images)                                     # images: (B, 1, S, S) uint8
    out["exist_logits"]                                     # (B, 75): P(present) = sigmoid
    out["position_features"]                                # (B, 75, H_text): for the position-contrastive loss
    model(images, return_attention=True)["attention"]       # (B, layers, 75, tokens): medklip.model.grounding

Faithful to the paper (reference/medklip.md section 1): ResNet cut after layer3 (stride 16, 196 tokens at 224 px;
`model.patch_stride: 8` cuts after layer2 instead, a grid twice as fine for small inputs such as `demo`'s 128 px), a
per-token MLP to d_model, no positional encoding; the 75 queries are a linear map of the frozen text embeddings of
our entity descriptions; a pre-norm transformer decoder (self-attention over the queries, cross-attention to the
patch tokens, FFN) with a final LayerNorm; an existence head and a position head (a map into the text space, scored
against the 51 frozen position embeddings). The existence head has one logit per entity (BCE), equivalent to the
reference's two-way softmax. The text embeddings are buffers: saved in the checkpoint, never recomputed per step.

Two additions for grounding, both on by default (`model.attention_token_norm`, `model.attention_sink`; both off is
the reference, and checkpoints written before them load that way): the patch tokens end in a LayerNorm, so the
cross-attention follows what a patch shows rather than how large its token is; and each cross-attention layer has
one learned key/value beside the patches (`add_bias_kv`), a place for attention that no patch deserves. Without
them the queries of a `demo` model piled their attention on a few high-norm central patches: pointing game 0.19,
0.45 with both on the 8 x 8 grid of layer3, 0.48 on `demo`'s 16 x 16 grid of layer2 (README, Evaluation).
"""

from __future__ import annotations

import functools
from contextlib import contextmanager, nullcontext

import torch
import torch.nn as nn
import torchvision
from torch.utils.checkpoint import checkpoint

from medklip.config import ModelConfig
from medklip.vocabulary import ENTITIES, POSITIONS

GRAY_MEAN, GRAY_STD = 0.449, 0.226  # ImageNet's per-channel statistics averaged to one channel


PATCH_STRIDES = (8, 16)  # pixels per patch token side: tokens from ResNet layer2 or layer3


@contextmanager
def batch_statistics_frozen(module: nn.Module):
    """Whatever runs inside leaves the running statistics of `module`'s BatchNorm layers as they were: gradient
    checkpointing's recomputation of a stage must not count its batch a second time (the forward already did)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for norm, (mean, variance, count) in zip(norms, saved, strict=True):
                norm.running_mean.copy_(mean)
                norm.running_var.copy_(variance)
                norm.num_batches_tracked.copy_(count)


def _checkpoint_contexts(stage: nn.Module):
    """(forward, recomputation) contexts for `torch.utils.checkpoint`: BatchNorm statistics count the forward only."""
    return nullcontext(), batch_statistics_frozen(stage)


class ImageEncoder(nn.Module):
    """ResNet through layer3 (or layer2) on one grayscale channel, then a per-token MLP and LayerNorm.

    (B, 1, S, S) -> (B, T, D) with T = (S / patch_stride) ** 2: through layer3 at stride 16 (MedKLIP), or through
    layer2 at stride 8, a grid twice as fine and a cheaper network for small inputs (the `demo` preset's 16 x 16 at
    128 px).
    """

    def __init__(
        self,
        backbone: str,
        d_model: int,
        weights: str | None = None,
        token_norm: bool = True,
        patch_stride: int = 16,
    ):
        super().__init__()
        if patch_stride not in PATCH_STRIDES:
            raise ValueError(f"model.patch_stride must be one of {sorted(PATCH_STRIDES)}, got {patch_stride!r}")
        resnet = getattr(torchvision.models, backbone)(weights=None)
        if weights:
            resnet.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        # A grayscale radiograph repeated to RGB is the same as one input channel with conv1's weights summed.
        conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        conv1.weight.data.copy_(resnet.conv1.weight.data.sum(dim=1, keepdim=True))
        stages = [nn.Sequential(conv1, resnet.bn1, resnet.relu, resnet.maxpool), resnet.layer1, resnet.layer2]
        if patch_stride == 16:
            stages.append(resnet.layer3)
        self.stages = nn.ModuleList(stages)
        following = resnet.layer3 if patch_stride == 8 else resnet.layer4
        width = following[0].conv1.in_channels  # the last stage's output: 256 (stride 16) or 128 for resnet18/34
        self.project = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, d_model))
        if token_norm:
            self.project.append(nn.LayerNorm(d_model))
        self.gradient_checkpointing = False
        self.channels_last = False

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div(255).sub(GRAY_MEAN).div(GRAY_STD)  # (B, 1, S, S)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for stage in self.stages:
            if self.gradient_checkpointing and self.training:
                contexts = functools.partial(_checkpoint_contexts, stage)
                x = checkpoint(stage, x, use_reentrant=False, context_fn=contexts)
            else:
                x = stage(x)
        tokens = x.flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, T, C)
        return self.project(tokens)  # (B, T, D)


class DecoderLayer(nn.Module):
    """Pre-norm: x += SelfAttn(LN x); x += CrossAttn(LN x, memory [+ sink]); x += FFN(LN x)."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float, sink: bool = True):
        super().__init__()
        self.norm_self = nn.LayerNorm(d_model)
        self.self_attention = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.norm_cross = nn.LayerNorm(d_model)
        self.cross_attention = nn.MultiheadAttention(  # add_bias_kv: one learned key/value after the patches
            d_model, num_heads, dropout=dropout, batch_first=True, add_bias_kv=sink
        )
        self.norm_ffn = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, d_model)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, queries: torch.Tensor, memory: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.norm_self(queries)
        queries = queries + self.dropout(self.self_attention(x, x, x, need_weights=False)[0])  # (B, Q, D)
        x = self.norm_cross(queries)
        if need_weights:
            attended, weights = self._cross_attention_with_weights(x, memory)  # weights: (B, Q, T)
        else:
            attended, weights = self.cross_attention(x, memory, memory, need_weights=False)[0], None
        queries = queries + self.dropout(attended)
        queries = queries + self.dropout(self.ffn(self.norm_ffn(queries)))
        return queries, weights

    def _cross_attention_with_weights(self, x: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`self.cross_attention(x, memory, memory)` computed step by step, with the same parameters and dropout, to
        return the attention weights before dropout: `nn.MultiheadAttention` returns them after it, and a grounding
        target (the box term, the heatmaps) should not carry train-time noise. (B, Q, T): mean over heads, sink
        left out."""
        mha = self.cross_attention
        batch, heads, width = x.shape[0], mha.num_heads, mha.embed_dim
        w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
        b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
        q = nn.functional.linear(x, w_q, b_q)  # (B, Q, D)
        k = nn.functional.linear(memory, w_k, b_k)  # (B, T, D)
        v = nn.functional.linear(memory, w_v, b_v)
        if mha.bias_k is not None:  # the sink: one learned key/value after the patches, as add_bias_kv places it
            k = torch.cat([k, mha.bias_k.expand(batch, 1, width)], dim=1)
            v = torch.cat([v, mha.bias_v.expand(batch, 1, width)], dim=1)

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, heads, L, D / heads)
            return t.unflatten(-1, (heads, width // heads)).transpose(1, 2)

        q, k, v = split(q), split(k), split(v)
        weights = torch.softmax(q @ k.transpose(-2, -1) * (width // heads) ** -0.5, dim=-1)  # (B, heads, Q, T [+1])
        dropped = nn.functional.dropout(weights, p=mha.dropout, training=self.training)
        attended = mha.out_proj((dropped @ v).transpose(1, 2).flatten(-2))  # (B, Q, D)
        weights = weights.mean(dim=1)
        if mha.bias_k is not None:
            weights = weights[..., :-1]  # (B, Q, T + 1) -> (B, Q, T): the sink is no patch
        return attended, weights


class MedKLIP(nn.Module):
    """Image + knowledge -> per-entity existence logits, position features and cross-attention maps."""

    def __init__(self, config: ModelConfig, entity_embeddings: torch.Tensor, position_embeddings: torch.Tensor):
        super().__init__()
        if entity_embeddings.shape[0] != len(ENTITIES) or position_embeddings.shape[0] != len(POSITIONS):
            raise ValueError(
                f"need {len(ENTITIES)} entity and {len(POSITIONS)} position embeddings, got "
                f"{tuple(entity_embeddings.shape)} and {tuple(position_embeddings.shape)}"
            )
        self.config = config
        text_dim = entity_embeddings.shape[1]
        self.register_buffer("entity_embeddings", entity_embeddings.float().clone())  # (75, H)
        self.register_buffer("position_embeddings", position_embeddings.float().clone())  # (51, H)
        self.image_encoder = ImageEncoder(
            config.backbone,
            config.d_model,
            config.backbone_weights,
            token_norm=config.attention_token_norm,
            patch_stride=config.patch_stride,
        )
        self.query_projection = nn.Linear(text_dim, config.d_model)  # knowledge -> decoder queries
        self.layers = nn.ModuleList(
            DecoderLayer(config.d_model, config.num_heads, config.ffn_dim, config.dropout, sink=config.attention_sink)
            for _ in range(config.num_decoder_layers)
        )
        self.norm = nn.LayerNorm(config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.exist_head = nn.Linear(config.d_model, 1)
        self.position_head = nn.Linear(config.d_model, text_dim)  # decoder output -> text space
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # BERT-style init for the transformer and heads (as the reference); convolutions keep torchvision's.
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):
            nn.init.normal_(module.in_proj_weight, std=0.02)
            nn.init.zeros_(module.in_proj_bias)

    @classmethod
    def build(cls, config: ModelConfig) -> MedKLIP:
        """A new model whose knowledge embeddings are computed now, once, by `config.text_encoder`."""
        from medklip.labels.knowledge import encode_knowledge

        entities, positions = encode_knowledge(config.text_encoder, config.text_pooling, config.text_max_length)
        return cls(config, entities, positions)

    gradient_checkpointing = False

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute backbone stages and decoder layers in backward (less memory, ~30% more compute)."""
        self.image_encoder.gradient_checkpointing = enabled
        self.gradient_checkpointing = enabled

    def set_channels_last(self, enabled: bool) -> None:
        """NHWC convolutions (faster with mixed precision on modern CPUs and GPUs)."""
        self.image_encoder.channels_last = enabled
        self.image_encoder.stages.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)

    def forward(self, images: torch.Tensor, return_attention: bool = False) -> dict[str, torch.Tensor]:
        """images: (B, 1, S, S) uint8 (or float in 0..255)."""
        memory = self.image_encoder(images)  # (B, T, D)
        batch = memory.shape[0]
        queries = self.query_projection(self.entity_embeddings).unsqueeze(0).expand(batch, -1, -1)  # (B, 75, D)
        attention = []
        for layer in self.layers:
            if self.gradient_checkpointing and self.training:
                queries, weights = checkpoint(layer, queries, memory, return_attention, use_reentrant=False)
            else:
                queries, weights = layer(queries, memory, need_weights=return_attention)
            attention.append(weights)
        features = self.dropout(self.norm(queries))  # (B, 75, D)
        out = {
            "exist_logits": self.exist_head(features).squeeze(-1),  # (B, 75)
            "position_features": self.position_head(features),  # (B, 75, H_text)
            "image_features": memory.mean(dim=1),  # (B, D): pooled patch tokens, for the semantic term
            "knowledge_features": self.query_projection(self.entity_embeddings),  # (75, D)
        }
        if return_attention:
            out["attention"] = torch.stack(attention, dim=1)  # (B, layers, 75, T), averaged over heads, sink left out
        return out

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 75) P(present) for evaluation and serving."""
        return torch.sigmoid(self.forward(images)["exist_logits"].float())
