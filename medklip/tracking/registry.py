"""The model registry's review loop: register a run's model, gate its promotion, list versions, promote by hand.

    medklip registry register --run-id RUN [--name medklip] [--margin 0.0]   # new version -> challenger (-> champion?)
    medklip registry list [--name medklip] [--json]
    medklip registry promote --version N --reason "reviewed by ..."           # a reviewer's override, recorded
    mlflow.pyfunc.load_model("models:/medklip@champion").predict(pd.DataFrame({"image": [png_bytes]}))

What "champion" means: better than the previous champion on data that neither model was chosen on. The split roles
(`medklip.data.prepare.SPLIT_ROLES`) are never mixed: `val` chose each model's weights and thresholds, so the gate
compares on the `gate` split (`gate_predictions.parquet`, written by `medklip evaluate`), and `test` is reported in
the model card and the `report.*` tags, and read by no decision. A new version always gets the alias `challenger`.
It also becomes `champion` when there is no champion, or when its mean AUC on the gate split beats the champion's by
a paired bootstrap, resampling whole patients, whose 95% lower bound of the difference is above `margin` (default 0).

The gate refuses to compare, and the version stays challenger with the reason stored (`gate.outcome = refused`):

- on predictions of a split whose role is not `promotion`: `test` never (its role is report), `val` only when the data
  has no gate split (a folder prepared before gate splits existed), and then the reason says the comparison is
  optimistic for the challenger;
- when gate images (or patients) are in the train or val split of either model's training data (checked image by
  image where that data is readable and unchanged, else by the split scheme, and stated as such).

"The same data" is checked, not assumed: both models' predictions must cover the same images with the same labels
(`evaluation_fingerprint`); the champion's come from its own run when it was evaluated on the identical gate split,
else the champion is scored here. When no fair comparison is possible the version stays challenger (`not compared`).
At registration the label prevalence of the two models' training data is compared (`medklip.evaluation.drift`): a
table, a plot and a line in the model card, and the gate's reason names entities that moved. The decision, the
comparison table and the reason are stored as version tags (`gate.*`, `report.*`), as the version's description, and
as a markdown model card in the run (`registry/model_card_v<N>.md`). A manual promotion records who, when, why and
the champion it replaced (`promotion.*` tags).
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

from medklip.data.prepare import PreparedData, hashed_groups, load_manifest
from medklip.evaluation.drift import DEFAULT_THRESHOLD, describe_shift, prevalence_shift, shift_csv
from medklip.evaluation.evaluate import evaluation_fingerprint, read_groups, read_predictions
from medklip.evaluation.metrics import paired_mean_auc_difference
from medklip.tracking.pyfunc import MODEL_URI_TAG
from medklip.tracking.runs import (
    PREVALENCE_FILE,
    TrackingError,
    connect,
    reason,
    redact,
    split_scheme,
    tracking_uri,
    training_prevalence,
)

logger = logging.getLogger(__name__)

DEFAULT_NAME = "medklip"
CHALLENGER, CHAMPION = "challenger", "champion"
PREDICTIONS = "evaluation/predictions.parquet"  # the report split's (test): never read by the gate
GATE_PREDICTIONS = "evaluation/gate_predictions.parquet"  # the promotion split's: what the gate compares
REFUSED, NOT_COMPARED, COMPARED, FIRST = "refused", "not compared", "compared", "first version"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _user() -> str:
    try:
        return os.environ.get("MEDKLIP_REVIEWER") or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers running as an arbitrary uid)
        return "unknown"


class Refused(Exception):
    """The gate will not compare on this data: the message is the reason stored on the version."""


def _run_predictions(registry: ModelRegistry, run_id: str, folder: Path, artifact: str = GATE_PREDICTIONS):
    """(ids, scores, labels, groups) of a run's predictions artifact, or None."""
    path = registry.run_file(run_id, artifact, folder / run_id)
    return (*read_predictions(path), read_groups(path)) if path else None


