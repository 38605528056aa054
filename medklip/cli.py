"""The `medklip` command line.

medklip data synth --out data/synth --n 1000 --seed 0
medklip data prepare --source synthetic://2000?seed=0 --out data/demo
medklip data prepare --source folder://data/synth --out data/prepared
medklip data prepare --source hf://itsanmolgupta/mimic-cxr-dataset --out data/mimic
medklip data inspect data/demo [--json]
medklip extract --data data/demo [--cache .cache/extract]
medklip train --data data/demo --config demo --save checkpoints/demo        (MLflow: MLFLOW_TRACKING_URI or ./mlruns)
medklip evaluate --weights checkpoints/demo/model_best.safetensors --data data/demo --out results/demo
medklip predict --weights checkpoints/demo/model_best.safetensors image.png
medklip registry register --run-id RUN | list [--json] | promote --version N --reason "..."
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from medklip.data.images import MAX_BYTES, MAX_PIXELS
from medklip.data.sources import DataError
from medklip.training.checkpoints import CheckpointError


def _data_synth(args: argparse.Namespace) -> int:
    from medklip.data import synthetic

    summary = synthetic.generate(
        args.out, n=args.n, seed=args.seed, size=args.size, workers=args.workers, progress=True
    )
    print(f"wrote {summary.n_images} synthetic radiographs ({summary.n_normal} normal) to {args.out}")
    print(f"  {args.out}/reports.csv  (id,image,findings,impression)   {args.out}/truth.csv  (ground truth + boxes)")
    return 0


def _data_prepare(args: argparse.Namespace) -> int:
    from medklip.data.prepare import PrepareConfig, prepare

    config = PrepareConfig(
        short_side=args.image_size,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        gate_fraction=args.gate_fraction,
        split_seed=args.split_seed,
        workers=args.workers,
        max_pixels=args.max_pixels,
        max_bytes=args.max_bytes,
    )
    manifest = prepare(args.source, args.out, config, progress=True)
    if manifest.get("reused"):
        print(f"{args.out} is already prepared from {args.source} with these settings; nothing to do")
    splits = manifest["splits"]
    print(
        f"{manifest['n_images']} images prepared ({splits['train']} train / {splits['val']} val / "
        f"{splits.get('gate', 0)} gate / {splits['test']} test), {manifest['n_skipped']} skipped, in {args.out}"
    )
    grouping = manifest.get("grouping") or {}
    if grouping:
        key = grouping["key"] or "no patient or study id"
        print(f"  splits grouped by {key}: {grouping['n_groups']} groups; roles {manifest.get('split_roles')}")
        if grouping.get("fallback"):
            print(f"  fallback for {grouping['n_images_by_fallback']} images: {grouping['fallback']}")
    for reason, count in manifest.get("skipped_by_reason", {}).items():
        print(f"  skipped {count:>6} {reason}")
    if manifest["n_skipped"]:
        print(f"  every skipped file with its reason: {args.out}/skipped.csv")
    return 0


def _data_inspect(args: argparse.Namespace) -> int:
    from medklip.data.dataset import inspect

    summary = inspect(args.dir)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{summary['root']}  (source {summary['source']})")
    splits = summary["splits"]
    print(
        f"  images   {summary['n_images']}  train {splits['train']}  val {splits['val']}  "
        f"gate {splits.get('gate', 0)}  test {splits['test']}  "
        f"skipped {summary['n_skipped']} {summary['skipped_by_reason'] or ''}"
    )
    print(
        f"  pixels   median {summary['image_height_median']} x {summary['image_width_median']}, "
        f"{summary['shards']} shard(s), {summary['shard_bytes'] / 2**20:.1f} MiB"
    )
    print(
        f"  reports  empty findings {summary['reports_empty_findings']}, empty impression "
        f"{summary['reports_empty_impression']}, duplicate reports {summary['duplicate_reports']}"
    )
    for key in ("findings_truth", "findings_triplets"):
        if key in summary:
            print(f"  {key.split('_')[1]} per image:  {'entity':<22}{'present':>8}{'absent':>8}{'uncertain':>10}")
            for entity, counts in summary[key].items():
                print(f"    {entity:<34}{counts['present']:>8}{counts['absent']:>8}{counts['uncertain']:>10}")
    return 0


def _extract(args: argparse.Namespace) -> int:
    from medklip.labels import extract

    if args.action == "merge":
        if not args.out or not args.inputs:
            raise DataError("usage: medklip extract merge --out FILE.parquet SHARD.parquet [SHARD.parquet ...]")
        summary = extract.merge(args.inputs, args.out)
        print(f"merged {len(args.inputs)} shard(s) into {args.out}: {summary.line()}")
        return 0
    if args.action == "score":
        from medklip.labels.quality import format_table, load_labelled, score

        if len(args.inputs) != 1:
            raise DataError("usage: medklip extract score LABELLED.jsonl [--extractor rules|radgraph]")
        cases = load_labelled(args.inputs[0])
        engine = extract.make_extractor(args.extractor, radgraph_dir=args.radgraph_dir, label_scheme=args.label_scheme)
        result = score([triplets for _, triplets in cases], engine.extract([text for text, _ in cases]))
        print(format_table(result))
        print(f"{len(result['errors'])} disagreements over {len(cases)} texts; --json lists them")
        if args.json:
            print(json.dumps(result, indent=2))
        return 0
    if args.inputs:
        raise DataError(f"unexpected arguments {args.inputs}; did you mean `medklip extract merge`?")
    if bool(args.reports) == bool(args.data):
        raise DataError("give --reports FILE.csv (with --out) or --data PREPARED_DIR")
    reports = args.reports or f"{args.data}/reports.parquet"
    out = args.out or (f"{args.data}/triplets.parquet" if args.data else None)
    if not out:
        raise DataError("--out is required with --reports")
    summary = extract.extract_file(
        reports,
        out,
        extractor=args.extractor,
        shard=args.shard,
        cache=args.cache,
        radgraph_dir=args.radgraph_dir,
        batch_size=args.batch_size,
        progress=True,
        label_scheme=args.label_scheme,
    )
    print(f"{out}: {summary.line()}")
    for reason, count in summary.skipped.items():
        print(f"  skipped {count:>6} {reason} report(s)")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from medklip.evaluation import evaluate
    from medklip.evaluation.metrics import MIN_CASES_FOR_CI, too_few_for_ci

    if bool(args.data) == bool(args.labels):
        raise DataError("give --data PREPARED_DIR, or --labels FILE.csv with --label-map")
    tracked = not args.no_mlflow and (Path(args.weights).parent / "mlflow_run_id").is_file()
    if tracked:  # fail before the work if the run's server is away
        from medklip.tracking import runs as tracking

        tracking.connect()
    if args.labels:
        if not args.label_map:
            raise DataError("--labels needs --label-map (chestxray14, chexpert, or a CSV with label,entity)")
        metrics = evaluate.evaluate_labels(args.weights, args.labels, args.label_map, args.out, args.resamples)
    else:
        metrics = evaluate.evaluate_folder(
            args.weights, args.data, args.out, args.split, args.resamples, args.heatmaps, True, args.threshold_data
        )
    if tracked:
        tags = {f"medklip.eval_{key}": value for key, value in metrics.get("evaluation_data", {}).items()}
        promotion = metrics.get("promotion")
        if promotion is not None:  # the registry's gate reads these; a skipped promotion split says why
            tags.update({f"medklip.gate_{key}": promotion.get(key) or "" for key in ("dir", "split", "role", "reason")})
            tags["medklip.gate_n"] = promotion["n"]
            tags["medklip.gate_fingerprint"] = promotion.get("fingerprint") or f"none: {promotion.get('skipped')}"
        if args.labels:
            tags = {"medklip.eval_labels": str(Path(args.labels).resolve()), "medklip.eval_label_map": args.label_map}
        run_id = tracking.log_evaluation(args.weights, args.out, metrics, tags)
        print(f"logged to MLflow run {run_id} ({tracking.redact(tracking.tracking_uri())})")

    def number(value) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    def interval(values) -> str:
        return "no CI" if not values else f"95% CI {values[0]:.3f}-{values[1]:.3f}"

    promotion = metrics.get("promotion") or {}
    if promotion.get("n"):
        why = f"; {promotion['reason']}" if promotion["reason"] else ""
        print(
            f"promotion split ({promotion['split']}, what the registry's gate compares): {promotion['n']} images, "
            f"mean AUC {number(promotion.get('mean_auc'))}{why}"
        )
    if metrics["mean_auc"] is None:
        print(f"no entity has both classes in the test data (n_test {metrics['n_test']}): no AUC")
    else:
        print(
            f"mean AUC {metrics['mean_auc']:.3f} ({interval(metrics.get('mean_auc_ci95'))}) over "
            f"{metrics['n_entities_with_auc']} entities with both classes; accuracy {number(metrics['accuracy'])} "
            f"at validation thresholds; n_test {metrics['n_test']}"
        )
    scored = sorted(
        ((entity, values) for entity, values in metrics["per_entity"].items() if values["auc"] is not None),
        key=lambda item: -item[1]["n_pos"],
    )
    for entity, values in scored[:15]:
        shown = (
            f"n too small for a CI: < {MIN_CASES_FOR_CI}" if too_few_for_ci(values) else interval(values["auc_ci95"])
        )
        print(
            f"  {entity:<18} AUC {values['auc']:.3f} ({shown})  n_pos {values['n_pos']:>5}  n_neg {values['n_neg']:>5}"
        )
    if (metrics.get("grounding") or {}).get("n"):
        grounding = metrics["grounding"]
        print(
            f"  pointing game {grounding['overall']:.3f} over {grounding['n']} lesions (at most"
            f" {grounding['attainable']:.3f} on this patch grid: boxes holding a patch's peak)"
        )
    print(f"wrote {args.out}/metrics.json and plots")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from medklip.evaluation.predict import predict_files
    from medklip.training.checkpoints import load_model

    model = load_model(args.weights)
    results = predict_files(model, args.images, top=args.top, heatmap_dir=args.heatmap)
    if args.json:
        print(json.dumps([result.to_json() for result in results], indent=2))
    else:
        for result in results:
            if result.error:
                continue  # said once, on stderr, below
            findings = ", ".join(
                f"{item['entity']} {item['probability']:.2f} ({item['positions'][0]['position']})"
                for item in result.top_findings
            )
            print(f"{result.image}: {findings}")
            for path in result.heatmaps or []:
                print(f"  heatmap {path}")
    failed = [result for result in results if result.error]
    for result in failed:
        print(f"medklip predict: {result.error}", file=sys.stderr)
    return 1 if failed else 0


def _registry(args: argparse.Namespace) -> int:
    from medklip.tracking import registry

    if args.registry_command == "register":
        decision = registry.register(
            args.run_id, args.name, args.margin, args.resamples, drift_threshold=args.drift_threshold
        )
        print(f"{args.name} version {decision['version']}: {decision['alias']}. {decision['reason']}")
        print(f"load it with mlflow.pyfunc.load_model('models:/{args.name}@{decision['alias']}')")
    elif args.registry_command == "list":
        records = registry.list_versions(args.name)
        print(json.dumps(records, indent=2) if args.json else registry.format_versions(records))
    else:
        record = registry.promote(args.version, args.reason, args.name)
        previous = record["promotion.previous_champion"] or "none"
        print(f"{args.name} version {record['version']} is champion (was: {previous}); recorded: {args.reason}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medklip", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="synthesise, prepare and inspect data sets")
    data_commands = data.add_subparsers(dest="data_command", required=True)

    synth = data_commands.add_parser("synth", help="write procedural chest radiographs with reports and ground truth")
    synth.add_argument("--out", required=True, help="output folder (a folder:// source)")
    synth.add_argument("--n", type=int, required=True, help="number of images")
    synth.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    synth.add_argument("--size", type=int, default=256, help="image side in pixels")
    synth.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    synth.set_defaults(handler=_data_synth)

    prepare = data_commands.add_parser("prepare", help="decode a source once into shards + reports table")
    prepare.add_argument("--source", required=True, help="folder://DIR | hf://NAME[?split=S] | synthetic://N?seed=S")
    prepare.add_argument("--out", required=True, help="output folder")
    prepare.add_argument("--image-size", type=int, default=256, help="shorter side after resizing, in pixels")
    prepare.add_argument("--val-fraction", type=float, default=0.1, help="share of groups in the validation split")
    prepare.add_argument("--test-fraction", type=float, default=0.1, help="share of groups in the test split")
    prepare.add_argument(
        "--gate-fraction", type=float, default=0.1, help="share of groups held out for the registry's promotion gate"
    )
    prepare.add_argument("--split-seed", type=int, default=0, help="seed of the hash-based split")
    prepare.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores)")
    prepare.add_argument(
        "--max-pixels", type=int, default=MAX_PIXELS, help=f"skip images with more pixels (default {MAX_PIXELS:,})"
    )
    prepare.add_argument(
        "--max-bytes", type=int, default=MAX_BYTES, help=f"skip image files larger than this (default {MAX_BYTES:,})"
    )
    prepare.set_defaults(handler=_data_prepare)

    inspect = data_commands.add_parser("inspect", help="counts and finding frequencies of a prepared folder")
    inspect.add_argument("dir", help="a folder written by `medklip data prepare`")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.set_defaults(handler=_data_inspect)

    extract = commands.add_parser(
        "extract", help="reports -> (entity, position, existence) triplets; also `extract merge`, `extract score`"
    )
    extract.add_argument(
        "action", nargs="?", choices=("merge", "score"), help="merge shard outputs / score a labelled set"
    )
    extract.add_argument("inputs", nargs="*", help="shard files (merge) or a labelled JSONL file (score)")
    extract.add_argument("--reports", help="CSV with columns id,findings,impression (or a reports.parquet)")
    extract.add_argument("--data", help="a prepared folder: reads its reports, writes DIR/triplets.parquet")
    extract.add_argument("--out", help="output parquet file")
    extract.add_argument("--extractor", choices=("rules", "radgraph"), default="rules", help="default: rules (offline)")
    extract.add_argument("--shard", default="0/1", help="I/N: only this shard of the reports (for parallel Jobs)")
    extract.add_argument("--cache", default=None, help="cache folder; reruns extract only reports not seen before")
    extract.add_argument("--radgraph-dir", default=None, help="folder holding modern-radgraph-xl/ (radgraph extractor)")
    extract.add_argument("--batch-size", type=int, default=256, help="reports per extractor call")
    extract.add_argument(
        "--label-scheme",
        choices=("ours", "official"),
        default="ours",
        help="radgraph: graphs -> triplets by our rules (default) or MedKLIP's official preprocessing "
        "(docs/extraction.md)",
    )
    extract.add_argument("--json", action="store_true", help="score: also print the full result as JSON")
    extract.set_defaults(handler=_extract)

    commands.add_parser("train", help="train MedKLIP (see `medklip train --help`)", add_help=False)

    evaluate = commands.add_parser("evaluate", help="metrics.json with CIs, plots, heatmaps, grounding")
    evaluate.add_argument("--weights", required=True, help="a model_best.safetensors")
    evaluate.add_argument("--data", help="prepared folder with triplets.parquet (thresholds from its val split)")
    evaluate.add_argument(
        "--split", default="test", choices=("test", "val", "gate", "train", "all"), help="the split reported"
    )
    evaluate.add_argument(
        "--threshold-data", help="prepared folder whose val split sets thresholds (default: --data; needed for all)"
    )
    evaluate.add_argument("--labels", help="external label set: CSV with an image column (zero-shot)")
    evaluate.add_argument("--label-map", help="chestxray14, chexpert, or a CSV with columns label,entity")
    evaluate.add_argument("--out", default="results", help="output folder (default: results)")
    evaluate.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples for the CIs")
    evaluate.add_argument("--heatmaps", type=int, default=8, help="test images to draw attention heatmaps for")
    evaluate.add_argument("--no-mlflow", action="store_true", help="do not log to the MLflow run of the weights")
    evaluate.set_defaults(handler=_evaluate)

    predict = commands.add_parser("predict", help="probabilities of the 75 findings for image files")
    predict.add_argument("images", nargs="+", help="PNG/JPEG files of any size and bit depth")
    predict.add_argument("--weights", required=True, help="a model_best.safetensors (or any step's model.safetensors)")
    predict.add_argument("--json", action="store_true", help="print JSON: probabilities and top findings per image")
    predict.add_argument("--top", type=int, default=5, help="findings listed per image")
    predict.add_argument("--heatmap", metavar="DIR", help="write attention overlays of the top 3 findings here")
    predict.set_defaults(handler=_predict)

    registry = commands.add_parser("registry", help="MLflow model registry: register (gated), list, promote")
    registry_commands = registry.add_subparsers(dest="registry_command", required=True)
    register = registry_commands.add_parser("register", help="register a run's model; challenger, champion if it wins")
    register.add_argument("--run-id", required=True, help="an MLflow run trained and evaluated by medklip")
    register.add_argument("--margin", type=float, default=0.0, help="the paired 95%% lower bound must exceed this")
    register.add_argument("--resamples", type=int, default=1000, help="paired bootstrap resamples")
    register.add_argument(
        "--drift-threshold", type=float, default=0.05, help="prevalence change that counts as label drift"
    )
    listing = registry_commands.add_parser("list", help="versions with aliases, gate decisions and promotions")
    listing.add_argument("--json", action="store_true", help="print JSON")
    promote = registry_commands.add_parser("promote", help="make a version champion by hand, with a recorded reason")
    promote.add_argument("--version", type=int, required=True, help="the version number")
    promote.add_argument("--reason", required=True, help="why (stored with the version)")
    for sub in (register, listing, promote):
        sub.add_argument("--name", default="medklip", help="registered model name (default: medklip)")
    registry.set_defaults(handler=_registry)
    return parser


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors reported as one line (exit 2) rather than a traceback; TrackingError once mlflow is in use."""
    errors = (DataError, ValueError, CheckpointError)
    tracking = sys.modules.get("medklip.tracking.runs")
    return errors + (tracking.TrackingError,) if tracking else errors


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:  # its own parser, shared with `python -m medklip.train` and torchrun
        from medklip import train

        return train.main(argv[1:])  # errors of the user's making: one line, exit 2
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "inputs", None) is not None and not any(arg.startswith("-") for arg in extra):
        args.inputs += extra  # `extract merge --out F SHARD...`: argparse stops filling `inputs` at the option
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return args.handler(args)
    except _user_errors() as error:
        if args.verbose:
            raise
        print(f"medklip: error: {error}", file=sys.stderr)
        return getattr(error, "exit_code", 2)  # 75 (try again later) when MLflow is away


if __name__ == "__main__":
    sys.exit(main())
