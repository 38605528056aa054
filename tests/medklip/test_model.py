"""The MedKLIP network: shapes, gradients, buffers in the state dict, the paper's size, attention maps."""

from __future__ import annotations

import json

import pytest
import torch

from medklip.config import load_config
from medklip.model.grounding import attention_heatmaps
from medklip.model.network import MedKLIP


def tiny(text_dim: int = 24) -> MedKLIP:
    torch.manual_seed(0)
    return MedKLIP(load_config("debug").model, torch.randn(75, text_dim), torch.randn(51, text_dim))


def test_forward_shapes_and_no_nan():
    model = tiny().eval()  # in training mode attention dropout makes the maps sum to about, not exactly, 1
    images = torch.randint(0, 256, (3, 1, 64, 64), dtype=torch.uint8)
    out = model(images, return_attention=True)
    assert out["exist_logits"].shape == (3, 75)
    assert out["position_features"].shape == (3, 75, 24)
    assert out["attention"].shape == (3, 1, 75, 16)  # 64 px / stride 16 = 4 x 4 patch tokens
    patches = out["attention"].sum(-1)  # the rest of each query's attention went to the learned sink
    assert ((patches > 0) & (patches < 1)).all()
    assert all(torch.isfinite(value).all() for value in out.values())
    assert attention_heatmaps(out["attention"], 64).shape == (3, 75, 64, 64)


def test_the_reference_decoder_attends_to_patches_only(tmp_path):
    from medklip.training.checkpoints import load_model, save_weights

    config = load_config("debug", {"model.attention_token_norm": False, "model.attention_sink": False})
    torch.manual_seed(0)
    model = MedKLIP(config.model, torch.randn(75, 24), torch.randn(51, 24)).eval()
    assert not any("bias_k" in name or "project.3" in name for name, _ in model.named_parameters())
    images = torch.randint(0, 256, (3, 1, 64, 64), dtype=torch.uint8)
    out = model(images, return_attention=True)
    assert torch.allclose(out["attention"].sum(-1), torch.ones(3, 1, 75), atol=1e-5)
    # A file written before the two options existed (its header lacks them) loads as the reference decoder.
    save_weights(model, tmp_path / "old.safetensors", config)
    header = safe_open_metadata(tmp_path / "old.safetensors")
    values = json.loads(header["config"])
    del values["model"]["attention_token_norm"], values["model"]["attention_sink"], values["model"]["patch_stride"]
    rewrite_header(tmp_path / "old.safetensors", {**header, "config": json.dumps(values)})
    loaded = load_model(tmp_path / "old.safetensors")
    assert not loaded.config.attention_token_norm and not loaded.config.attention_sink
    assert loaded.config.patch_stride == 16
    assert torch.equal(loaded(images)["exist_logits"], model(images)["exist_logits"])


def test_patch_stride_8_takes_tokens_from_layer2_on_a_grid_twice_as_fine():
    config = load_config("debug", {"model.patch_stride": 8})
    torch.manual_seed(0)
    model = MedKLIP(config.model, torch.randn(75, 24), torch.randn(51, 24)).eval()
    assert not any(name.startswith("image_encoder.stages.3") for name in model.state_dict())  # no layer3
    out = model(torch.randint(0, 256, (2, 1, 64, 64), dtype=torch.uint8), return_attention=True)
    assert out["attention"].shape == (2, 1, 75, 64)  # 64 px / stride 8 = 8 x 8 patch tokens
    assert attention_heatmaps(out["attention"], 64).shape == (2, 75, 64, 64)
    with pytest.raises(ValueError, match="patch_stride must be one of \\[8, 16\\], got 4"):
        MedKLIP(load_config("debug", {"model.patch_stride": 4}).model, torch.randn(75, 24), torch.randn(51, 24))


def safe_open_metadata(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


def rewrite_header(path, metadata: dict) -> None:
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(path)), str(path), metadata=metadata)


def test_every_parameter_gets_a_gradient_and_buffers_are_frozen():
    model = tiny()
    out = model(torch.randint(0, 256, (2, 1, 64, 64), dtype=torch.uint8))
    (out["exist_logits"].sum() + out["position_features"].sum() + out["image_features"].sum()).backward()
    missing = [name for name, parameter in model.named_parameters() if parameter.grad is None]
    assert not missing
    assert not model.entity_embeddings.requires_grad
    state = model.state_dict()
    assert state["entity_embeddings"].shape == (75, 24) and state["position_embeddings"].shape == (51, 24)


def test_base_preset_matches_the_paper_size():
    model = MedKLIP(load_config("base").model, torch.zeros(75, 768), torch.zeros(51, 768))
    parameters = sum(p.numel() for p in model.parameters())
    assert 14.0e6 < parameters < 15.0e6  # reference: about 14.5 M trainable
    out = model(torch.zeros(1, 1, 224, 224, dtype=torch.uint8), return_attention=True)
    assert out["attention"].shape == (1, 4, 75, 196)


