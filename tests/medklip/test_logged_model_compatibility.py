"""Models already in users' registries keep loading: a pyfunc model written by an earlier release, loaded now.

`tests/data/pyfunc-before-layout/` is a model that `medklip.tracking.log_model` logged on commit 835e033, the last
commit before `medklip/` became subpackages: its stored code runs `from medklip.tracking import set_pyfunc_model`
and its safetensors header is that release's. `expected_predictions.json` holds what that release's pyfunc predicted
for the three PNGs beside it (a debug-preset model, patch stride 8, random weights, seed 0).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from medklip.evaluation.predict import predict_files
from medklip.training.checkpoints import load_model
from medklip.vocabulary import ENTITIES

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "pyfunc-before-layout"


@pytest.fixture
def old_model(tmp_path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(FIXTURE, folder)
    return folder


def expected() -> pd.DataFrame:
    with open(FIXTURE / "expected_predictions.json") as handle:
        table = json.load(handle)
    return pd.DataFrame(table["data"], columns=table["columns"])


def test_the_fixture_is_the_old_code():
    assert "from medklip.tracking import set_pyfunc_model" in (FIXTURE / "mlflow_model.py").read_text()


def test_a_model_logged_before_the_layout_loads_and_predicts_as_it_did(old_model):
    pyfunc = mlflow.pyfunc.load_model(str(old_model))
    images = [(FIXTURE / f"case{i}.png").read_bytes() for i in range(3)]
    predicted = pyfunc.predict(pd.DataFrame({"image": images}))
    assert list(predicted.columns) == list(ENTITIES)
    np.testing.assert_allclose(predicted.to_numpy(), expected()[list(ENTITIES)].to_numpy(), rtol=0, atol=1e-6)


def test_its_weights_load_as_a_checkpoint(old_model):
    model = load_model(old_model / "artifacts" / "model_best.safetensors")
    [prediction] = predict_files(model, [str(FIXTURE / "case1.png")])
    row = expected().iloc[1]
    assert [prediction.probabilities[e] for e in ENTITIES] == pytest.approx(row[list(ENTITIES)].tolist(), abs=1e-6)


def test_the_compatibility_test_fails_without_the_old_entry(old_model, monkeypatch):
    # Negative control: without what `medklip.tracking` hands out to old models, loading the old model fails.
    import medklip.tracking

    def missing(name):
        raise AttributeError(name)

    monkeypatch.setattr(medklip.tracking, "__getattr__", missing)
    with pytest.raises(Exception, match="set_pyfunc_model"):
        mlflow.pyfunc.load_model(str(old_model))
