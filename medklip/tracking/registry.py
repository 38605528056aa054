"""The model registry's review loop: register a run's model, gate its promotion, list versions, promote by hand.

    medklip registry register --run-id RUN [--name medklip] [--margin 0.0]   # new version -> challenger (-> champion?)
    medklip registry list [--name medklip] [--json]
    medklip registry promote --version N --reason "reviewed by ..."           # a reviewer's override, recorded
    mlflow.pyfunc.load_model("models:/medklip@champion").predict(pd.DataFrame({"image": [png_bytes]}))

The gate: a new version always gets the alias `challenger`. It also becomes `champion` when there is no champion,
or when, on the same evaluation data, its mean AUC beats the champion's by a paired bootstrap whose 95% lower bound
of the difference is above `margin` (default 0). "The same data" is checked, not assumed: both models' predictions
must cover the same images with the same labels (`evaluation_fingerprint`). The challenger's come from its run's
`evaluation/predictions.parquet` (`medklip evaluate` logs it); the champion's from its own run when it was evaluated
on identical data, else the champion is scored here on the challenger's evaluation split. When no fair comparison is
possible the version stays challenger and the reason says why. The decision, the comparison table and the reason
are stored as version tags (`gate.*`), as the version's description, and as a markdown model card in the run
(`registry/model_card_v<N>.md`). A manual promotion records who, when, why and the champion it replaced
(`promotion.*` tags).
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from medklip.evaluation.evaluate import evaluation_fingerprint, read_predictions
from medklip.evaluation.metrics import paired_mean_auc_difference
from medklip.tracking.pyfunc import MODEL_URI_TAG
from medklip.tracking.runs import TrackingError, connect, reason, redact, tracking_uri

logger = logging.getLogger(__name__)

DEFAULT_NAME = "medklip"
CHALLENGER, CHAMPION = "challenger", "champion"
PREDICTIONS = "evaluation/predictions.parquet"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _user() -> str:
    try:
        return os.environ.get("MEDKLIP_REVIEWER") or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers running as an arbitrary uid)
        return "unknown"


def _run_predictions(registry: ModelRegistry, run_id: str, folder: Path):
    path = registry.run_file(run_id, PREDICTIONS, folder / run_id)
    return read_predictions(path) if path else None


def _score_champion(registry: ModelRegistry, name: str, champion, challenger_run, folder: Path):
    """(ids, scores, labels, source) of the champion on the challenger's evaluation data, or (None, reason)."""
    tags = challenger_run.data.tags
    fingerprint = tags.get("medklip.eval_fingerprint")
    if champion.run_id:
        champion_run = registry.run(champion.run_id)
        if fingerprint and champion_run.data.tags.get("medklip.eval_fingerprint") == fingerprint:
            predictions = _run_predictions(registry, champion.run_id, folder)
            if predictions is not None:
                return (*predictions, f"the champion's own evaluation (run {champion.run_id})")
    data_dir, split = tags.get("medklip.eval_dir"), tags.get("medklip.eval_split", "test")
    if not data_dir or not (Path(data_dir) / "manifest.json").is_file():
        return None, (
            f"the champion (version {champion.version}) was not evaluated on the challenger's evaluation data, and "
            f"that data ({data_dir or 'unknown'}) is not readable here to score it"
        )
    from medklip.evaluation.evaluate import predict_split

    weights = registry.version_weights(name, champion.version, folder / f"v{champion.version}")
    ids, scores, labels = predict_split(weights, data_dir, split)
    return ids, scores, labels, f"scored here on {data_dir} ({split} split)"


