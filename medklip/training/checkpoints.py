"""Checkpoints: weights in safetensors (with the resolved config), training state beside them, resumable.

Layout of a `--save` folder:
    model_best.safetensors   the best epoch so far by train.select_by (weights + knowledge buffers + config in the
                             header; wall-time fields left out, so a resumed run writes the same bytes)
    model_best.json          its config, step, epoch and metrics
    last.json                points at the newest complete step folder: {"dir": "step-00000200", "step": 200}
    step-00000200/           model.safetensors + state.pt (optimizer, scheduler, and the trainer's Progress: step,
                             epoch, position in the epoch, best score, the run's shape) + meta.json
    history.jsonl            one line per epoch (losses, validation metrics, lr, throughput)

A step folder is written completely before `last.json` moves to it (an atomic rename), and older step folders are
deleted only after that, so a process killed at any moment leaves a loadable `last` (and at most a hidden staging
folder or temporary file, which `remove_partial_writes` clears on resume). A `last.json` that points at something
unreadable, or outside the folder, is an error (`CheckpointError`), never a silent fresh start. `state.pt` holds
only tensors and plain Python values and is read with `torch.load(weights_only=True)`; nothing here unpickles
arbitrary objects.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from dataclasses import replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from safetensors.torch import save as safetensors_bytes

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
    """Writes `model`'s state_dict (unwrapped from DDP) to safetensors, with the config and `extra` in the header.

    The file is a function of its contents: the same weights, config and `extra` give the same bytes in any process
    (the header is written in a fixed order), which is what lets a resumed run be compared byte for byte.
    """
    model = getattr(model, "module", model)
    path = Path(path)
    tensors = {name: value.detach().cpu().contiguous() for name, value in model.state_dict().items()}
    metadata = {"format": FORMAT, "config": json.dumps(to_dict(config)), "extra": json.dumps(extra or {})}
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(_canonical_safetensors(tensors, metadata))
    os.replace(temporary, path)


def _canonical_safetensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """safetensors bytes whose header lists the metadata by key and the tensors by offset.

    safetensors writes the metadata map in no fixed order (it differs between processes); the tensor data and its
    offsets are unchanged here, only the header's JSON is rewritten, compact and padded to 8 bytes as the format asks.
    """
    raw = safetensors_bytes(tensors, metadata=metadata)
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + length])
    entries = sorted(((k, v) for k, v in header.items() if k != "__metadata__"), key=lambda kv: kv[1]["data_offsets"])
    ordered = {"__metadata__": dict(sorted(header["__metadata__"].items())), **dict(entries)}
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + raw[8 + length :]


def read_header(path: str | Path) -> tuple[Config, dict]:
    """(config, extra) stored in a weights file."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from error
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a MedKLIP checkpoint (format {metadata.get('format')!r})")
    try:
        values = json.loads(metadata["config"])
        for added in PRE_GROUNDING_DEFAULTS:  # a file from before these options was trained without them
            values.setdefault("model", {}).setdefault(added, False)
        return from_dict(values), json.loads(metadata.get("extra", "{}"))
    except (KeyError, TypeError, ValueError, AttributeError) as error:  # ConfigError is a ValueError
        raise CheckpointError(f"{path}: the config in its header is not valid: {error}") from None


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """A `MedKLIP` from a weights file alone: config from its header, knowledge embeddings from its buffers."""
    from medklip.model.network import MedKLIP

    config, extra = read_header(path)
    # The file's tensors are what it holds; the header only describes them. The model is first built on the meta
    # device (no memory) and its shapes compared with the file's, so a header asking for a huge model allocates
    # nothing, and a backbone file named in it is never opened (the weights are in this file).
    model_config = replace(config.model, backbone_weights=None)
    try:
        with safe_open(str(path), framework="pt") as handle:
            shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
        knowledge = [shapes.get(name, (0, 0)) for name in ("entity_embeddings", "position_embeddings")]
        with torch.device("meta"):
            skeleton = MedKLIP(model_config, *(torch.empty(shape) for shape in knowledge))
        expected = {name: tuple(value.shape) for name, value in skeleton.state_dict().items()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: its header and tensors do not describe a MedKLIP model ({error})") from None
    if expected != shapes:
        differing = sorted(set(expected.items()) ^ set(shapes.items()))[:3]
        raise CheckpointError(f"{path}: the config in its header does not match its tensors (e.g. {differing})")
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: cannot read weights ({error})") from error
    model = MedKLIP(model_config, tensors["entity_embeddings"], tensors["position_embeddings"])
    model.load_state_dict(tensors)
    model.label_counts = extra.get("label_counts")  # {entity: [n_pos, n_neg]} in training, when recorded
    return model.to(device).eval()


def save_training_state(folder: str | Path, model, config: Config, state: dict, keep: int = 1) -> Path:
    """Writes a step folder, then moves `last.json` to it; keeps the newest `keep` step folders.

    `state` holds the optimizer, the scheduler and the trainer's `progress` (with its `step` and `epoch`).
    """
    folder = Path(folder)
    step, epoch = int(state["progress"]["step"]), state["progress"]["epoch"]
    name = f"step-{step:08d}"
    staging = folder / f".{name}.{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    save_weights(model, staging / "model.safetensors", config, {"step": step, "epoch": epoch})
    torch.save(state, staging / "state.pt")
    (staging / "meta.json").write_text(json.dumps({"step": step, "epoch": epoch, "format": FORMAT}))
    target = folder / name
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    _atomic_write_text(folder / "last.json", json.dumps({"dir": name, "step": step}))
    steps = sorted(path for path in folder.glob("step-*") if path.is_dir())
    for old in steps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


STEP_FOLDER = re.compile(r"step-\d{8}")


def last_step(folder: str | Path) -> Path | None:
    """The step folder `last.json` points at; None if there is none (a fresh run).

    Raises:
        CheckpointError: `last.json` is unreadable or names anything but a step folder beside it.
    """
    pointer = Path(folder) / "last.json"
    if not pointer.exists():
        return None
    try:
        name = json.loads(pointer.read_text())["dir"]
        if not isinstance(name, str) or not STEP_FOLDER.fullmatch(name):
            raise ValueError(f"'dir' must name a step-NNNNNNNN folder beside it, not {name!r}")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise _cannot_resume(pointer, error) from error
    return Path(folder) / name


def _cannot_resume(pointer: Path, error: Exception) -> CheckpointError:
    return CheckpointError(
        f"cannot resume from {pointer}: {error}. Fix or remove the checkpoint folder to start fresh; "
        "it will not be overwritten silently."
    )


def saved_knowledge(folder: str | Path) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(entity, position) knowledge embeddings of `last`'s weights, so a resumed run needs no text encoder."""
    target = last_step(folder)
    if target is None:
        return None
    try:
        with safe_open(str(target / "model.safetensors"), framework="pt") as weights:
            return weights.get_tensor("entity_embeddings"), weights.get_tensor("position_embeddings")
    except (OSError, SafetensorError, KeyError) as error:
        raise _cannot_resume(Path(folder) / "last.json", error) from error


def load_training_state(folder: str | Path, model) -> dict | None:
    """Loads `last` into `model` and returns its state dict; None if there is no `last.json` (a fresh run).

    Raises:
        CheckpointError: `last.json` exists but what it points at is missing, truncated, outside the folder or for
            another model.
    """
    target = last_step(folder)
    if target is None:
        return None
    try:
        tensors = load_file(str(target / "model.safetensors"), device="cpu")
        state = torch.load(target / "state.pt", map_location="cpu", weights_only=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError, EOFError) as error:
        raise _cannot_resume(Path(folder) / "last.json", error) from error
    module = getattr(model, "module", model)
    try:
        module.load_state_dict(tensors)
    except RuntimeError as error:
        raise CheckpointError(f"{target}: weights do not fit this model/config ({error})") from error
    return state


def verify_weights(path: str | Path) -> None:
    """Raises CheckpointError naming `path` unless it is a whole, readable MedKLIP weights file."""
    read_header(path)
    try:
        load_file(str(path), device="cpu")
    except (OSError, SafetensorError) as error:
        raise CheckpointError(f"{path}: truncated or corrupt ({error}); remove it, or the folder, to retrain") from None


def remove_partial_writes(folder: str | Path) -> list[Path]:
    """Removes what a write killed midway left in `folder`: staging step folders and temporary weight files.

    Only names that this module itself writes (`.step-*` folders, `.*.safetensors.*.tmp`, `.last.json.*.tmp`) are
    touched; `last.json` never points at them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.iterdir():
        staging = path.is_dir() and path.name.startswith(".step-")
        temporary = path.is_file() and path.name.startswith(".") and path.name.endswith(".tmp")
        if staging or temporary:
            shutil.rmtree(path) if staging else path.unlink()
            removed.append(path)
    return removed
