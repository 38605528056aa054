"""Checkpoints: weights in safetensors (with the resolved config), training state beside them, resumable.

Layout of a `--save` folder:
    model_best.safetensors   best validation mean AUC so far (weights + knowledge buffers + config in the header)
    model_best.json          its config, step, epoch and metrics
    last.json                points at the newest complete step folder: {"dir": "step-00000200", "step": 200}
    step-00000200/           model.safetensors + state.pt (optimizer, scheduler, RNG, position in the epoch) +
                             meta.json
    history.jsonl            one line per epoch (losses, validation metrics, lr, throughput)

A step folder is written completely before `last.json` moves to it (an atomic rename), and older step folders are
deleted only after that, so a process killed at any moment leaves a loadable `last`. A `last.json` that points at
something unreadable is an error (`CheckpointError`), never a silent fresh start. `state.pt` holds only tensors and
plain Python values and is read with `torch.load(weights_only=True)`; nothing here unpickles arbitrary objects.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from medklip.config import Config, from_dict, to_dict

FORMAT = "medklip/1"
PRE_GROUNDING_DEFAULTS = ("attention_token_norm", "attention_sink")  # model options newer than some files


class CheckpointError(RuntimeError):
    """A checkpoint that exists but cannot be used."""


def _atomic_write_text(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def save_weights(model: torch.nn.Module, path: str | Path, config: Config, extra: dict | None = None) -> None:
    """Writes `model`'s state_dict (unwrapped from DDP) to safetensors, with the config and `extra` in the header."""
    model = getattr(model, "module", model)
    path = Path(path)
    tensors = {name: value.detach().cpu().contiguous() for name, value in model.state_dict().items()}
    metadata = {"format": FORMAT, "config": json.dumps(to_dict(config)), "extra": json.dumps(extra or {})}
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    save_file(tensors, str(temporary), metadata=metadata)
    os.replace(temporary, path)


def read_header(path: str | Path) -> tuple[Config, dict]:
    """(config, extra) stored in a weights file."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from error
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a MedKLIP checkpoint (format {metadata.get('format')!r})")
    values = json.loads(metadata["config"])
    for added in PRE_GROUNDING_DEFAULTS:  # a file from before these options was trained without them
        values.setdefault("model", {}).setdefault(added, False)
    return from_dict(values), json.loads(metadata.get("extra", "{}"))


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """A `MedKLIP` from a weights file alone: config from its header, knowledge embeddings from its buffers."""
    from medklip.model.network import MedKLIP

    config, extra = read_header(path)
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: cannot read weights ({error})") from error
    model = MedKLIP(config.model, tensors["entity_embeddings"], tensors["position_embeddings"])
    model.load_state_dict(tensors)
    model.label_counts = extra.get("label_counts")  # {entity: [n_pos, n_neg]} in training, when recorded
    return model.to(device).eval()


def save_training_state(folder: str | Path, model, config: Config, state: dict, keep: int = 1) -> Path:
    """Writes step folder + moves `last.json` to it; keeps the newest `keep` step folders."""
    folder = Path(folder)
    step = int(state["step"])
    name = f"step-{step:08d}"
    staging = folder / f".{name}.{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    save_weights(model, staging / "model.safetensors", config, {"step": step, "epoch": state.get("epoch")})
    torch.save(state, staging / "state.pt")
    (staging / "meta.json").write_text(json.dumps({"step": step, "epoch": state.get("epoch"), "format": FORMAT}))
    target = folder / name
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    _atomic_write_text(folder / "last.json", json.dumps({"dir": name, "step": step}))
    steps = sorted(path for path in folder.glob("step-*") if path.is_dir())
    for old in steps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def load_training_state(folder: str | Path, model) -> dict | None:
    """Loads `last` into `model` and returns its state dict; None if there is no `last.json` (a fresh run).

    Raises:
        CheckpointError: `last.json` exists but what it points at is missing, truncated or for another model.
    """
    pointer = Path(folder) / "last.json"
    if not pointer.exists():
        return None
    try:
        name = json.loads(pointer.read_text())["dir"]
        target = Path(folder) / name
        tensors = load_file(str(target / "model.safetensors"), device="cpu")
        state = torch.load(target / "state.pt", map_location="cpu", weights_only=True)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError, EOFError) as error:
        raise CheckpointError(
            f"cannot resume from {pointer}: {error}. Fix or remove the checkpoint folder to start fresh; "
            "it will not be overwritten silently."
        ) from error
    module = getattr(model, "module", model)
    try:
        module.load_state_dict(tensors)
    except RuntimeError as error:
        raise CheckpointError(f"{target}: weights do not fit this model/config ({error})") from error
    return state