def compare(registry: ModelRegistry, name: str, challenger_run, champion, n_resamples: int, seed: int = 0) -> dict:
    """The paired comparison of the challenger's run with the champion version, or {"error": reason}."""
    with tempfile.TemporaryDirectory(prefix="medklip-gate-") as folder:
        folder = Path(folder)
        challenger = _run_predictions(registry, challenger_run.info.run_id, folder)
        if challenger is None:
            return {"error": f"run {challenger_run.info.run_id} has no {PREDICTIONS}: run `medklip evaluate` on it"}
        ids, scores, labels = challenger
        result = _score_champion(registry, name, champion, challenger_run, folder)
        if result[0] is None:
            return {"error": result[1]}
        champion_ids, champion_scores, champion_labels, source = result
    position = pd.Series(np.arange(len(champion_ids)), index=champion_ids)
    if set(ids) != set(champion_ids):
        return {"error": f"the champion's predictions ({source}) cover other images than the challenger's"}
    order = position[ids].to_numpy()
    if evaluation_fingerprint(ids, labels) != evaluation_fingerprint(champion_ids[order], champion_labels[order]):
        return {"error": f"the champion's predictions ({source}) carry other labels for the same images"}
    comparison = paired_mean_auc_difference(scores, champion_scores[order], labels, n_resamples=n_resamples, seed=seed)
    return {**comparison, "champion_source": source, "fingerprint": evaluation_fingerprint(ids, labels)}


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def model_card(name: str, version, run, decision: dict, metrics: dict | None) -> str:
    """The markdown model card stored with a registered version."""
    tags, params = run.data.tags, run.data.params
    comparison = decision.get("comparison") or {}
    lines = [
        f"# {name} version {version.version}",
        "",
        f"**Decision: {decision['alias']}.** {decision['reason']}",
        "",
        f"- MLflow run: `{run.info.run_id}` in {redact(tracking_uri())} (experiment {run.info.experiment_id})",
        f"- Registered: {_now()}; source commit `{tags.get('mlflow.source.git.commit', 'unknown')}`",
        f"- Data: {tags.get('medklip.data_source', 'unknown')}, {tags.get('medklip.data_images', '?')} images, "
        f"fingerprint `{tags.get('medklip.data_fingerprint', 'unknown')}`; triplets by {tags.get('medklip.extractor')}",
        f"- Training: backbone {params.get('model.backbone')}, {params.get('model.image_size')} px, "
        f"{params.get('train.epochs')} epochs, batch {params.get('train.batch_size')}, lr {params.get('train.lr')}",
        f"- Evaluation: {tags.get('medklip.eval_split', '?')} split of {tags.get('medklip.eval_dir', '?')}, "
        f"{tags.get('medklip.eval_n', '?')} images, fingerprint `{tags.get('medklip.eval_fingerprint', '?')}`",
        "",
        "## Promotion gate",
        "",
        "| | value |",
        "|---|---|",
        f"| challenger mean AUC | {_number(comparison.get('mean_auc_a', decision['mean_auc']))} |",
        f"| champion | {decision.get('champion_version') or 'none'} |",
    ]
    if comparison.get("difference") is not None:
        low, high = comparison["ci95"]
        lines += [
            f"| champion mean AUC (same images) | {_number(comparison['mean_auc_b'])} |",
            f"| difference | {_number(comparison['difference'])} (95% CI {_number(low)} to {_number(high)}) |",
            f"| margin the lower bound must beat | {decision['margin']} |",
            f"| images, entities, resamples | {comparison['n_images']}, {comparison['n_entities']}, "
            f"{comparison['n_resamples']} |",
            f"| champion predictions | {comparison['champion_source']} |",
        ]
    if metrics and metrics.get("per_entity"):
        scored = [(e, v) for e, v in metrics["per_entity"].items() if v.get("auc") is not None]
        scored.sort(key=lambda item: -item[1]["n_pos"])
        lines += ["", "## Per-entity AUC (most positives first)", "", "| entity | AUC | 95% CI | n_pos | n_neg |"]
        lines.append("|---|---|---|---|---|")
        for entity, values in scored[:20]:
            ci = values.get("auc_ci95") or [None, None]
            lines.append(
                f"| {entity} | {_number(values['auc'])} | {_number(ci[0])}-{_number(ci[1])} | {values['n_pos']} | "
                f"{values['n_neg']} |"
            )
    return "\n".join(lines) + "\n"