# --- which split the gate compares on, and whether training touched it ------------------------------------------
def gate_split(run) -> dict:
    """The promotion split a run was evaluated on (`medklip.gate_*` tags), checked against the split roles.

    Raises:
        Refused: the predictions are not on a split the gate may decide on.
    """
    tags = run.data.tags
    fingerprint = tags.get("medklip.gate_fingerprint", "")
    if not fingerprint:
        raise Refused(
            f"run {run.info.run_id} has no promotion-split predictions (it was evaluated before split roles existed, "
            "so only on its test split, and the test split never decides): run `medklip evaluate` on it again"
        )
    if fingerprint.startswith("none:"):
        raise Refused(f"run {run.info.run_id} has no promotion-split predictions ({fingerprint[5:].strip()})")
    split = {key: tags.get(f"medklip.gate_{key}", "") for key in ("split", "role", "reason", "dir", "n")}
    split["fingerprint"] = fingerprint
    manifest = load_manifest(split["dir"]) if split["dir"] else None
    roles = (manifest or {}).get("split_roles")
    if roles is not None:  # the folder's manifest is the authority where it can be read
        split["role"] = roles.get(split["split"], "")
    if split["role"] == "promotion":
        split["reason"] = ""
        return split
    if split["role"] == "selection" and split["reason"] and not _has_gate(manifest):
        return split  # a folder without a gate split: val, with the reason stated wherever the decision is
    why = {
        "report": "the test split is reported, never used by a decision",
        "selection": "it chose model_best and the thresholds, and the data has a gate split for this",
        "training": "the models were trained on it",
    }.get(split["role"], "it has no promotion role in the manifest")
    raise Refused(f"the comparison split {split['split']!r} has the role {split['role'] or 'unknown'}: {why}")


def _has_gate(manifest: dict | None) -> bool:
    return bool((manifest or {}).get("splits", {}).get("gate"))


def training_contact(run, who: str, ids: np.ndarray, groups: np.ndarray | None, gate: dict) -> str:
    """How it is known that `who`'s training (train and val splits) never saw the gate images; one sentence.

    When the gate is on val (a folder without a gate split, with the stated reason), only train is checked: val chose
    the model, which is what that reason says.

    Raises:
        Refused: some gate images, or images of gate patients, were in its train or val split.
    """
    tags = run.data.tags
    gate_manifest = load_manifest(gate["dir"]) if gate.get("dir") else None
    data_dir = tags.get("medklip.data_dir", "")
    manifest = load_manifest(data_dir) if data_dir else None
    same_source = gate_manifest is not None and manifest is not None and manifest["source"] == gate_manifest["source"]
    if manifest is not None and manifest.get("fingerprint") == tags.get("medklip.data_fingerprint"):
        if gate_manifest is not None and not same_source:
            return f"{who} was trained on another source ({redact(manifest['source'])}): no image is shared by id"
        data = PreparedData(data_dir)
        touched = ("train",) if gate.get("split") == "val" else ("train", "val")
        selected = np.isin(data.table["split"].to_numpy(), touched)
        seen_ids = set(data.table["id"].astype(str).to_numpy()[selected])
        shared = int(sum(identifier in seen_ids for identifier in ids))
        shared_groups = 0
        if groups is not None:
            shared_groups = len(set(groups) & set(hashed_groups(data.split_groups()[selected])))
        if shared or shared_groups:
            raise Refused(
                f"{shared} gate images and {shared_groups} gate patients (split groups) are in the "
                f"{' or '.join(touched)} split of {who}'s training data ({data_dir}): the gate would score it on data "
                "it was trained or chosen on"
            )
        return f"verified: no gate image or patient is in {who}'s {' or '.join(touched)} split ({data_dir})"
    scheme = tags.get("medklip.split_scheme")
    if scheme and gate_manifest is not None and scheme == split_scheme(gate_manifest):
        return (
            f"{who}'s training data is not readable here as it was, but has the gate data's split scheme (source, "
            "seed, fractions, grouping): the split is a hash of the patient, so the gate's were not in its train or val"
        )
    return (
        f"not verified for {who}: its training data ({data_dir or 'unknown'}) is not readable here as it was trained "
        "on, and its split scheme is unknown or differs from the gate data's"
    )


