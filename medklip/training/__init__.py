"""Training: `trainer` (the loop, 1..N processes, resumable), `checkpoints` (safetensors weights with the resolved
config, the resumable training state), `distributed` (torchrun/DDP setup) and `allocator` (CPU memory kept for reuse
between steps). The command-line entry point is `medklip.train` (`torchrun ... -m medklip.train`). May import data,
labels and model; never evaluation or tracking (validation's score function is passed in by the entry point).
"""