def _gate_tags(decision: dict) -> dict[str, str]:
    comparison = decision.get("comparison") or {}
    tags = {
        "gate.decision": decision["alias"],
        "gate.reason": decision["reason"],
        "gate.champion_version": decision.get("champion_version") or "",
        "gate.margin": str(decision["margin"]),
        "gate.at": _now(),
        "gate.challenger_mean_auc": f"{decision['mean_auc']:.6f}",
    }
    if comparison.get("difference") is not None:
        tags.update(
            {
                "gate.challenger_mean_auc": f"{comparison['mean_auc_a']:.6f}",
                "gate.champion_mean_auc": f"{comparison['mean_auc_b']:.6f}",
                "gate.difference": f"{comparison['difference']:.6f}",
                "gate.difference_ci95_low": f"{comparison['ci95'][0]:.6f}",
                "gate.difference_ci95_high": f"{comparison['ci95'][1]:.6f}",
                "gate.n_images": str(comparison["n_images"]),
                "gate.evaluation_fingerprint": comparison["fingerprint"],
                "gate.champion_predictions": comparison["champion_source"],
            }
        )
    tags["gate.table"] = json.dumps({k: v for k, v in comparison.items() if k != "error"})
    return tags


def register(run_id: str, name: str = DEFAULT_NAME, margin: float = 0.0, n_resamples: int = 1000) -> dict:
    """Registers the run's model as a new version and applies the gate (module docstring); returns the decision."""
    registry = ModelRegistry()
    run = registry.run(run_id)
    if "mean_auc" not in run.data.metrics:
        raise TrackingError(f"run {run_id} has no evaluation (metric mean_auc): run `medklip evaluate` on it first")
    champion = registry.alias(name, CHAMPION)
    version = registry.register(name, run_id, {"medklip.run_id": run_id})
    registry.set_alias(name, CHALLENGER, version.version)
    decision = {"name": name, "version": int(version.version), "margin": margin, "comparison": None}
    decision["mean_auc"] = run.data.metrics["mean_auc"]
    if champion is None:
        decision.update(alias=CHAMPION, reason="no champion yet: the first evaluated version becomes champion")
    else:
        decision["champion_version"] = str(champion.version)
        comparison = compare(registry, name, run, champion, n_resamples)
        if "error" in comparison:
            decision.update(alias=CHALLENGER, reason=f"not compared: {comparison['error']}")
        else:
            decision["comparison"] = comparison
            low = comparison["ci95"][0] if comparison["ci95"] else None
            better = low is not None and low > margin
            verdict = "beats" if better else "does not beat"
            decision.update(
                alias=CHAMPION if better else CHALLENGER,
                reason=(
                    f"mean AUC {comparison['mean_auc_a']:.4f} vs champion v{champion.version} "
                    f"{comparison['mean_auc_b']:.4f} on the same {comparison['n_images']} images: difference "
                    f"{comparison['difference']:+.4f}, 95% CI lower bound {_number(low)} {verdict} the margin {margin}"
                ),
            )
    if decision["alias"] == CHAMPION:
        registry.set_alias(name, CHAMPION, version.version)
    registry.set_tags(name, version.version, _gate_tags(decision))
    with tempfile.TemporaryDirectory(prefix="medklip-card-") as folder:
        path = registry.run_file(run_id, "evaluation/metrics.json", folder)
        metrics = json.loads(path.read_text()) if path else None
    card = model_card(name, version, run, decision, metrics)
    registry.describe(name, version.version, card)
    registry.log_text(run_id, card, f"registry/model_card_v{version.version}.md")
    decision["model_card"] = card
    logger.info("%s version %s: %s (%s)", name, version.version, decision["alias"], decision["reason"])
    return decision


def promote(version: int, reason: str, name: str = DEFAULT_NAME) -> dict:
    """A reviewer's manual promotion of `version` to champion, recorded as `promotion.*` version tags."""
    if not reason or not reason.strip():
        raise ValueError("a manual promotion needs --reason: it is the audit record of why")
    registry = ModelRegistry()
    target = registry.version(name, version)
    previous = registry.alias(name, CHAMPION)
    registry.set_alias(name, CHAMPION, target.version)
    tags = {
        "promotion.manual": "true",
        "promotion.reason": reason.strip(),
        "promotion.by": _user(),
        "promotion.at": _now(),
        "promotion.previous_champion": str(previous.version) if previous else "",
    }
    registry.set_tags(name, target.version, tags)
    return {"name": name, "version": int(target.version), **tags}


