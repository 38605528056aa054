"""Configuration: one dataclass per part, presets as YAML files in `configs/`, precedence defaults < preset < flags.

    from medklip.config import load_config, list_presets
    list_presets()                                   # ['base', 'debug', 'demo']
    config = load_config("demo", {"train.epochs": 3})
    config.model.d_model

Unknown keys are errors, in preset files and in overrides alike. The resolved config (`to_dict`) goes into every
checkpoint (and, later, every MLflow run).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PRESETS_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class ModelConfig:
    """The MedKLIP network (reference: medklip.md section 1)."""

    backbone: str = "resnet50"  # torchvision ResNet, cut after layer3 or layer2 (patch_stride); resnet18/34 for small
    backbone_weights: str | None = None  # a torchvision state_dict file to start from; None = random init (as MedKLIP)
    image_size: int = 224  # input side in pixels; patch tokens = (image_size / patch_stride) ** 2
    patch_stride: int = 16  # 16: tokens from ResNet layer3 (MedKLIP); 8: from layer2, a grid twice as fine
    d_model: int = 256  # width of the decoder
    num_heads: int = 4  # attention heads in the decoder
    num_decoder_layers: int = 4  # pre-norm transformer decoder layers
    ffn_dim: int = 1024  # hidden width of the decoder's feed-forward blocks
    dropout: float = 0.1  # dropout in the decoder layers and on the decoder output
    text_encoder: str = "emilyalsentzer/Bio_ClinicalBERT"  # Hub name, local folder, or "package:<python package>"
    text_pooling: str = "cls"  # "cls" (MedKLIP) or "mean" (sentence-embedding models such as MiniLM)
    text_max_length: int = 128  # tokenizer length for descriptions and position prompts (one length, train and test)
    exclude_unseen: bool = False  # drop MedKLIP's 7 "unseen" entities from the losses (zero-shot ablation)
    # Not in MedKLIP, for grounding (medklip/model/network.py): cross-attention on layer-normalised patch tokens, and
    # one learned key/value beside the patches per layer. Both off is the reference decoder.
    attention_token_norm: bool = True
    attention_sink: bool = True


@dataclass
class LossConfig:
    """L = L_cls + position_weight * L_pos + semantic_weight * L_sem (reference: medklip.md section 4)."""

    position_weight: float = 1.0  # a1: position-contrastive InfoNCE, only for present entities
    semantic_weight: float = 0.0  # a2: 1 - cos(pooled image, knowledge of present findings); 0 = off (as MedKLIP)
    num_negatives: int = 7  # sampled negative positions per positive
    box_weight: float = 1.0  # pull of boxed findings' attention into their boxes; only with train.boxes (not MedKLIP)


@dataclass
class AugmentSettings:
    """Train-time augmentation ranges (medklip.data.augment.AugmentConfig)."""

    scale: tuple[float, float] = (0.6, 1.0)  # crop area / image area
    max_rotation: float = 10.0  # degrees
    brightness: float = 0.2  # factor in [1 - b, 1 + b]
    contrast: float = 0.2  # factor in [1 - c, 1 + c]


@dataclass
class TrainConfig:
    """The optimisation loop (reference: medklip.md section 1.6)."""

    epochs: int = 100  # passes over the training split
    batch_size: int = 48  # images per optimizer step per process, before accumulation
    lr: float = 1e-4  # peak learning rate (AdamW)
    min_lr: float = 1e-5  # end of the cosine schedule
    weight_decay: float = 0.02  # AdamW decay on weights (never on norms and biases)
    warmup_steps: int = 500  # linear warm-up from min_lr to lr, in optimizer steps
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    grad_accumulation: int = 1  # micro-batches per optimizer step
    amp: str = "auto"  # "auto" (bf16 on GPUs that support it, fp32 on CPUs), "bf16", "off"
    channels_last: bool = True  # NHWC memory format for the convolutional backbone
    gradient_checkpointing: bool = False  # recompute activations in backward to save memory
    num_workers: int = 2  # DataLoader worker processes per training process
    seed: int = 0  # model init, data order, augmentation and negative sampling
    deterministic: bool = False  # deterministic algorithms: a killed and resumed run ends with the same bytes
    save_every_steps: int = 200  # write `last` this often (and at every epoch end)
    early_stopping_patience: int = 0  # stop after this many epochs without a better validation AUC; 0 = off
    max_steps: int = 0  # stop after this many optimizer steps (0 = no limit); for smoke tests
    select_by: str = "val_mean_auc"  # model_best's criterion: "val_mean_auc" (needs a val split) or "train_loss"
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    boxes: str | None = None  # CSV of lesion boxes on some train images (medklip.data.boxes); None: image labels only


@dataclass
class Config:
    """Everything a training run needs, resolved."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


class ConfigError(ValueError):
    """A config value outside what the code can run (one line, naming the field and its range)."""


