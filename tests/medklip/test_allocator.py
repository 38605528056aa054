"""`keep_freed_memory`: after it, a freed large tensor's memory is reused by the next one of its size, without page
faults."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")

PROBE = """
import json, resource, sys
import torch
from medklip.training.allocator import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "kept" else None
faults = {}
for size in json.loads(sys.argv[2]):
    for repeat in range(6):  # the first ones of a size grow the heap (and align around their neighbours): the
        # last is the steady state of a training step, which allocates the same sizes every step
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        tensor = torch.ones(size, dtype=torch.uint8)  # allocated and written, as an activation
        del tensor
        after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    faults[size] = after - before
print(json.dumps({"kept": kept, "faults": faults}))
"""
PAGE = 4096
MIB = 2**20


def faults_per_allocation(mode: str, sizes: list[int]) -> dict[int, int]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode, json.dumps(sizes)], capture_output=True, text=True, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["kept"] in (True, None)
    return {int(size): count for size, count in result["faults"].items()}


def drawn_sizes() -> list[int]:
    """Sizes a CPU step allocates: the edges around glibc's thresholds by name, and a seeded draw up to 200 MiB
    (the `base` preset's largest activations at batch 48 are about 150 MiB)."""
    generator = random.Random(23)
    edges = [128 * 1024 + PAGE, 32 * MIB - PAGE, 32 * MIB + PAGE, 64 * MIB + PAGE]
    return edges + [generator.randrange(1 * MIB, 200 * MIB) for _ in range(6)]


def test_a_freed_tensor_is_reused_without_page_faults_once_the_memory_is_kept():
    sizes = drawn_sizes()
    kept = faults_per_allocation("kept", sizes)
    for size in sizes:
        # A repeat touches memory the process already has: at most a few pages of bookkeeping, not the tensor's.
        assert kept[size] < 0.02 * size / PAGE + 64, (size, kept[size])


def test_negative_control_without_it_every_large_tensor_faults_all_its_pages_again():
    sizes = [size for size in drawn_sizes() if size > 32 * MIB]  # above glibc's largest dynamic mmap threshold
    default = faults_per_allocation("default", sizes)
    for size in sizes:
        assert default[size] > 0.9 * size / PAGE, (size, default[size])