def list_versions(name: str = DEFAULT_NAME) -> list[dict]:
    """Every version, newest first, with aliases and tags."""
    registry = ModelRegistry()
    aliases = registry.aliases(name)
    records = []
    for version in registry.versions(name):
        record = version_record(version)
        record["aliases"] = sorted(alias for alias, number in aliases.items() if str(number) == str(version.version))
        records.append(record)
    return records


def format_versions(records: list[dict]) -> str:
    """The table `medklip registry list` prints."""
    if not records:
        return "no registered versions"
    lines = [f"{'version':>7}  {'aliases':<22}{'created (UTC)':<21}{'mean AUC':>9}  decision / promotion"]
    for record in records:
        tags = record["tags"]
        auc = tags.get("gate.challenger_mean_auc") or ""
        why = tags.get("gate.reason", "")
        if tags.get("promotion.manual") == "true":
            why = f"promoted by {tags['promotion.by']} at {tags['promotion.at']}: {tags['promotion.reason']}"
        auc = f"{float(auc):.4f}" if auc else "-"
        lines.append(
            f"{record['version']:>7}  {','.join(record['aliases']) or '-':<22}{record['created']:<21}{auc:>9}  {why}"
        )
    return "\n".join(lines)


# --- the MLflow registry calls ---------------------------------------------------------------------------------------
class ModelRegistry:
    """The MLflow model registry calls that `medklip.tracking.registry` needs (the promotion policy lives there)."""

    def __init__(self):
        self.client = connect()

    def run(self, run_id: str):
        try:
            return self.client.get_run(run_id)
        except MlflowException as error:
            raise TrackingError(f"run {run_id} not found in {redact(tracking_uri())}: {reason(error)}") from None

    def register(self, name: str, run_id: str, tags: dict[str, str]):
        """A new version of `name` from the run's logged model."""
        run = self.run(run_id)
        model_uri = run.data.tags.get(MODEL_URI_TAG)
        if not model_uri:
            raise TrackingError(f"run {run_id} has no logged model (tag {MODEL_URI_TAG}); evaluate it first")
        return mlflow.register_model(model_uri, name, tags=tags)

    def version(self, name: str, version: str | int):
        try:
            return self.client.get_model_version(name, str(version))
        except MlflowException as error:
            raise TrackingError(f"{name} version {version}: {reason(error)}") from None

    def alias(self, name: str, alias: str):
        """The version holding `alias`, or None."""
        try:
            return self.client.get_model_version_by_alias(name, alias)
        except MlflowException:
            return None

    def set_alias(self, name: str, alias: str, version: str | int) -> None:
        self.client.set_registered_model_alias(name, alias, str(version))

    def set_tags(self, name: str, version: str | int, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(name, str(version), key, str(value)[:5000])

    def describe(self, name: str, version: str | int, text: str) -> None:
        self.client.update_model_version(name, str(version), description=text)

    def versions(self, name: str) -> list:
        return list(self.client.search_model_versions(f"name = '{name}'", order_by=["version_number DESC"]))

    def aliases(self, name: str) -> dict[str, str]:
        """{alias: version}."""
        try:
            return dict(self.client.get_registered_model(name).aliases)
        except MlflowException:
            return {}

    def run_file(self, run_id: str, artifact: str, folder: str | Path) -> Path | None:
        """A run's artifact downloaded into `folder`, or None if the run has no such artifact."""
        try:
            return Path(self.client.download_artifacts(run_id, artifact, str(folder)))
        except (MlflowException, OSError):
            return None

    def version_weights(self, name: str, version: str | int, folder: str | Path) -> Path:
        """The safetensors weights of a registered version, downloaded into `folder`."""
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(folder))
        found = sorted(Path(local).rglob("*.safetensors"))
        if not found:
            raise TrackingError(f"{name} version {version} holds no safetensors weights")
        return found[0]

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def model_uri(self, name: str, alias_or_version: str) -> str:
        separator = "/" if str(alias_or_version).isdigit() else "@"
        return f"models:/{name}{separator}{alias_or_version}"


def version_record(version) -> dict:
    """A registered version as plain JSON-able data (for `medklip registry list --json`)."""
    return {
        "version": int(version.version),
        "run_id": version.run_id,
        "created": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(version.creation_timestamp / 1000)),
        "aliases": list(getattr(version, "aliases", []) or []),
        "tags": dict(version.tags or {}),
    }