# Every number a config may hold, with the range the code accepts: checked before anything is built or allocated,
# for presets, flags and the headers of weights files alike. Widths and depths are bounded so that a typed value or a
# hostile header cannot ask for a model that takes the machine down.
RANGES: dict[str, tuple[float, float]] = {
    "model.image_size": (32, 1024),
    "model.d_model": (8, 4096),
    "model.num_heads": (1, 64),
    "model.num_decoder_layers": (1, 48),
    "model.ffn_dim": (8, 16384),
    "model.dropout": (0.0, 0.9),
    "model.text_max_length": (8, 512),
    "loss.position_weight": (0.0, 100.0),
    "loss.semantic_weight": (0.0, 100.0),
    "loss.num_negatives": (1, 50),
    "loss.box_weight": (0.0, 100.0),
    "train.epochs": (1, 100_000),
    "train.batch_size": (1, 4096),
    "train.lr": (1e-12, 10.0),
    "train.min_lr": (0.0, 10.0),
    "train.weight_decay": (0.0, 10.0),
    "train.warmup_steps": (0, 10**8),
    "train.grad_clip": (0.0, 1e6),
    "train.grad_accumulation": (1, 1024),
    "train.num_workers": (0, 64),
    "train.seed": (0, 2**31 - 1),
    "train.save_every_steps": (1, 10**9),
    "train.early_stopping_patience": (0, 100_000),
    "train.max_steps": (0, 10**10),
    "train.augment.max_rotation": (0.0, 45.0),
    "train.augment.brightness": (0.0, 0.9),
    "train.augment.contrast": (0.0, 0.9),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "model.backbone": ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"),
    "model.text_pooling": ("cls", "mean"),
    "train.amp": ("auto", "bf16", "off"),
    "train.select_by": ("val_mean_auc", "train_loss"),
}


MAX_DECODER_PARAMETERS = 500_000_000  # the paper's decoder has about 4 million


def check(config: Config) -> Config:
    """`config` if every value is in its range, else ConfigError naming the first field that is not."""
    flat = flatten(to_dict(config))
    for name, (low, high) in RANGES.items():
        value = flat[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise ConfigError(f"{name} = {value!r} is out of range: {low:g} to {high:g}")
    for name, options in CHOICES.items():
        if flat[name] not in options:
            raise ConfigError(f"{name} = {flat[name]!r}: choose from {', '.join(options)}")
    model, train = config.model, config.train
    if model.patch_stride not in (8, 16):
        raise ConfigError(f"model.patch_stride must be one of [8, 16], got {model.patch_stride!r} (layer3 or layer2)")
    if model.d_model % model.num_heads:
        raise ConfigError(f"model.num_heads = {model.num_heads} does not divide model.d_model = {model.d_model}")
    decoder = model.num_decoder_layers * (8 * model.d_model**2 + 2 * model.d_model * model.ffn_dim)
    if decoder > MAX_DECODER_PARAMETERS:
        raise ConfigError(
            f"the decoder would have about {decoder:,} parameters (model.num_decoder_layers x (8 model.d_model^2 + "
            f"2 model.d_model x model.ffn_dim)), above the limit of {MAX_DECODER_PARAMETERS:,}"
        )
    if train.min_lr > train.lr:
        raise ConfigError(f"train.min_lr = {train.min_lr:g} is above train.lr = {train.lr:g}")
    low, high = train.augment.scale
    if not 0 < low <= high <= 1:
        raise ConfigError(f"train.augment.scale = {train.augment.scale}: two crop fractions 0 < low <= high <= 1")
    return config


def list_presets() -> list[str]:
    """Names of the preset files in `configs/`."""
    return sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))


def _apply(target: Any, values: dict, where: str) -> None:
    """Sets dataclass fields from a nested dict, refusing unknown keys and coercing tuples."""
    known = {f.name: f for f in dataclasses.fields(target)}
    for key, value in values.items():
        if key not in known:
            raise ValueError(f"{where}: unknown key {key!r}; known: {sorted(known)}")
        current = getattr(target, key)
        if isinstance(value, str) and isinstance(current, int | float) and not isinstance(current, bool):
            try:  # YAML reads "1e-5" (no dot) as a string
                value = float(value)
            except ValueError:
                raise ValueError(f"{where}.{key}: expected a number, got {value!r}") from None
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"{where}.{key}: expected a mapping, got {value!r}")
            _apply(current, value, f"{where}.{key}")
        elif isinstance(current, tuple):
            setattr(target, key, tuple(value))
        elif isinstance(current, bool) and not isinstance(value, bool):
            raise ValueError(f"{where}.{key}: expected true/false, got {value!r}")
        elif isinstance(current, float) and isinstance(value, int | float) and not isinstance(value, bool):
            setattr(target, key, float(value))
        elif isinstance(current, int) and not isinstance(current, bool) and isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"{where}.{key}: expected an integer, got {value!r}")
            setattr(target, key, int(value))
        else:
            setattr(target, key, value)


def load_config(preset: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults, then a preset (a name from `list_presets()` or a YAML path), then dotted overrides.

    Args:
        preset: "debug", "demo", "base", a path to a YAML file, or None for the defaults.
        overrides: {"train.epochs": 3, "model.d_model": 128, ...}; None values are ignored (unset CLI flags).

    Raises:
        ValueError: unknown preset, unknown key, or a value of the wrong kind; ConfigError (a ValueError) for a
            value out of its range (`RANGES`, `CHOICES`).
    """
    config = Config()
    if preset is not None:
        path = Path(preset)
        if not path.suffix:
            path = PRESETS_DIR / f"{preset}.yaml"
            if not path.is_file():
                raise ValueError(f"unknown preset {preset!r}; choose from {list_presets()} or give a YAML path")
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping at the top level")
        _apply(config, values, str(path))
    nested: dict = {}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        level = nested
        for parent in parents:
            level = level.setdefault(parent, {})
        level[leaf] = value
    _apply(config, nested, "override")
    return check(config)


def to_dict(config: Config) -> dict:
    """The resolved config as plain data (JSON/YAML-ready)."""
    return dataclasses.asdict(config)


def from_dict(values: dict) -> Config:
    """The inverse of `to_dict` (e.g. from a checkpoint); unknown keys are errors."""
    config = Config()
    _apply(config, values, "config")
    return check(config)


def flatten(values: dict, prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1e-4}} -> {"train.lr": 1e-4}, e.g. for logging params."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
