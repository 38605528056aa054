"""One training step of the `base` architecture: our fast path versus a plain fp32 eager baseline, same run.

    python benchmarks/train_step.py [--steps 3] [--batch-size 8]

Both run the `base` model (ResNet-50 to layer3, 224 px, 75 queries, 4-layer decoder) with the same loss and AdamW on
the same random batch:

- ours: knowledge embeddings computed once and kept as buffers, channels_last, the autocast policy of
  `train.amp=auto` (bf16 on GPUs that support it, fp32 on CPUs, where bf16 measured slower), fused AdamW on GPUs;
- baseline: fp32, NCHW, and the text encoder run every step over the 75 descriptions and 51 prompts (max length 64),
  as the prototype this project replaces did. The encoder has Bio_ClinicalBERT's architecture (BERT-base); its
  weights are random because the Hub is unreachable here, which changes nothing about its cost.

On a GPU it also reports the model FLOPs utilisation of our step (FLOPs counted by torch's FlopCounterMode, against
the GPU's dense bf16 peak). The last line printed is JSON: {"ours_img_s", "baseline_img_s", "ratio", "peak_rss_mb",
...}.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertModel

from medklip.config import load_config
from medklip.model.losses import MedKLIPLoss
from medklip.model.network import MedKLIP
from medklip.training.trainer import autocast_dtype
from medklip.vocabulary import DESCRIPTIONS, ENTITIES, POSITION_PROMPTS, POSITIONS

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


def batch(size: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (size, 1, 224, 224), dtype=torch.uint8, generator=generator)
    existence = torch.randint(-1, 2, (size, 75), generator=generator)
    positions = torch.randint(-1, 2, (size, 51, 75), generator=generator)
    return images.to(device), existence.to(device), positions.to(device)


def naive_text_encoder(device: torch.device):
    """BERT-base (Bio_ClinicalBERT's shape) + a word-level stand-in tokenizer output of the real texts' length."""
    encoder = BertModel(BertConfig()).to(device).eval()
    texts = [DESCRIPTIONS[e] for e in ENTITIES] + [POSITION_PROMPTS[p] for p in POSITIONS]
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (len(texts), 64), generator=generator).to(device)
    mask = torch.ones_like(ids)

    @torch.no_grad()
    def encode() -> tuple[torch.Tensor, torch.Tensor]:
        hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]  # (126, 768)
        return hidden[:75], hidden[75:]

    return encode


def measure(step, steps: int, batch_size: int, device: torch.device) -> float:
    step()  # warm-up: allocations, kernel selection
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config = load_config("base")
    images, existence, positions = batch(args.batch_size, device)
    loss_fn = MedKLIPLoss(config.loss).to(device)

    # Ours: the knowledge is a buffer; channels_last; autocast policy of train.amp=auto.
    torch.manual_seed(0)
    ours = MedKLIP(config.model, torch.randn(75, 768), torch.randn(51, 768)).to(device)
    ours.set_channels_last(True)
    dtype = autocast_dtype("auto", device)
    optimizer = torch.optim.AdamW(ours.parameters(), lr=1e-4, fused=device.type == "cuda")

    def our_step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            outputs = ours(images)
        loss_fn(outputs, existence, positions, ours.position_embeddings)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    ours_img_s = measure(our_step, args.steps, args.batch_size, device)

    # Baseline: fp32, NCHW, the text encoder every step.
    torch.manual_seed(0)
    baseline = MedKLIP(config.model, torch.randn(75, 768), torch.randn(51, 768)).to(device)
    encode = naive_text_encoder(device)
    baseline_optimizer = torch.optim.AdamW(baseline.parameters(), lr=1e-4)

    def baseline_step():
        entity_embeddings, position_embeddings = encode()
        baseline.entity_embeddings.copy_(entity_embeddings)
        outputs = baseline(images)
        loss_fn(outputs, existence, positions, position_embeddings)["loss"].backward()
        baseline_optimizer.step()
        baseline_optimizer.zero_grad(set_to_none=True)

    baseline_img_s = measure(baseline_step, max(1, args.steps // 2), args.batch_size, device)

    result = {
        "ours_img_s": round(ours_img_s, 2),
        "baseline_img_s": round(baseline_img_s, 2),
        "ratio": round(ours_img_s / baseline_img_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "batch_size": args.batch_size,
        "amp": str(dtype),
    }
    if device.type == "cuda":
        with FlopCounterMode(display=False) as counter:
            our_step()
        flops_per_image = counter.get_total_flops() / args.batch_size
        peak = next((value for name, value in PEAK_BF16_TFLOPS.items() if name in result["device"]), None)
        result["gflops_per_image"] = round(flops_per_image / 1e9, 2)
        result["peak_gpu_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        if peak:
            result["mfu"] = round(flops_per_image * ours_img_s / (peak * 1e12), 4)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