def _score_champion(registry: ModelRegistry, name: str, champion, gate: dict, folder: Path):
    """(ids, scores, labels, source) of the champion on the challenger's gate split.

    Raises:
        Refused: no fair way to get them (message prefixed "not compared" by the caller).
    """
    if champion.run_id:
        champion_run = registry.run(champion.run_id)
        if champion_run.data.tags.get("medklip.gate_fingerprint") == gate["fingerprint"]:
            predictions = _run_predictions(registry, champion.run_id, folder)
            if predictions is not None:
                return (*predictions[:3], f"the champion's own evaluation of the same split (run {champion.run_id})")
    data_dir = gate["dir"]
    if not data_dir or load_manifest(data_dir) is None:
        raise Refused(
            f"the champion (version {champion.version}) was not evaluated on the challenger's gate split, and that "
            f"data ({data_dir or 'unknown'}) is not readable here to score it"
        )
    from medklip.evaluation.evaluate import predict_split

    weights = registry.version_weights(name, champion.version, folder / f"v{champion.version}")
    ids, scores, labels = predict_split(weights, data_dir, gate["split"])
    return ids, scores, labels, f"scored here on {data_dir} ({gate['split']} split)"


class NotCompared(Exception):
    """A fair comparison is impossible (no predictions, other images or labels): the reason stored on the version."""


def compare(registry: ModelRegistry, name: str, challenger_run, champion, n_resamples: int, seed: int = 0) -> dict:
    """The paired comparison of the challenger's run with the champion version on the gate split.

    Raises:
        Refused: the split or the training data rules the comparison out (`gate_split`, `training_contact`).
        NotCompared: the predictions needed are missing or do not match.
    """
    gate = gate_split(challenger_run)
    with tempfile.TemporaryDirectory(prefix="medklip-gate-") as folder:
        folder = Path(folder)
        challenger = _run_predictions(registry, challenger_run.info.run_id, folder)
        if challenger is None:
            raise NotCompared(f"run {challenger_run.info.run_id} has no {GATE_PREDICTIONS}: run `medklip evaluate`")
        ids, scores, labels, groups = challenger
        if evaluation_fingerprint(ids, labels) != gate["fingerprint"]:
            raise NotCompared(f"{GATE_PREDICTIONS} of run {challenger_run.info.run_id} is not the one its tags name")
        contact = [training_contact(challenger_run, "the challenger", ids, groups, gate)]
        if champion.run_id:
            contact.append(training_contact(registry.run(champion.run_id), "the champion", ids, groups, gate))
        try:
            scored = _score_champion(registry, name, champion, gate, folder)
        except Refused as error:
            raise NotCompared(str(error)) from None
    champion_ids, champion_scores, champion_labels, source = scored
    position = pd.Series(np.arange(len(champion_ids)), index=champion_ids)
    if set(ids) != set(champion_ids):
        raise NotCompared(f"the champion's predictions ({source}) cover other images than the challenger's")
    order = position[ids].to_numpy()
    if evaluation_fingerprint(ids, labels) != evaluation_fingerprint(champion_ids[order], champion_labels[order]):
        raise NotCompared(f"the champion's predictions ({source}) carry other labels for the same images")
    comparison = paired_mean_auc_difference(
        scores, champion_scores[order], labels, n_resamples=n_resamples, seed=seed, groups=groups
    )
    return {**comparison, "champion_source": source, "fingerprint": gate["fingerprint"], "split": gate,
            "training_contact": contact}  # fmt: skip


# --- label drift between the two models' training data ---------------------------------------------------------
def _prevalence(registry: ModelRegistry, run, folder: Path) -> dict | None:
    """The train-split label prevalence a run logged at training; else computed from its data, if unchanged."""
    path = registry.run_file(run.info.run_id, PREVALENCE_FILE, folder / run.info.run_id)
    if path is not None:
        return json.loads(path.read_text())
    data_dir = run.data.tags.get("medklip.data_dir")
    manifest = load_manifest(data_dir) if data_dir else None
    if manifest is not None and manifest.get("fingerprint") == run.data.tags.get("medklip.data_fingerprint"):
        return training_prevalence(data_dir)
    return None


