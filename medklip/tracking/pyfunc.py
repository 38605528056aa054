"""The logged MLflow model: a pyfunc built from code (`mlflow_model.py`) plus the safetensors weights; nothing pickled.

    mlflow.pyfunc.load_model("models:/medklip@champion").predict(pd.DataFrame({"image": [png_bytes]}))

`log_model` stores `medklip/tracking/mlflow_model.py` with each model; loading runs it, and it builds
`MedKLIPPyfunc`. Models logged before the package layout (whose stored code imports `medklip.tracking.runs`) load too:
`medklip.tracking.runs` hands out `set_pyfunc_model` for them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import ModelSignature
from mlflow.types.schema import AnyType, ColSpec, Schema

import medklip
from medklip.vocabulary import ENTITIES

logger = logging.getLogger(__name__)

MODEL_NAME = "model"  # the logged model's name inside a run
MODEL_URI_TAG = "medklip.model_uri"
MODEL_CODE = Path(__file__).resolve().parent / "mlflow_model.py"


class MedKLIPPyfunc(mlflow.pyfunc.PythonModel):
    """The MLflow model: a DataFrame with column `image` -> a DataFrame of the 75 entity probabilities.

    Each `image` cell is encoded file bytes (PNG, JPEG, 16-bit, ...), the same bytes base64-encoded (what MLflow's
    JSON serving sends), or a pixel array (H, W) or (H, W, 3).
    """

    # The signature is given explicitly at logging; this is MLflow's switch (used by its ChatModel) that turns off
    # its type-hint inspection, which otherwise warns on every import that `predict` has no list[...] hint.
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        from medklip.training.checkpoints import load_model

        self.model = load_model(context.artifacts["weights"])

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        import base64

        from medklip.evaluation.predict import predict_probabilities

        column = model_input["image"] if isinstance(model_input, pd.DataFrame) else model_input
        images = [base64.b64decode(value) if isinstance(value, str) else value for value in column]
        return pd.DataFrame(predict_probabilities(self.model, images), columns=ENTITIES).astype("float64")


def set_pyfunc_model() -> None:
    """Called by `medklip/tracking/mlflow_model.py`, the code MLflow stores with each model (models-from-code)."""
    mlflow.models.set_model(MedKLIPPyfunc())


SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec(AnyType(), "image")]), outputs=Schema([ColSpec("double", entity) for entity in ENTITIES])
)


def _input_example(image_size: int) -> pd.DataFrame:
    """One small synthetic radiograph as PNG bytes."""
    import io

    from PIL import Image

    from medklip.data.synthetic import make_case

    pixels = make_case(seed=0, index=0, size=max(64, image_size)).image
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return pd.DataFrame({"image": [buffer.getvalue()]})


def log_model(client: MlflowClient, run_id: str, weights: Path) -> str:
    """Logs `weights` as the run's pyfunc model (code + safetensors) and returns its `models:/` URI."""
    import torch

    from medklip.training.checkpoints import read_header

    config, _ = read_header(weights)
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"]
    with mlflow.start_run(run_id=run_id, log_system_metrics=False):
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=str(MODEL_CODE),
            artifacts={"weights": str(weights)},
            signature=SIGNATURE,
            input_example=_input_example(config.model.image_size),
            pip_requirements=requirements,  # plus medklip itself, installed where the model is served
            metadata={"medklip_version": medklip.__version__, "format": "safetensors"},
        )
    client.set_tag(run_id, MODEL_URI_TAG, info.model_uri)
    logger.info("MLflow: logged the model %s from %s", info.model_uri, weights)
    return info.model_uri


def load_pyfunc(model_uri: str):
    """`mlflow.pyfunc.load_model` (e.g. `models:/medklip@champion`)."""
    return mlflow.pyfunc.load_model(model_uri)
