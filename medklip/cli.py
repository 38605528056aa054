"""The `medklip` command line.

medklip data synth --out data/synth --n 1000 --seed 0
medklip data prepare --source synthetic://2000?seed=0 --out data/demo
medklip data prepare --source folder://data/synth --out data/prepared
medklip data prepare --source hf://itsanmolgupta/mimic-cxr-dataset --out data/mimic
medklip data inspect data/demo [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from medklip.sources import DataError


def _data_synth(args: argparse.Namespace) -> int:
    from medklip import synthetic

    summary = synthetic.generate(
        args.out, n=args.n, seed=args.seed, size=args.size, workers=args.workers, progress=True
    )
    print(f"wrote {summary.n_images} synthetic radiographs ({summary.n_normal} normal) to {args.out}")
    print(f"  {args.out}/reports.csv  (id,image,findings,impression)   {args.out}/truth.csv  (ground truth + boxes)")
    return 0


def _data_prepare(args: argparse.Namespace) -> int:
    from medklip.prepare import PrepareConfig, prepare

    config = PrepareConfig(
        short_side=args.image_size,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        split_seed=args.split_seed,
        workers=args.workers,
    )
    manifest = prepare(args.source, args.out, config, progress=True)
    if manifest.get("reused"):
        print(f"{args.out} is already prepared from {args.source} with these settings; nothing to do")
    splits = manifest["splits"]
    print(
        f"{manifest['n_images']} images prepared ({splits['train']} train / {splits['val']} val / {splits['test']} "
        f"test), {manifest['n_skipped']} skipped, in {args.out}"
    )
    for reason, count in manifest.get("skipped_by_reason", {}).items():
        print(f"  skipped {count:>6} {reason}")
    if manifest["n_skipped"]:
        print(f"  every skipped file with its reason: {args.out}/manifest.json (key 'skipped')")
    return 0


def _data_inspect(args: argparse.Namespace) -> int:
    from medklip.data import inspect

    summary = inspect(args.dir)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{summary['root']}  (source {summary['source']})")
    splits = summary["splits"]
    print(
        f"  images   {summary['n_images']}  train {splits['train']}  val {splits['val']}  test {splits['test']}  "
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
    prepare.add_argument("--split-seed", type=int, default=0, help="seed of the hash-based split")
    prepare.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores)")
    prepare.set_defaults(handler=_data_prepare)

    inspect = data_commands.add_parser("inspect", help="counts and finding frequencies of a prepared folder")
    inspect.add_argument("dir", help="a folder written by `medklip data prepare`")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.set_defaults(handler=_data_inspect)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return args.handler(args)
    except (DataError, ValueError) as error:
        if args.verbose:
            raise
        print(f"medklip: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