def drift(registry: ModelRegistry, run, champion, version: int, threshold: float) -> dict:
    """The label-prevalence shift from the champion's training data to this run's, logged to the run as
    `registry/drift_v<N>.json|.csv|.png`; {"summary": line, "shift": table or None}."""
    from medklip.evaluation.plots import plot_prevalence_shift

    with tempfile.TemporaryDirectory(prefix="medklip-drift-") as folder:
        folder = Path(folder)
        current = _prevalence(registry, run, folder)
        reference = _prevalence(registry, registry.run(champion.run_id), folder) if champion.run_id else None
        if current is None or reference is None:
            whose = "this version's" if current is None else f"the champion's (version {champion.version})"
            return {"summary": f"no drift report: {whose} training-label prevalence is unknown", "shift": None}
        shift = prevalence_shift(reference, current, threshold=threshold)
        shift["champion_version"] = str(champion.version)
        registry.log_text(run.info.run_id, json.dumps(shift, indent=2), f"registry/drift_v{version}.json")
        registry.log_text(run.info.run_id, shift_csv(shift), f"registry/drift_v{version}.csv")
        plot = plot_prevalence_shift(shift, folder / f"drift_v{version}.png")
        registry.log_artifact(run.info.run_id, plot, "registry")
    return {"summary": describe_shift(shift), "shift": shift}


