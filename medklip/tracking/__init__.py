"""Tracking: MLflow, and the only package that imports it. `runs` (the connection, a training run's params, tags
and metrics, evaluation results), `pyfunc` (the logged model: code plus safetensors), `mlflow_model` (the code file
MLflow stores with each model), `registry` (registered versions and the promotion gate). The last layer: it may
import all the others.
"""


def __getattr__(name: str):
    # Models logged before the package layout store code that runs `from medklip.tracking import set_pyfunc_model`;
    # they must keep loading from users' registries. Resolved lazily so `import medklip.tracking.runs` stays cheap.
    if name == "set_pyfunc_model":
        from medklip.tracking.pyfunc import set_pyfunc_model

        return set_pyfunc_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
