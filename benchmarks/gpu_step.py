"""The `base` training step on one CUDA GPU: ours (bf16, torch.compile, fused AdamW) and MedKLIP's as its authors run
it, on the same card. Never run by the tests; exits with a message (status 2) where there is no CUDA device.

    python benchmarks/gpu_step.py [--batch-size 64] [--steps 20] [--warmup 5] [--no-compile] [--peak-tflops T]
    python benchmarks/gpu_step.py --smoke-on-cpu --batch-size 2 --steps 1 --warmup 1 --no-compile   # code path only

- ours: the `base` model and loss (`medklip.model`), channels_last, bf16 autocast, `torch.compile` of the model
  (inductor; the loss stays eager: its number of present entities changes every batch), fused AdamW with the
  trainer's groups, gradient clipping at the trainer's 1.0, cudnn.benchmark.
- reference (`benchmarks/reference_step.py`): fp32 eager NCHW as the authors' scripts run on torch 1.9: TF32 for
  matmuls and convolutions (1.9's defaults on Ampere and later), cudnn.benchmark on (their scripts set it), torch's
  default AdamW, no clipping; the same batch size unless `--reference-batch-size`.

MFU is the model FLOPs of one step (FlopCounterMode on the eager model: convolutions, matmuls and their backward)
times img/s over the card's dense bf16 peak from `DENSE_BF16_TFLOPS` (by torch.cuda.get_device_name; `--peak-tflops`
for other cards); the reference's MFU uses the same bf16 peak, and `measured_bf16_tflops` is this card's best
8192 x 8192 bf16 matmul. Peak memory is torch.cuda.max_memory_allocated of each step.

The last line printed is JSON: {"ours_img_s", "reference_img_s", "ratio", "mfu", "peak_memory_gib", ...}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # reference_step.py and train_step.py, beside this file

import reference_step  # noqa: E402
from train_step import TEXT_DIM, flops_per_image, labelled_batch  # noqa: E402

from medklip.config import load_config  # noqa: E402
from medklip.model.losses import MedKLIPLoss  # noqa: E402
from medklip.model.network import MedKLIP  # noqa: E402
from medklip.training.trainer import parameter_groups  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, TFLOP/s; the first pattern contained in
# torch.cuda.get_device_name() wins, so the more specific names come first.
DENSE_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM: "NVIDIA H100 80GB HBM3"
    ("H200", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)


def card_peak(name: str) -> float | None:
    return next((tflops for pattern, tflops in DENSE_BF16_TFLOPS if pattern in name), None)


class OurGPUStep:
    def __init__(self, config, device, batch, compile_model: bool, precision: torch.dtype | None):
        torch.manual_seed(0)
        self.model = MedKLIP(config.model, torch.randn(75, TEXT_DIM), torch.randn(51, TEXT_DIM)).to(device).train()
        self.model.set_channels_last(True)
        self.forward = torch.compile(self.model) if compile_model else self.model
        self.loss_fn = MedKLIPLoss(config.loss).to(device)
        groups = parameter_groups(self.model, config.train.weight_decay)
        self.optimizer = torch.optim.AdamW(groups, lr=config.train.lr, fused=True)
        self.grad_clip, self.dtype, self.device = config.train.grad_clip, precision, device
        self.images, self.existence, self.positions = (tensor.to(device) for tensor in batch)
        self.draw = 0

    def __call__(self, forward=None) -> None:
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            outputs = (forward or self.forward)(self.images)
        self.draw += 1
        terms = self.loss_fn(outputs, self.existence, self.positions, self.model.position_embeddings, self.draw)
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def measure(step, steps: int, warmup: int, batch_size: int, device: torch.device) -> dict:
    for _ in range(warmup):  # compilation, cudnn.benchmark's search, allocator growth
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    memory = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return {"img_s": steps * batch_size / seconds, "peak_memory_gib": memory}


def matmul_tflops(device: torch.device, n: int = 8192, number: int = 20) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(number):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * number / (time.perf_counter() - start) / 1e12


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--reference-batch-size", type=int, default=None, help="default: --batch-size")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens here)")
    parser.add_argument("--no-compile", action="store_true", help="ours without torch.compile")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of a card not in the table")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference step")
    parser.add_argument("--smoke-on-cpu", action="store_true", help="run the code path on the CPU (no MFU, no compile)")
    args = parser.parse_args()

    if not torch.cuda.is_available() and not args.smoke_on_cpu:
        message = "gpu_step.py needs a CUDA device and found none (torch.cuda.is_available() is False); on a CPU run "
        message += "benchmarks/train_step.py, or --smoke-on-cpu to check this script's code path"
        print(message, file=sys.stderr)
        print(json.dumps({"error": "no CUDA device"}))
        return 2
    device = torch.device("cpu" if args.smoke_on_cpu else "cuda")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu (smoke)"
    torch.backends.cudnn.benchmark = True
    config = load_config("base")
    batch = labelled_batch(args.batch_size)

    ours = OurGPUStep(config, device, batch, not args.no_compile and device.type == "cuda", torch.bfloat16)
    flops = flops_per_image(lambda: ours(forward=ours.model), args.batch_size)  # eager: FlopCounterMode sees aten ops
    ours_result = measure(ours, args.steps, args.warmup, args.batch_size, device)

    peak = args.peak_tflops or card_peak(name)
    result = {
        "ours_img_s": round(ours_result["img_s"], 1),
        "mfu": round(ours_result["img_s"] * flops / (peak * 1e12), 4) if peak and device.type == "cuda" else None,
        "peak_memory_gib": ours_result["peak_memory_gib"] and round(ours_result["peak_memory_gib"], 2),
        "gflops_per_image": round(flops / 1e9, 2),
        "device": name,
        "dense_bf16_peak_tflops": peak,
        "batch_size": args.batch_size,
        "compile": not args.no_compile and device.type == "cuda",
        "precision": "bf16",
    }
    if device.type == "cuda":
        result["measured_bf16_tflops"] = round(matmul_tflops(device), 1)
    if not args.no_reference:
        size = args.reference_batch_size or args.batch_size
        # torch 1.9's defaults, which the authors ran: TF32 in matmuls and convolutions.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(0)
        model = reference_step.ReferenceMedKLIP(torch.randn(75, TEXT_DIM), torch.randn(51, TEXT_DIM)).to(device)
        step = reference_step.ReferenceStep(model)
        loaded = {key: value.to(device) for key, value in reference_step.loader_batch(*labelled_batch(size)).items()}
        reference = measure(lambda: step(loaded), args.steps, min(args.warmup, 3), size, device)
        result["reference_img_s"] = round(reference["img_s"], 1)
        result["ratio"] = round(ours_result["img_s"] / reference["img_s"], 2)
        result["reference_peak_memory_gib"] = reference["peak_memory_gib"] and round(reference["peak_memory_gib"], 2)
        result["reference_batch_size"] = size
        if peak and device.type == "cuda":
            reference_flops = flops_per_image(lambda: step(loaded), size)
            result["reference_mfu"] = round(reference["img_s"] * reference_flops / (peak * 1e12), 4)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
