"""One training step of the `base` architecture: ours against MedKLIP's as its authors run it, and both against this
machine's measured matmul peak, in the same run.

    python benchmarks/train_step.py [--batch-size 8] [--rounds 5] [--steps 2] [--precision auto|fp32|bf16]
    python benchmarks/train_step.py --routes [--compile-routes]      # + each speed route on/off (minutes)

Both steps run the `base` sizes (ResNet-50 to layer3, 224 px, 75 queries, 4-layer decoder, width 256) with AdamW on
the same batch of grey uint8 images and consistent labels (existence derived from the position labels):

- reference (`benchmarks/reference_step.py`): the official pretraining step as its authors run it: fp32, NCHW,
  eager; knowledge embeddings computed once at construction; 3-channel input replicated from grey and the 8
  position candidates per entity drawn by the loader (both outside the timed step, as their DataLoader workers do);
  their decoder and their two loss terms; torch's default AdamW, no clipping.
- ours: what `medklip train` runs per step (`Trainer.micro_batch` + `optimizer_step`): our model and loss (the
  position contrast only over present entities, negatives drawn in the step), channels_last, the trainer's AdamW
  groups and gradient clipping, freed memory kept for reuse on CPUs (`medklip.training.allocator`), and the
  precision `--precision auto` picks: bf16 autocast where the device has native bf16 matrix units (CUDA bf16; on
  CPUs AMX-BF16, checked by torch.cpu and oneDNN, and a measured bf16 matmul peak at least 2x the fp32 one), fp32
  otherwise. On a CPU the product runs the bf16 choice with `--set train.amp=bf16` (its `auto` is still fp32 on
  CPUs). With bf16 the line also has ours in fp32.

The limit, measured in the same run: the best GFLOP/s of torch's own matmul (square fp32 and bf16 products, the
threads of the run), the FLOPs of one step (torch.utils.flop_counter.FlopCounterMode: convolutions, matmuls and
their backward), and from them each step's utilisation of the peak of its precision (`mfu`) and the ceiling in
img/s. Each step runs in a process of its own (spawned, one computing at a time), because the allocator is a
process's setting: the reference runs with glibc's default, as its authors run it, and once more with our setting
(`reference_kept_memory_img_s`, so the line shows how much of the ratio is the memory policy and how much the step).
Timings are interleaved (ours, reference, peak, repeated `--rounds` times) so that load from other processes hits
all of them alike; the headline is each one's best round, with the median and the spread of the rounds beside.

`--routes` measures each speed route on and off against the default, interleaved the same way, and prints a table:
precision, channels_last, AdamW implementation, intra-op threads, batch size, the loss's position contrast over all
(image, entity) pairs (the reference's) instead of the present ones, oneDNN off, glibc's default allocator (at the
run's batch size and at 48); `--compile-routes` adds torch.compile (inductor) of the decoder layers and of the whole
model (compilation takes minutes on 2 cores).

The last line printed is JSON: {"ours_img_s", "reference_img_s", "ratio", "peak_gflops", "mfu", ...}.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))  # reference_step.py, beside this file

import reference_step  # noqa: E402

from medklip.config import Config, load_config  # noqa: E402
from medklip.model.losses import MedKLIPLoss  # noqa: E402
from medklip.model.network import MedKLIP  # noqa: E402
from medklip.training.allocator import keep_freed_memory  # noqa: E402
from medklip.training.trainer import parameter_groups  # noqa: E402

TEXT_DIM = 768  # Bio_ClinicalBERT's width, as the base preset's knowledge embeddings


# --- the batch ---------------------------------------------------------------------------------------------------
def labelled_batch(size: int, image_size: int = 224, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images (B, 1, S, S) uint8, existence (B, 75), positions (B, 51, 75)): position labels 1 with 3% and 0 with
    5% chance, existence derived from them as MedKLIP's dataset does (any 1, else any 0, else -1)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (size, 1, image_size, image_size), dtype=torch.uint8, generator=generator)
    draw = torch.rand(size, 51, 75, generator=generator)
    positions = torch.full((size, 51, 75), -1)
    positions[draw < 0.03] = 1
    positions[(draw >= 0.03) & (draw < 0.08)] = 0
    existence = torch.where((positions == 1).any(1), 1, torch.where((positions == 0).any(1), 0, -1))
    return images, existence, positions


# --- the peak ----------------------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_gflops(dtype: torch.dtype, device: torch.device, sizes=(1024, 2048), repeats: int = 3) -> float:
    """The best GFLOP/s of torch.mm on square matrices of `sizes` (2 n^3 FLOPs each), the run's threads."""
    if device.type == "cuda":
        sizes = (4096, 8192)
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        a @ b  # warm-up: kernel selection, packing buffers
        synchronize(device)
        number = max(1, int(2e9 // (2 * n**3))) if device.type == "cpu" else 20
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(number):
                a @ b
            synchronize(device)
            best = max(best, 2 * n**3 * number / (time.perf_counter() - start) / 1e9)
    return best


def native_bf16(device: torch.device, fp32_gflops: float, bf16_gflops: float) -> tuple[bool, str]:
    """Whether bf16 autocast is the faster precision here, and why (the `auto` policy)."""
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
        return supported, "CUDA bf16 tensor cores" if supported else "this GPU has no bf16"
    amx = torch.cpu._is_amx_tile_supported()
    onednn = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if not (amx and onednn):
        return False, "no AMX-BF16 (bf16 convolutions would be emulated or run on AVX-512 only): fp32"
    if bf16_gflops < 2 * fp32_gflops:
        return False, f"AMX-BF16 present but bf16 matmul only {bf16_gflops / fp32_gflops:.1f}x fp32: fp32"
    return True, f"AMX-BF16, bf16 matmul {bf16_gflops / fp32_gflops:.1f}x fp32"


# --- the steps ---------------------------------------------------------------------------------------------------
class FullContrastLoss(MedKLIPLoss):
    """Our loss with the reference's position contrast: all B x 75 pairs scored against 8 gathered embeddings
    ((B, 75, 8, H) copied), then masked. A route of `--routes` only: what ours avoids."""

    def _position_loss(self, features, existence, positions, position_embeddings, draw):
        positive = positions.permute(0, 2, 1) == 1  # (B, 75, 51)
        valid = (existence == 1) & self.entity_mask & positive.any(-1)  # (B, 75)
        generator = torch.Generator(device="cpu").manual_seed(draw)
        scores = torch.rand(positive.shape, generator=generator).to(positive.device)  # (B, 75, 51)
        chosen = scores.masked_fill(~positive, -1.0).argmax(-1, keepdim=True)  # (B, 75, 1)
        negatives = scores.masked_fill(positive, -1.0).topk(self.config.num_negatives, dim=-1).indices
        gathered = position_embeddings[torch.cat([chosen, negatives], -1)].float()  # (B, 75, 8, H)
        logits = torch.einsum("bqh,bqkh->bqk", features.float(), gathered)[valid]  # (N, 8)
        return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


@dataclass
class Route:
    """One way of running our step; the defaults are what `medklip train` does (with the precision chosen)."""

    precision: str = "fp32"  # "fp32" or "bf16" (autocast)
    channels_last: bool = True
    optimizer: str = "trainer"  # "trainer" (torch's default kernels: a for-loop on CPUs, fused on GPUs), "foreach",
    # or "fused"
    threads: int | None = None  # intra-op threads; None: as started
    batch_size: int | None = None  # None: the run's --batch-size
    loss: str = "ours"  # "ours" or "full-contrast"
    onednn: bool = True
    compile: str = "off"  # "off", "decoder" (each decoder layer), "model" (the whole forward, backward by AOT)
    keep_memory: bool = True  # the trainer's allocator setting on CPUs (medklip.training.allocator)


class OurStep:
    """`Trainer.micro_batch` + `Trainer.optimizer_step` on a fixed batch: forward under autocast, the loss,
    backward, gradient clipping, AdamW (the trainer's groups), zero_grad."""

    def __init__(self, config: Config, route: Route, device: torch.device, batch: tuple[torch.Tensor, ...]):
        self.route, self.device = route, device
        torch.manual_seed(0)
        self.model = MedKLIP(config.model, torch.randn(75, TEXT_DIM), torch.randn(51, TEXT_DIM)).to(device).train()
        self.model.set_channels_last(route.channels_last)
        loss_class = FullContrastLoss if route.loss == "full-contrast" else MedKLIPLoss
        self.loss_fn = loss_class(config.loss).to(device)
        kind = {"trainer": {"fused": device.type == "cuda"}, "foreach": {"foreach": True}, "fused": {"fused": True}}
        groups = parameter_groups(self.model, config.train.weight_decay)
        self.optimizer = torch.optim.AdamW(groups, lr=config.train.lr, **kind[route.optimizer])
        self.grad_clip = config.train.grad_clip
        self.dtype = torch.bfloat16 if route.precision == "bf16" else None
        self.forward = self.model
        if route.compile == "model":
            self.forward = torch.compile(self.model)
        elif route.compile == "decoder":
            for layer in self.model.layers:
                layer.compile()
        self.images, self.existence, self.positions = (tensor.to(device) for tensor in batch)
        self.draw = 0

    def __call__(self) -> None:
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            outputs = self.forward(self.images)
        self.draw += 1
        terms = self.loss_fn(outputs, self.existence, self.positions, self.model.position_embeddings, self.draw)
        terms["loss"].backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


class TheirStep:
    """reference_step.ReferenceStep on the loader's output for the same batch."""

    def __init__(self, device: torch.device, batch: tuple[torch.Tensor, ...]):
        torch.manual_seed(0)
        model = reference_step.ReferenceMedKLIP(torch.randn(75, TEXT_DIM), torch.randn(51, TEXT_DIM)).to(device)
        self.step = reference_step.ReferenceStep(model)
        loaded = reference_step.loader_batch(*batch)  # their DataLoader's work: not timed
        self.batch = {name: value.to(device) for name, value in loaded.items()}

    def __call__(self) -> None:
        self.step(self.batch)


def apply_route_settings(route: Route, device: torch.device) -> None:
    """A contestant's process-wide settings, made once at the start of its process."""
    if route.threads:
        torch.set_num_threads(route.threads)
    torch.backends.mkldnn.enabled = route.onednn
    if route.keep_memory and device.type == "cpu":
        keep_freed_memory()


def serve(connection, kind: str, route: Route, batch_size: int) -> None:
    """A contestant's process: build its step, take one untimed step, then answer ("time", steps) with seconds per
    step and ("flops",) with FLOPs per image until ("stop",)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    apply_route_settings(route, device)
    batch = labelled_batch(batch_size)
    step = OurStep(load_config("base"), route, device, batch) if kind == "ours" else TheirStep(device, batch)
    step()  # warm-up: allocations, oneDNN primitive caches, compilation
    connection.send("ready")
    while (command := connection.recv())[0] != "stop":
        if command[0] == "time":
            connection.send(timed(step, command[1], device))
        else:
            connection.send(flops_per_image(step, batch_size))


class Contestant:
    """One step ("ours" with a `Route`, or "reference") in a process of its own, started with `spawn`: its
    allocator, threads and oneDNN settings are its own, as when each is run (the reference as its authors run it
    has glibc's default allocator; `medklip train` keeps freed memory on CPUs). Only one computes at a time: the
    others wait on their pipe."""

    def __init__(self, kind: str, route: Route, batch_size: int):
        self.batch_size = batch_size
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=serve, args=(child, kind, route, batch_size), daemon=True)
        self.process.start()
        child.close()  # the child's end lives in the child only: its exit then ends our reads with EOFError

    def ask(self, *command):
        self.connection.send(command)
        if not self.connection.poll(3600):
            raise TimeoutError(f"contestant {self.process.pid} did not answer {command}")
        return self.connection.recv()

    def ready(self) -> None:
        try:
            self.connection.recv()
        except EOFError:
            raise RuntimeError(f"contestant {self.process.pid} exited building its step (error above)") from None

    def img_s(self, steps: int) -> float:
        return self.batch_size / self.ask("time", steps)

    def flops_per_image(self) -> float:
        return self.ask("flops")

    def close(self) -> None:
        self.connection.send(("stop",))
        self.process.join(60)


def timed(step, steps: int, device: torch.device) -> float:
    """Seconds per step over `steps` steps."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def flops_per_image(step, batch_size: int) -> float:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops() / batch_size


def interleaved(contestants: dict, rounds: int, steps: int) -> dict[str, list[float]]:
    """{name: [img/s of each round]}: rounds of every contestant in turn, after all have started and warmed up.

    `contestants` maps a name to a `Contestant` or to a callable returning GFLOP/s (a peak, measured here)."""
    for value in contestants.values():
        if isinstance(value, Contestant):
            value.ready()
    results: dict[str, list[float]] = {name: [] for name in contestants}
    for _ in range(rounds):
        for name, value in contestants.items():
            results[name].append(value.img_s(steps) if isinstance(value, Contestant) else value())
    return results


def summary(values: list[float]) -> dict[str, float]:
    return {
        "best": max(values),
        "median": statistics.median(values),
        "spread": max(values) / min(values) - 1,  # (best - worst) / worst over the rounds
    }


# --- routes ------------------------------------------------------------------------------------------------------
def routes_table(default: Route, args) -> list[dict]:
    """Each route against the default, interleaved: [{route, on, off, on_img_s, off_img_s, gain}]."""
    threads = torch.get_num_threads()
    variants = [
        (
            "bf16 autocast",
            "bf16",
            "fp32",
            Route(**{**vars(default), "precision": "bf16"}),
            Route(**{**vars(default), "precision": "fp32"}),
        ),
        ("channels_last", "on", "off", default, Route(**{**vars(default), "channels_last": False})),
        ("AdamW foreach", "foreach", "trainer's (for-loop)", Route(**{**vars(default), "optimizer": "foreach"}), None),
        ("AdamW fused", "fused", "trainer's (for-loop)", Route(**{**vars(default), "optimizer": "fused"}), None),
        (f"intra-op threads {threads}", str(threads), "1", default, Route(**{**vars(default), "threads": 1})),
        ("batch size 16", "16", str(args.batch_size), Route(**{**vars(default), "batch_size": 16}), None),
        ("batch size 48", "48", str(args.batch_size), Route(**{**vars(default), "batch_size": 48}), None),
        (
            "position contrast on present pairs only",
            "ours",
            "all B x 75 pairs (reference's)",
            default,
            Route(**{**vars(default), "loss": "full-contrast"}),
        ),
        ("oneDNN convolutions", "on", "off", default, Route(**{**vars(default), "onednn": False})),
        ("freed memory kept", "kept", "glibc's default", default, Route(**{**vars(default), "keep_memory": False})),
        (
            "freed memory kept, batch size 48",
            "kept",
            "glibc's default",
            Route(**{**vars(default), "batch_size": 48}),
            Route(**{**vars(default), "batch_size": 48, "keep_memory": False}),
        ),
    ]
    if args.compile_routes:
        variants += [
            ("torch.compile decoder layers", "on", "off", Route(**{**vars(default), "compile": "decoder"}), None),
            ("torch.compile whole model", "on", "off", Route(**{**vars(default), "compile": "model"}), None),
        ]
    table = []
    for name, on_label, off_label, on, off in variants:
        off = off or default
        steps = {label: Contestant("ours", route, route.batch_size or args.batch_size) for label, route in
                 (("on", on), ("off", off))}  # fmt: skip
        result = interleaved(steps, args.rounds, args.steps)
        row = {
            "route": name,
            "on": on_label,
            "off": off_label,
            "on_img_s": round(max(result["on"]), 2),
            "off_img_s": round(max(result["off"]), 2),
            "gain": round(max(result["on"]) / max(result["off"]), 3),
            "spread": round(max(summary(result["on"])["spread"], summary(result["off"])["spread"]), 3),
        }
        print(json.dumps(row), flush=True)
        table.append(row)
        for step in steps.values():
            step.close()
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved measurement rounds")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per contestant per round")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto", help="ours' precision")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--routes", action="store_true", help="also measure each speed route on and off")
    parser.add_argument("--compile-routes", action="store_true", help="with --routes: torch.compile too (minutes)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    fp32_peak = matmul_gflops(torch.float32, device)
    bf16_peak = matmul_gflops(torch.bfloat16, device)
    native, reason = native_bf16(device, fp32_peak, bf16_peak)
    precision = {"auto": "bf16" if native else "fp32"}.get(args.precision, args.precision)
    default = Route(precision=precision, threads=args.threads)  # a spawned contestant starts with torch's threads

    # The reference as its authors run it (glibc's default allocator), and with our allocator setting too: how much
    # of the ratio is the process's memory policy and how much the step.
    contestants = {
        "ours": Contestant("ours", default, args.batch_size),
        "reference": Contestant("reference", Route(threads=args.threads, keep_memory=False), args.batch_size),
        "reference_kept_memory": Contestant("reference", Route(threads=args.threads), args.batch_size),
    }
    if precision == "bf16":
        contestants["ours_fp32"] = Contestant("ours", Route(**{**vars(default), "precision": "fp32"}), args.batch_size)
    contestants["fp32_peak"] = lambda: matmul_gflops(torch.float32, device, sizes=(2048,), repeats=1)
    if precision == "bf16":
        contestants["bf16_peak"] = lambda: matmul_gflops(torch.bfloat16, device, sizes=(2048,), repeats=1)
    results = interleaved(contestants, args.rounds, args.steps)
    fp32_peak = max(fp32_peak, *results["fp32_peak"])
    if precision == "bf16":
        bf16_peak = max(bf16_peak, *results["bf16_peak"])
    peak = bf16_peak if precision == "bf16" else fp32_peak

    ours_flops = contestants["ours"].flops_per_image()
    reference_flops = contestants["reference"].flops_per_image()
    for value in contestants.values():
        if isinstance(value, Contestant):
            value.close()
    ours_img_s, reference_img_s = max(results["ours"]), max(results["reference"])
    reference_kept_memory_img_s = max(results["reference_kept_memory"])
    result = {
        "ours_img_s": round(ours_img_s, 2),
        "reference_img_s": round(reference_img_s, 2),
        "ratio": round(ours_img_s / reference_img_s, 2),
        "peak_gflops": round(peak, 1),  # the matmul peak of ours' precision
        "mfu": round(ours_img_s * ours_flops / (peak * 1e9), 3),  # ours' FLOP rate / that peak
        "precision": precision,
        "precision_reason": reason if args.precision == "auto" else "--precision",
        "fp32_peak_gflops": round(fp32_peak, 1),
        "bf16_peak_gflops": round(bf16_peak, 1),
        "gflops_per_image": round(ours_flops / 1e9, 2),
        "reference_gflops_per_image": round(reference_flops / 1e9, 2),
        "fp32_peak_utilisation": round(ours_img_s * ours_flops / (fp32_peak * 1e9), 3),
        "reference_mfu": round(reference_img_s * reference_flops / (fp32_peak * 1e9), 3),
        "reference_kept_memory_img_s": round(reference_kept_memory_img_s, 2),
        "ratio_to_reference_kept_memory": round(ours_img_s / reference_kept_memory_img_s, 2),
        "ceiling_img_s": round(peak * 1e9 / ours_flops, 2),  # every FLOP at the matmul peak of ours' precision
        "fp32_ceiling_img_s": round(fp32_peak * 1e9 / ours_flops, 2),
    }
    if precision == "bf16":
        ours_fp32 = max(results["ours_fp32"])
        result["ours_fp32_img_s"] = round(ours_fp32, 2)
        result["ours_fp32_mfu"] = round(ours_fp32 * ours_flops / (fp32_peak * 1e9), 3)
        result["ratio_fp32"] = round(ours_fp32 / reference_img_s, 2)
    result["median_img_s"] = {
        name: round(summary(values)["median"], 2) for name, values in results.items() if "peak" not in name
    }
    result["spread"] = {name: round(summary(values)["spread"], 3) for name, values in results.items()}
    result.update(
        {
            "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(),
            "batch_size": args.batch_size,
            "rounds": args.rounds,
            "steps_per_round": args.steps,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),  # largest child
        }
    )
    if args.routes:
        result["routes"] = routes_table(default, args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
