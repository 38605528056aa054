"""The `retrain` flow: prepare -> extract -> train -> evaluate -> register, each step through an execution backend.

    python -m flows.retrain                                  # the embedded default, in-process (`make run`)
    python -m flows.retrain --preset debug --epochs 2        # any parameter as a flag
    prefect deployment run retrain/retrain-on-demand -p preset=debug     # on the local stack (`make up deploy`)

Parameters are typed, described and bounded, so the Prefect UI's custom-run form is generated from them and invalid
values are refused before anything starts. Where things go, under `workdir`:

    data/<source key>/        prepared shards + triplets, shared by runs of the same source (skipped when unchanged)
    .cache/extract/           the extraction cache: a weekly run extracts only new reports
    checkpoints/<run>/        this flow run's checkpoints (`<run>` = retrain-<flow run id prefix>)
    results/<run>/            its metrics.json, plots and heatmaps

MLflow: `MLFLOW_TRACKING_URI`, else a local store in `./mlruns`. The run ends with a markdown artifact
(`retrain-summary`) and a final state whose message says what happened.

Split roles (`medklip.data.prepare.SPLIT_ROLES`): training learns on `train` and chooses model_best on `val`; the
registry's gate compares the new model with the champion on `gate`; `test` is evaluated once per run and reported in
the summary and the model card, and no step decides anything on it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.states import Completed
from pydantic import BaseModel, Field

from tasks import steps
from tasks.launchers import make_launcher

DEFAULT_SOURCE = "synthetic://2000?seed=0"
# The UI form's check of `source` (JSON schema `pattern`): the source kinds, and synthetic://N?seed=S&size=P within
# medklip.data.synthetic's bounds (N 1 to 100,000; P 64 to 1024), so a typed-in count cannot take a node down.
_CASES = r"([1-9][0-9]{0,4}|100000)"
_SIZE = r"size=(6[4-9]|[7-9][0-9]|[1-9][0-9]{2}|10[01][0-9]|102[0-4])"
_QUERY = rf"(seed=[0-9]{{1,9}}|{_SIZE})"
SOURCE_PATTERN = rf"^(folder://.+|hf://[^?]+(\?.*)?|synthetic://{_CASES}(\?{_QUERY}(&{_QUERY})?)?)$"


class Promotion(BaseModel):
    """What happens after evaluation (the registry's promotion gate: `medklip.tracking.registry`)."""

    register_model: bool = Field(True, description="Register the model in MLflow as a new version (challenger).")
    model_name: str = Field("medklip", min_length=1, max_length=100, description="Registered model name.")
    margin: float = Field(
        0.0,
        ge=-1.0,
        le=1.0,
        description="Champion only if the paired 95% lower bound of the mean-AUC gain exceeds this.",
    )
    resamples: int = Field(1000, ge=100, le=100_000, description="Paired bootstrap resamples for the gate.")


def source_key(source: str) -> str:
    """A folder name for a source: readable head + hash (two sources never share a data folder)."""
    head = "".join(c if c.isalnum() else "-" for c in source.split("?")[0])[:40].strip("-")
    return f"{head}-{hashlib.sha256(source.encode()).hexdigest()[:10]}"


def _mlflow_links(run_id: str, decision: dict | None) -> list[str]:
    from medklip.tracking.runs import redact, run_url, tracking_uri

    url = run_url(run_id)
    if url is None:
        store = tracking_uri()
        return [f"- MLflow run `{run_id}` in the local store `{store}` (`mlflow ui --backend-store-uri {store}`)"]
    lines = [f"- [MLflow run {run_id}]({url})"]
    if decision:
        base = redact(tracking_uri()).rstrip("/")
        name, version = decision["name"], decision["version"]
        lines.append(f"- [model {name} version {version}]({base}/#/models/{name}/versions/{version})")
    return lines


def summary_markdown(parameters: dict, outcomes: dict, metrics: dict, run_id: str, decision: dict | None) -> str:
    """The `retrain-summary` artifact."""
    lines = ["# MedKLIP retrain", "", "| step | outcome |", "|---|---|"]
    lines += [f"| {step} | {outcome} |" for step, outcome in outcomes.items()]
    ci = metrics.get("mean_auc_ci95") or [None, None]
    number = lambda value: "n/a" if value is None else f"{value:.3f}"  # noqa: E731
    lines += ["", "## Evaluation (test split: reported, used by no decision)", "", "| metric | value |", "|---|---|"]
    lines += [
        f"| mean AUC | {number(metrics.get('mean_auc'))} (95% CI {number(ci[0])}-{number(ci[1])}) over "
        f"{metrics.get('n_entities_with_auc')} entities |",
        f"| accuracy (validation thresholds) | {number(metrics.get('accuracy'))} |",
        f"| test images | {metrics.get('n_test')} |",
    ]
    scored = [(e, v) for e, v in metrics.get("per_entity", {}).items() if v.get("auc") is not None]
    for entity, values in sorted(scored, key=lambda item: -item[1]["n_pos"])[:8]:
        lines.append(f"| AUC {entity} (n_pos {values['n_pos']}) | {number(values['auc'])} |")
    promotion = metrics.get("promotion") or {}
    if promotion.get("n"):
        lines.append(
            f"| mean AUC on the promotion split ({promotion['split']}, what the gate compares) | "
            f"{number(promotion.get('mean_auc'))} over {promotion['n']} images |"
        )
    lines += ["", "## Registry", ""]
    if decision:
        lines.append(f"**{decision['name']} version {decision['version']}: {decision['alias']}.** {decision['reason']}")
        split = decision.get("split") or {}
        if split:
            why = f" ({split['reason']})" if split.get("reason") else ""
            lines += ["", f"- gate split: {split['split']} (role {split['role']}){why}"]
        lines.append(f"- label drift: {(decision.get('drift') or {}).get('summary', 'n/a')}")
    else:
        lines.append("Not registered (promotion.register_model is off).")
    lines += ["", "## Links", "", *_mlflow_links(run_id, decision), "", "## Parameters", "", "```json"]
    lines += [json.dumps(parameters, indent=2, default=str), "```"]
    return "\n".join(lines) + "\n"


def stage_times(seconds: dict[str, float]) -> str:
    """ "prepare 12.0 s, extract 1.5 s, ..., total 390.2 s" """
    parts = [f"{stage} {value:.1f} s" for stage, value in seconds.items()]
    return ", ".join([*parts, f"total {sum(seconds.values()):.1f} s"])


def point_latest(root: Path, result: dict) -> dict[str, Path]:
    """`data/latest`, `checkpoints/latest` and `results/latest` -> this run's folders (relative links), so the
    README's next steps name paths that exist. Returns the links made."""
    links = {}
    for name, target in (("data", result["data"]), ("checkpoints", result["checkpoints"]),
                         ("results", result["results"])):  # fmt: skip
        link = root / name / "latest"
        if link.is_symlink() or not link.exists():
            link.unlink(missing_ok=True)
            link.symlink_to(Path(target).name, target_is_directory=True)
            links[name] = link
    return links


@flow(name="retrain", description="Prepare, extract, train, evaluate and register MedKLIP.", log_prints=True)
def retrain(
    source: Annotated[
        str,
        Field(
            pattern=SOURCE_PATTERN,
            max_length=1000,
            description="folder://DIR, hf://NAME[?split=S] or synthetic://N?seed=S[&size=P] (N up to 100000)",
        ),
    ] = DEFAULT_SOURCE,
    preset: Annotated[
        Literal["debug", "demo", "base"],
        Field(description="debug: ~1-2 min on 2 cores; demo: ~8 min; base: the paper's, GPUs"),
    ] = "demo",
    epochs: Annotated[int | None, Field(ge=1, le=1000, description="Epochs (empty: the preset's)")] = None,
    batch_size: Annotated[
        int | None, Field(ge=1, le=4096, description="Batch size per process (empty: preset)")
    ] = None,
    lr: Annotated[float | None, Field(gt=0, le=1, description="Peak learning rate (empty: the preset's)")] = None,
    extractor: Annotated[Literal["rules", "radgraph"], Field(description="Triplet extractor")] = "rules",
    boxes: Annotated[
        str | None,
        Field(description="CSV of lesion boxes on some training images (empty: image labels only); under workdir"),
    ] = None,
    nodes: Annotated[int, Field(ge=1, le=64, description="Training nodes (more than 1 needs a cluster backend)")] = 1,
    gpus_per_node: Annotated[int, Field(ge=0, le=16, description="GPUs per node (0: one CPU process)")] = 0,
    backend: Annotated[
        Literal["local", "kubernetes"], Field(description="Where steps run: local subprocesses or Kubernetes Jobs")
    ] = "local",
    promotion: Promotion = Promotion(),  # noqa: B008 (a pydantic default, copied per run)
    workdir: Annotated[str, Field(description="Folder for data, caches, checkpoints and results")] = ".",
):
    """Retrains MedKLIP and registers the result; see the module docstring for where outputs go.

    Args:
        source: the data: folder://DIR (images + reports.csv), hf://NAME[?split=S], or synthetic://N?seed=S.
        preset: debug (tests; about 1-2 minutes end to end on 2 cores), demo (CPU, about 8 minutes), base (the
            paper's configuration, GPUs).
        epochs: training epochs; empty keeps the preset's.
        batch_size: batch size per process; empty keeps the preset's.
        lr: peak learning rate; empty keeps the preset's.
        extractor: rules (offline, fast) or radgraph (needs the modern-radgraph-xl weights).
        boxes: a CSV of lesion boxes (id, entity, x0, y0, x1, y1 in source pixels) on some training images, whose
            attention then learns from them (`train.boxes`, medklip/data/boxes.py); a relative path is under workdir.
        nodes: training nodes; more than one needs the kubernetes backend.
        gpus_per_node: GPUs (and training processes) per node; 0 trains one process on the CPU.
        backend: where the steps run: local subprocesses, or Kubernetes Jobs (then workdir is the shared
            volume's mount path, /workspace).
        promotion: registration and the champion gate.
        workdir: folder for data, caches, checkpoints and results (shared storage on a cluster).
    """
    logger = get_run_logger()
    if nodes > 1 and backend == "local":  # refused before any step runs
        raise ValueError(f"nodes={nodes} needs backend=kubernetes: the local backend runs one machine")
    launcher = make_launcher(backend)
    root = Path(workdir).resolve()
    run_name = f"retrain-{str(flow_run.id or 'local')[:8]}"
    data_dir = root / "data" / source_key(source)
    save, results = root / "checkpoints" / run_name, root / "results" / run_name
    overrides = []
    for flag, value in (("--epochs", epochs), ("--batch-size", batch_size), ("--lr", lr)):
        if value is not None:
            overrides += [flag, str(value)]
    if boxes:
        overrides += ["--set", f"train.boxes={root / boxes}"]  # an absolute path stays as it is

    seconds: dict[str, float] = {}  # wall time of each stage, printed at the end of the run

    def timed(stage: str, call, *args):
        start = time.monotonic()
        try:
            return call(*args)
        finally:
            seconds[stage] = round(time.monotonic() - start, 1)

    outcomes = {"prepare": timed("prepare", steps.prepare, launcher, source, data_dir)}
    outcomes["extract"] = timed("extract", steps.extract, launcher, data_dir, extractor, root / ".cache" / "extract")
    run_id = timed("train", steps.train, launcher, data_dir, save, preset, overrides, nodes, gpus_per_node)
    outcomes["train"] = f"checkpoints in {save}"
    metrics = timed("evaluate", steps.evaluate, launcher, save / "model_best.safetensors", data_dir, results)
    outcomes["evaluate"] = f"results in {results}"
    decision = None
    if promotion.register_model:
        decision = timed(
            "register", steps.register, run_id, promotion.model_name, promotion.margin, promotion.resamples
        )
        outcomes["register"] = f"version {decision['version']}: {decision['alias']}"
    logger.info("wall time per stage: %s", stage_times(seconds))
    parameters = {"source": source, "preset": preset, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                  "extractor": extractor, "boxes": boxes, "nodes": nodes, "gpus_per_node": gpus_per_node,
                  "backend": backend, "promotion": promotion.model_dump(), "workdir": str(root)}  # fmt: skip
    create_markdown_artifact(
        summary_markdown(parameters, outcomes, metrics, run_id, decision),
        key="retrain-summary",
        description="metrics, the registry decision and links of this retrain run",
    )
    auc = metrics.get("mean_auc")
    message = f"mean AUC {auc:.3f}" if auc is not None else "no AUC (no entity with both classes)"
    if decision:
        message += f"; {decision['name']} v{decision['version']} is {decision['alias']}"
    logger.info("retrain finished: %s", message)
    result = {"run_id": run_id, "checkpoints": str(save), "results": str(results), "metrics": metrics}
    result.update(outcomes=outcomes, seconds=seconds, data=str(data_dir))
    result["decision"] = {k: v for k, v in (decision or {}).items() if k != "model_card"} or None
    return Completed(message=message, data=result)


def main(argv: list[str] | None = None) -> int:
    """`python -m flows.retrain [--preset P] ...`: one run in-process; prints metrics, version and where to look."""
    parser = argparse.ArgumentParser(prog="python -m flows.retrain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--source", default=DEFAULT_SOURCE)
    parser.add_argument("--preset", default="demo", choices=("debug", "demo", "base"))
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--extractor", default="rules", choices=("rules", "radgraph"))
    parser.add_argument("--gpus-per-node", type=int, default=0)
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--backend", default="local", choices=("local", "kubernetes"))
    parser.add_argument("--margin", type=float, default=0.0, help="promotion margin")
    parser.add_argument("--workdir", default=".")
    args = parser.parse_args(argv)
    state = retrain(
        source=args.source, preset=args.preset, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        extractor=args.extractor, gpus_per_node=args.gpus_per_node, nodes=args.nodes, backend=args.backend,
        promotion=Promotion(margin=args.margin),
        workdir=args.workdir, return_state=True,
    )  # fmt: skip
    if not state.is_completed():
        print(f"retrain did not complete: {state.message}", file=sys.stderr)
        return 1
    result = state.result()
    metrics = result["metrics"]
    links = point_latest(Path(args.workdir).resolve(), result)
    print(f"\nretrain: {state.message}")
    print(f"  wall time    {stage_times(result['seconds'])}")
    print(f"  checkpoints  {result['checkpoints']}\n  results      {result['results']} (metrics.json, plots)")
    scored = [(entity, values) for entity, values in metrics["per_entity"].items() if values["auc"] is not None]
    for entity, values in sorted(scored, key=lambda item: -item[1]["n_pos"])[:6]:
        print(f"  AUC {entity:<16} {values['auc']:.3f}  (n_pos {values['n_pos']})")
    if result["decision"]:
        decision = result["decision"]
        print(f"  model        {decision['name']} version {decision['version']}, alias {decision['alias']}")
    from medklip.tracking.runs import redact, tracking_uri

    uri = redact(tracking_uri())  # the store this run used (MLflow exports MLFLOW_TRACKING_URI once used)
    print("\nUIs:")
    if uri.startswith("http"):
        print(f"  MLflow   {uri}")
    else:
        print(f"  MLflow   mlflow ui --backend-store-uri {uri}  (then http://127.0.0.1:5000)")
    api = os.environ.get("PREFECT_API_URL")
    if api:
        print(f"  Prefect  {api.removesuffix('/api')} (this run is there)")
    else:
        print("  Prefect  this run used a temporary in-process server and is not kept; to see runs in the UI:")
        print("           make up, then `source .stack/env` before `make run` (or start retrain-on-demand there)")
    weights = Path(result["checkpoints"]) / "model_best.safetensors"
    data = Path(result["data"])
    if len(links) == 3:  # the README's next steps, with the links this run just made
        weights, data = links["checkpoints"] / "model_best.safetensors", links["data"]
    image = next(iter(sorted((Path(result["data"]) / "source" / "images").glob("*.png"))), None)
    print('\nNext (README, "next steps"):')
    print("  source .venv/bin/activate")
    print(f"  medklip data inspect {_shown(data)}")
    print(f"  medklip evaluate --weights {_shown(weights)} --data {_shown(data)} --out results/again")
    if image is not None:
        print(f"  medklip predict --weights {_shown(weights)} {_shown(data / 'source' / 'images' / image.name)}")
    print("  medklip registry list")
    return 0


def _shown(path: Path) -> str:
    """`path` relative to the current folder when it is under it (as a user would type it)."""
    try:
        return str(Path(os.path.abspath(path)).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