def test_channels_last_and_checkpointing_do_not_change_results():
    model = tiny().eval()
    images = torch.randint(0, 256, (2, 1, 64, 64), dtype=torch.uint8)
    reference = model(images)["exist_logits"]
    model.set_channels_last(True)
    assert torch.allclose(model(images)["exist_logits"], reference, atol=1e-4)
    model.train()
    model.set_gradient_checkpointing(True)
    torch.manual_seed(1)
    checkpointed = model(images)["exist_logits"]
    model.set_gradient_checkpointing(False)
    torch.manual_seed(1)
    assert torch.allclose(model(images)["exist_logits"], checkpointed, atol=1e-4)

    # The attention a box loss trains on (medklip.model.losses) gets the same gradients through checkpointed layers.
    gradients = []
    for enabled in (True, False):
        model.set_gradient_checkpointing(enabled)
        model.zero_grad()
        torch.manual_seed(1)
        model(images, return_attention=True)["attention"][..., :4].sum().backward()
        gradients.append(model.query_projection.weight.grad.clone())
    assert gradients[0].abs().sum() > 0 and torch.allclose(*gradients, atol=1e-5)


def batch_norm_statistics_after_one_step(checkpointing: bool) -> dict[str, torch.Tensor]:
    model = tiny().train()
    model.set_gradient_checkpointing(checkpointing)
    images = torch.randint(0, 256, (2, 1, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(1)
    model(images)["exist_logits"].sum().backward()
    statistics = ("running_mean", "running_var", "num_batches_tracked")
    return {name: value.clone() for name, value in model.state_dict().items() if name.endswith(statistics)}


def test_gradient_checkpointing_counts_each_batch_once_in_batch_norm_statistics():
    plain, checkpointed = batch_norm_statistics_after_one_step(False), batch_norm_statistics_after_one_step(True)
    assert plain and plain.keys() == checkpointed.keys()
    assert all(torch.equal(plain[name], checkpointed[name]) for name in plain)
    assert all(value == 1 for name, value in plain.items() if name.endswith("num_batches_tracked"))


def test_negative_control_recomputation_in_train_mode_updates_batch_norm_twice(monkeypatch):
    from contextlib import nullcontext

    monkeypatch.setattr("medklip.model.network._checkpoint_contexts", lambda stage: (nullcontext(), nullcontext()))
    plain, checkpointed = batch_norm_statistics_after_one_step(False), batch_norm_statistics_after_one_step(True)
    assert not all(torch.equal(plain[name], checkpointed[name]) for name in plain)


def test_wrong_knowledge_shapes_are_refused():
    with pytest.raises(ValueError, match="75 entity and 51 position"):
        MedKLIP(load_config("debug").model, torch.zeros(70, 8), torch.zeros(51, 8))


@pytest.mark.parametrize("sink", [True, False])
def test_the_attention_returned_is_the_one_before_dropout(sink):
    """The box term and the heatmaps read `out["attention"]`: it must be the softmax the queries computed, not the
    dropped-out copy that `nn.MultiheadAttention` returns, while the layer's output keeps the same dropout."""
    from medklip.model.network import DecoderLayer

    rng = torch.Generator().manual_seed(7)
    for trial in range(4):  # seeded random widths, lengths and dropout rates
        heads = [1, 2, 4][int(torch.randint(3, (1,), generator=rng))]
        width = heads * int(torch.randint(2, 9, (1,), generator=rng))
        queries_n, tokens = 5, int(torch.randint(3, 20, (1,), generator=rng))
        p = float(torch.empty(1).uniform_(0.2, 0.6, generator=rng))
        torch.manual_seed(trial)
        layer = DecoderLayer(width, heads, 2 * width, p, sink=sink)
        x, memory = torch.randn(3, queries_n, width, generator=rng), torch.randn(3, tokens, width, generator=rng)
        mha = layer.cross_attention
        layer.eval()  # no dropout: the step-by-step attention is nn.MultiheadAttention's, output and weights
        ours, clean = layer._cross_attention_with_weights(x, memory)
        theirs, their_weights = mha(x, memory, memory, need_weights=True)
        assert torch.allclose(ours, theirs, atol=1e-5)
        assert torch.allclose(clean, their_weights[..., :-1] if sink else their_weights, atol=1e-6)
        layer.train()  # same RNG state: the same dropout mask on the output; the weights stay the clean ones
        torch.manual_seed(100 + trial)
        ours, weights = layer._cross_attention_with_weights(x, memory)
        torch.manual_seed(100 + trial)
        theirs, their_weights = mha(x, memory, memory, need_weights=True)
        assert torch.allclose(ours, theirs, atol=1e-5)
        assert torch.allclose(weights, clean, atol=1e-6)
        # Negative control: what nn.MultiheadAttention returns in training carries the dropout, and the check above
        # would catch it.
        their_weights = their_weights[..., :-1] if sink else their_weights
        assert not torch.allclose(their_weights, clean, atol=1e-3)


def test_a_training_forward_returns_the_same_attention_as_an_evaluation_forward():
    model = tiny()
    images = torch.randint(0, 256, (2, 1, 64, 64), dtype=torch.uint8)
    model.eval()
    clean = model(images, return_attention=True)["attention"]
    model.train()
    for layer in model.modules():  # batch norm's training statistics would change the tokens themselves
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.eval()
    model.dropout.p = 0.0  # the token and head dropout too: only attention dropout is left to differ
    for layer in model.layers:
        layer.dropout.p = 0.0
        layer.ffn[2].p = 0.0
        layer.self_attention.dropout = 0.0
    assert model.layers[0].cross_attention.dropout > 0
    assert torch.allclose(model(images, return_attention=True)["attention"], clean, atol=1e-5)