# --- the model card and the tags -----------------------------------------------------------------------------------
def _number(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _report(run) -> dict:
    """The report split's numbers (test): stored and shown, read by no decision."""
    tags, metrics = run.data.tags, run.data.metrics
    low, high = metrics.get("mean_auc_ci95_low"), metrics.get("mean_auc_ci95_high")
    return {
        "split": tags.get("medklip.eval_split", "?"),
        "role": tags.get("medklip.eval_role") or ("report" if tags.get("medklip.eval_split") == "test" else "?"),
        "mean_auc": metrics.get("mean_auc"),
        "ci95": [low, high] if low is not None and high is not None else None,
        "n": tags.get("medklip.eval_n", "?"),
        "fingerprint": tags.get("medklip.eval_fingerprint", "?"),
    }


def model_card(name: str, version, run, decision: dict, metrics: dict | None) -> str:
    """The markdown model card stored with a registered version."""
    tags, params = run.data.tags, run.data.params
    comparison = decision.get("comparison") or {}
    split = decision.get("split") or {}
    report = decision["report"]
    lines = [
        f"# {name} version {version.version}",
        "",
        f"**Decision: {decision['alias']}** ({decision['outcome']}). {decision['reason']}",
        "",
        f"- MLflow run: `{run.info.run_id}` in {redact(tracking_uri())} (experiment {run.info.experiment_id})",
        f"- Registered: {_now()}; source commit `{tags.get('mlflow.source.git.commit', 'unknown')}`",
        f"- Data: {tags.get('medklip.data_source', 'unknown')}, {tags.get('medklip.data_images', '?')} images, "
        f"fingerprint `{tags.get('medklip.data_fingerprint', 'unknown')}`; triplets by "
        f"{tags.get('medklip.extractor')}; splits grouped by {tags.get('medklip.split_grouping', 'unknown')}",
        f"- Training: backbone {params.get('model.backbone')}, {params.get('model.image_size')} px, "
        f"{params.get('train.epochs')} epochs, batch {params.get('train.batch_size')}, lr {params.get('train.lr')}; "
        f"model_best chosen by {params.get('train.select_by', '?')} on the val split",
        f"- Label drift: {decision['drift']['summary']}",
        "",
        "## Promotion gate",
        "",
        "| | value |",
        "|---|---|",
        f"| compared on | {split.get('split') or 'n/a'} split (role {split.get('role') or 'n/a'}) of "
        f"{split.get('dir') or 'n/a'}, {split.get('n') or '?'} images |",
    ]
    if split.get("reason"):
        lines.append(f"| why not a gate split | {split['reason']} |")
    lines += [
        f"| challenger mean AUC (gate) | {_number(comparison.get('mean_auc_a', decision.get('gate_mean_auc')))} |",
        f"| champion | {decision.get('champion_version') or 'none'} |",
    ]
    if comparison.get("difference") is not None:
        low, high = comparison["ci95"]
        lines += [
            f"| champion mean AUC (same images) | {_number(comparison['mean_auc_b'])} |",
            f"| difference | {_number(comparison['difference'])} (95% CI {_number(low)} to {_number(high)}) |",
            f"| margin the lower bound must beat | {decision['margin']} |",
            f"| images, resampled {comparison['resampled']}, entities, resamples | {comparison['n_images']}, "
            f"{comparison['n_groups']}, {comparison['n_entities']}, {comparison['n_resamples']} |",
            f"| champion predictions | {comparison['champion_source']} |",
        ]
    for line in decision.get("training_contact") or []:
        lines.append(f"| training never touched the gate | {line} |")
    lines += [
        "",
        "## Report (used by no decision)",
        "",
        f"Mean AUC {_number(report['mean_auc'])} (95% CI {_number((report['ci95'] or [None])[0])} to "
        f"{_number((report['ci95'] or [None, None])[1])}) on the {report['split']} split (role {report['role']}), "
        f"{report['n']} images, fingerprint `{report['fingerprint']}`. Scored once for this version; neither "
        "checkpoint selection, thresholds nor the gate read it.",
    ]
    shift = decision["drift"].get("shift")
    changed = [row for row in (shift or {}).get("rows", []) if row["difference"]]  # present in either, and moved
    if changed:
        lines += [
            "",
            f"## Label drift (threshold {shift['threshold']:g}, two-proportion test, p < {shift['alpha']:g})",
            "",
            "| entity | champion's data | this version's | change | p | moved |",
            "|---|---|---|---|---|---|",
        ]
        for row in changed[:10]:
            p_value = "n/a" if row["p_value"] is None else f"{row['p_value']:.2g}"
            lines.append(
                f"| {row['entity']} | {_number(row['reference'])} | {_number(row['current'])} | "
                f"{row['difference']:+.4f} | {p_value} | {'yes' if row['moved'] else ''} |"
            )
    if metrics and metrics.get("per_entity"):
        scored = [(e, v) for e, v in metrics["per_entity"].items() if v.get("auc") is not None]
        scored.sort(key=lambda item: -item[1]["n_pos"])
        lines += ["", f"## Per-entity AUC on the {report['split']} split (most positives first)", "",
                  "| entity | AUC | 95% CI | n_pos | n_neg |", "|---|---|---|---|---|"]  # fmt: skip
        for entity, values in scored[:20]:
            ci = values.get("auc_ci95") or [None, None]
            lines.append(
                f"| {entity} | {_number(values['auc'])} | {_number(ci[0])}-{_number(ci[1])} | {values['n_pos']} | "
                f"{values['n_neg']} |"
            )
    return "\n".join(lines) + "\n"


def _gate_tags(decision: dict) -> dict[str, str]:
    comparison = decision.get("comparison") or {}
    split = decision.get("split") or {}
    report = decision["report"]
    tags = {
        "gate.decision": decision["alias"],
        "gate.outcome": decision["outcome"],
        "gate.reason": decision["reason"],
        "gate.champion_version": decision.get("champion_version") or "",
        "gate.margin": str(decision["margin"]),
        "gate.at": _now(),
        "gate.split": split.get("split", ""),
        "gate.split_role": split.get("role", ""),
        "gate.split_reason": split.get("reason", ""),
        "gate.training_contact": " | ".join(decision.get("training_contact") or []),
        "gate.drift": decision["drift"]["summary"],
        "gate.drift_moved": ",".join((decision["drift"].get("shift") or {}).get("moved", [])),
        "report.split": report["split"],
        "report.role": report["role"],
        "report.mean_auc": "" if report["mean_auc"] is None else f"{report['mean_auc']:.6f}",
        "report.n": str(report["n"]),
        "report.fingerprint": report["fingerprint"],
        "report.used_by_decision": "false",
    }
    if decision.get("gate_mean_auc") is not None:
        tags["gate.challenger_mean_auc"] = f"{decision['gate_mean_auc']:.6f}"
    if comparison.get("difference") is not None:
        tags.update(
            {
                "gate.challenger_mean_auc": f"{comparison['mean_auc_a']:.6f}",
                "gate.champion_mean_auc": f"{comparison['mean_auc_b']:.6f}",
                "gate.difference": f"{comparison['difference']:.6f}",
                "gate.difference_ci95_low": f"{comparison['ci95'][0]:.6f}",
                "gate.difference_ci95_high": f"{comparison['ci95'][1]:.6f}",
                "gate.n_images": str(comparison["n_images"]),
                "gate.n_groups": str(comparison["n_groups"]),
                "gate.resampled": comparison["resampled"],
                "gate.evaluation_fingerprint": comparison["fingerprint"],
                "gate.champion_predictions": comparison["champion_source"],
            }
        )
    table = {k: v for k, v in comparison.items() if k not in ("split", "training_contact")}
    tags["gate.table"] = json.dumps(table)
    return tags


def register(
    run_id: str,
    name: str = DEFAULT_NAME,
    margin: float = 0.0,
    n_resamples: int = 1000,
    drift_threshold: float = DEFAULT_THRESHOLD,
) -> dict:
    """Registers the run's model as a new version and applies the gate (module docstring); returns the decision."""
    registry = ModelRegistry()
    run = registry.run(run_id)
    if "mean_auc" not in run.data.metrics:
        raise TrackingError(f"run {run_id} has no evaluation (metric mean_auc): run `medklip evaluate` on it first")
    champion = registry.alias(name, CHAMPION)
    version = registry.register(name, run_id, {"medklip.run_id": run_id})
    registry.set_alias(name, CHALLENGER, version.version)
    decision = {"name": name, "version": int(version.version), "margin": margin, "comparison": None,
                "report": _report(run), "gate_mean_auc": run.data.metrics.get("gate_mean_auc")}  # fmt: skip
    decision["mean_auc"] = run.data.metrics["mean_auc"]
    try:
        decision["split"] = gate_split(run)
    except Refused:
        decision["split"] = None
    if champion is None:
        decision.update(
            alias=CHAMPION,
            outcome=FIRST,
            reason="no champion yet: the first evaluated version becomes champion",
            drift={"summary": "no champion to compare the training data with", "shift": None},
        )
    else:
        decision["champion_version"] = str(champion.version)
        decision["drift"] = drift(registry, run, champion, int(version.version), drift_threshold)
        _decide(registry, name, run, champion, n_resamples, decision)
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


def _decide(registry: ModelRegistry, name: str, run, champion, n_resamples: int, decision: dict) -> None:
    """Fills alias, outcome and reason of a decision against a champion."""
    try:
        comparison = compare(registry, name, run, champion, n_resamples)
    except Refused as error:
        decision.update(alias=CHALLENGER, outcome=REFUSED, reason=f"refused: {error}")
        return
    except NotCompared as error:
        decision.update(alias=CHALLENGER, outcome=NOT_COMPARED, reason=f"not compared: {error}")
        return
    decision["comparison"] = comparison
    decision["split"], decision["training_contact"] = comparison["split"], comparison["training_contact"]
    low = comparison["ci95"][0] if comparison["ci95"] else None
    better = low is not None and low > decision["margin"]
    verdict = "beats" if better else "does not beat"
    split = comparison["split"]
    where = f"the {split['split']} split ({comparison['n_images']} images"
    where += f", resampled as {comparison['n_groups']} split groups)" if comparison["resampled"] == "groups" else ")"
    reason_text = (
        f"mean AUC {_number(comparison['mean_auc_a'])} vs champion v{champion.version} "
        f"{_number(comparison['mean_auc_b'])} on {where}: difference {_number(comparison['difference'])}, "
        f"95% CI lower bound {_number(low)} {verdict} the margin {decision['margin']}"
    )
    if split.get("reason"):
        reason_text += f"; {split['reason']}"
    if (decision["drift"].get("shift") or {}).get("moved"):
        reason_text += f"; label drift: {decision['drift']['summary']}"
    decision.update(alias=CHAMPION if better else CHALLENGER, outcome=COMPARED, reason=reason_text)


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
    lines = [f"{'version':>7}  {'aliases':<22}{'created (UTC)':<21}{'gate AUC':>9}  decision / promotion"]
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

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

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
