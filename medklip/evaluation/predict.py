"""Predict findings for radiograph files: any size, PNG or JPEG, 8 or 16 bits, grayscale or colour.

    medklip predict --weights checkpoints/demo/model_best.safetensors chest1.png chest2.jpg
    medklip predict --weights W *.png --json > predictions.json
    medklip predict --weights W image.png --heatmap heatmaps/        # attention overlays of the top findings

Each image is decoded exactly as training data is prepared (`medklip.data.images.decode_image`), shown to the model as a
whole (resized to its input size), and scored for all 75 entities. A file that cannot be read gets an error entry;
the other files are still predicted (the exit code is 1 if any file failed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medklip.data.augment import full_view, warp_batch
from medklip.data.images import BadImage, decode_image, pixels_from_array
from medklip.safe_paths import file_name
from medklip.vocabulary import ENTITIES, EXCLUDED_ENTITY, NORMAL_ENTITIES, POSITIONS, TAIL_ENTITY

# Findings worth listing first: not the normal statements and not the catch-all buckets.
FINDING_INDICES = [
    i for i, e in enumerate(ENTITIES) if e not in NORMAL_ENTITIES and e not in (TAIL_ENTITY, EXCLUDED_ENTITY)
]


def untrained_entities(model) -> list[str]:
    """Entities the model never saw both present and absent in training (from its checkpoint's label counts).

    Their probabilities are listed but not ranked as findings: nothing taught the model what their absence looks
    like. Checkpoints without recorded counts give an empty list.
    """
    counts = getattr(model, "label_counts", None) or {}
    return [entity for entity in ENTITIES if counts and min(counts.get(entity, [0, 0])) == 0]


def ranked_findings(model, probabilities: np.ndarray, top: int) -> list[int]:
    """Indices of the `top` most probable findings, leaving out normal statements, catch-alls and untrained ones."""
    untrained = set(untrained_entities(model))
    candidates = [i for i in FINDING_INDICES if ENTITIES[i] not in untrained]
    return sorted(candidates, key=lambda i: -probabilities[i])[:top]


@dataclass
class Prediction:
    """One image's result: probabilities for all 75 entities, or the reason it could not be read."""

    image: str
    probabilities: dict[str, float] | None = None  # all 75; see `untrained` for those not to be trusted
    top_findings: list[dict] | None = None
    untrained: list[str] | None = None  # entities the model never saw both present and absent in training
    error: str | None = None
    heatmaps: list[str] | None = None

    def to_json(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if value is not None}


def model_input(image: bytes | np.ndarray, image_size: int) -> np.ndarray:
    """(S, S) uint8 model input of encoded image bytes or a pixel array: grayscale, the whole image resized.

    Raises:
        BadImage: the bytes or array are not a usable image.
    """
    if isinstance(image, (bytes, bytearray, memoryview)):
        pixels = decode_image(bytes(image), short_side=max(image_size, 256))
    else:
        pixels = pixels_from_array(image, short_side=max(image_size, 256))
    return warp_batch([pixels], [full_view(*pixels.shape)], image_size)[0, 0].numpy()


def load_image(path: str | Path, image_size: int) -> np.ndarray:
    """(S, S) uint8 model input of one file: decoded, grayscale, the whole image resized."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise BadImage("unreadable file", str(error)) from error
    return model_input(data, image_size)


@torch.no_grad()
def predict_probabilities(model, images: list[bytes | np.ndarray], batch_size: int = 16) -> np.ndarray:
    """(N, 75) probabilities for encoded images or pixel arrays, in order (the MLflow model's predict).

    Raises:
        BadImage: naming the first unusable image by its position.
    """
    model.eval()
    inputs = []
    for index, image in enumerate(images):
        try:
            inputs.append(model_input(image, model.config.image_size))
        except BadImage as error:
            detail = str(error).removeprefix(error.reason).lstrip(": ")
            raise BadImage(error.reason, f"image {index}{': ' + detail if detail else ''}") from error
    probabilities = [np.zeros((0, len(ENTITIES)), dtype=np.float32)]
    for start in range(0, len(inputs), batch_size):
        batch = torch.from_numpy(np.stack(inputs[start : start + batch_size]))[:, None]  # (B, 1, S, S)
        probabilities.append(torch.sigmoid(model(batch)["exist_logits"].float()).numpy())
    return np.concatenate(probabilities)


@torch.no_grad()
def predict_files(
    model, paths: list[str], top: int = 5, heatmap_dir: str | Path | None = None, batch_size: int = 16
) -> list[Prediction]:
    """Predictions for `paths`, in order; unreadable files get `error` instead of probabilities."""
    model.eval()
    size = model.config.image_size
    untrained = untrained_entities(model)
    results = [Prediction(str(path)) for path in paths]
    inputs = []
    for result in results:
        try:
            inputs.append((result, load_image(result.image, size)))
        except BadImage as error:
            result.error = f"{result.image}: {error}"
    for start in range(0, len(inputs), batch_size):
        chunk = inputs[start : start + batch_size]
        images = torch.from_numpy(np.stack([pixels for _, pixels in chunk]))[:, None]  # (B, 1, S, S)
        outputs = model(images, return_attention=heatmap_dir is not None)
        probabilities = torch.sigmoid(outputs["exist_logits"].float()).numpy()  # (B, 75)
        # Where: each entity's position features scored against the 51 position embeddings.
        position_scores = torch.softmax(outputs["position_features"].float() @ model.position_embeddings.T, -1)
        for row, (result, pixels) in enumerate(chunk):
            result.probabilities = {
                entity: round(float(p), 6) for entity, p in zip(ENTITIES, probabilities[row], strict=True)
            }
            order = ranked_findings(model, probabilities[row], top)
            result.untrained = untrained or None
            result.top_findings = []
            for index in order:
                best = torch.topk(position_scores[row, index], 3)
                result.top_findings.append(
                    {
                        "entity": ENTITIES[index],
                        "probability": round(float(probabilities[row, index]), 6),
                        "positions": [
                            {"position": POSITIONS[int(i)], "score": round(float(s), 4)}
                            for s, i in zip(best.values, best.indices, strict=True)
                        ],
                    }
                )
            if heatmap_dir is not None:
                name = Path(result.image).stem
                attention = outputs["attention"][row]
                result.heatmaps = write_overlays(attention, pixels, probabilities[row], name, order[:3], heatmap_dir)
    return results


def write_overlays(attention, pixels: np.ndarray, probabilities, name: str, indices: list[int], folder) -> list[str]:
    """Attention overlays `<folder>/<file_name(name)>_<entity>.png` of the given entities for one image.

    `name` may be any string (a report id from a CSV): `medklip.safe_paths.file_name` makes it a name that stays in
    `folder`; the returned paths are what callers list next to the original name.

    Args:
        attention: (layers, 75, T) cross-attention of the image.
        pixels: (S, S) uint8 model input the attention refers to.
        probabilities: the image's 75 probabilities (any sequence indexed by entity index).
        name: the image's name in file names and titles.
        indices: entity indices to draw.
        folder: output folder (created).
    """
    from medklip.evaluation.plots import overlay_heatmap
    from medklip.model.grounding import attention_heatmaps

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    maps = attention_heatmaps(attention[None], pixels.shape[0])[0]  # (75, S, S)
    written = []
    for index in indices:
        entity = ENTITIES[index]
        title = f"{name}: {entity}, p = {float(probabilities[index]):.2f}"
        path = folder / f"{file_name(name)}_{entity}.png"
        written.append(str(overlay_heatmap(pixels, np.asarray(maps[index]), title, path)))
    return written
