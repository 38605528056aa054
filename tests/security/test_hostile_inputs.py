"""Hostile inputs, one test per class: each asserts the exit code, the one-line error or skip reason, that nothing
was written outside the allowed folders, that no user file changed, and (where memory is the attack) peak RSS.

Fixtures are small and generated here. Cases are drawn from a seeded generator where a class has many members.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medklip.cli import main
from medklip.data.prepare import PrepareConfig, prepare
from medklip.data.sources import DataError
from medklip.labels.extract import file_sha256
from medklip.safe_paths import UnsafePath, contained, file_name
from tests.helpers import GOOD_REPORT, radiograph, write_reports

SEED = 20261207


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` with its content hash: what 'no file changed, none added' is checked against."""
    return {str(path.relative_to(root)): file_sha256(path) for path in sorted(root.rglob("*")) if path.is_file()}


def peak_rss_mb(command: list[str]) -> tuple[int, float]:
    """(exit code, peak resident memory in MB) of `command`, measured in a fresh process that only waits for it."""
    probe = (
        "import resource, subprocess, sys, json;"
        "code = subprocess.run(sys.argv[1:], capture_output=True).returncode;"
        "print(json.dumps([code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024]))"
    )
    finished = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True, check=True)
    code, peak = json.loads(finished.stdout)
    return code, peak


# --- containment: ids as file names, image paths ---------------------------------------------------------------
HOSTILE_IDS = ["../../x", "/tmp/x", "..", ".", "", "a/b", "a\\..\\b", "~/x", ".hidden", "x" * 300, "nul\0byte", "é/"]


def test_any_id_becomes_a_unique_name_that_stays_in_its_folder(tmp_path):
    rng = random.Random(SEED)
    alphabet = "./\\~:*?<>|\0 aZ9-_é"
    drawn = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(2000)]
    ids = list(dict.fromkeys(HOSTILE_IDS + drawn + ["case0001", "plain.name-1"]))
    names = [file_name(text) for text in ids]
    assert len(set(names)) == len(ids)  # unique per id
    for text, name in zip(ids, names, strict=True):
        assert "/" not in name and "\\" not in name and "\0" not in name and not name.startswith("."), (text, name)
        assert (tmp_path / name).resolve().parent == tmp_path.resolve()
    assert file_name("case0001") == "case0001"  # a plain id is kept as it is


def test_negative_control_the_raw_id_would_escape(tmp_path):
    assert (tmp_path / "../../x").resolve().parent != tmp_path.resolve()


def test_paths_that_climb_out_are_refused_without_asking_the_file_system(tmp_path):
    root = tmp_path / "source"
    (root / "images").mkdir(parents=True)
    (tmp_path / "secret.png").write_bytes(b"outside")
    (root / "images/link.png").symlink_to(tmp_path / "secret.png")
    for relative in ["../secret.png", "/etc/passwd", "images/../../secret.png", "images/link.png", "C:\\x.png"]:
        with pytest.raises(UnsafePath) as refused:
            contained(root, relative)
        assert "secret" not in refused.value.reason and "passwd" not in refused.value.reason
    assert contained(root, "images/a.png") == (root / "images/a.png").resolve()


def test_prepare_skips_rows_whose_image_is_outside_the_folder_and_reveals_nothing(tmp_path):
    source, out = tmp_path / "source", tmp_path / "out"
    (source / "images").mkdir(parents=True)
    Image.fromarray(radiograph(128, 128, seed=1)).save(source / "images/good.png")
    Image.fromarray(radiograph(128, 128, seed=2)).save(tmp_path / "outside.png")
    rows = [{"id": "good", "image": "images/good.png", **GOOD_REPORT}]
    rows += [{"id": f"bad{i}", "image": path, **GOOD_REPORT} for i, path in enumerate(
        ["../outside.png", "../missing.png", str(tmp_path / "outside.png"), "/nonexistent/x.png"]
    )]  # fmt: skip
    write_reports(source, rows)
    before = snapshot(tmp_path)
    manifest = prepare(f"folder://{source}", out, PrepareConfig(workers=1))
    reasons = {item["id"]: item["reason"] for item in manifest["skipped"]}
    assert manifest["n_images"] == 1 and len(reasons) == 4
    assert len(set(reasons.values())) <= 2  # an existing and a missing outside file read the same
    assert all(reason.startswith("path outside the folder") for reason in reasons.values())
    after = snapshot(tmp_path)
    assert {name: digest for name, digest in after.items() if not name.startswith("out/")} == before


def test_heatmap_files_of_hostile_ids_stay_in_the_heatmap_folder(tmp_path):
    from medklip.evaluation.predict import write_overlays

    folder = tmp_path / "results/heatmaps"
    attention = torch.rand(1, 75, 16)
    pixels = np.zeros((64, 64), dtype=np.uint8)
    for report_id in ["../../escaped", "/tmp/escaped-abs", "..\\x"]:
        written = write_overlays(attention, pixels, [0.5] * 75, report_id, [0], folder)
        assert [Path(path).resolve().parent for path in written] == [folder.resolve()]
    assert sorted(p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*.png")) == ["results"] * 3


# --- image size: one policy, in every process --------------------------------------------------------------------
def test_a_15000_pixel_square_image_is_skipped_from_its_header_under_2_gb(tmp_path):
    source, out = tmp_path / "source", tmp_path / "out"
    (source / "images").mkdir(parents=True)
    Image.new("L", (15000, 15000)).save(source / "images/bomb.png", compress_level=1)
    Image.fromarray(radiograph(128, 128, seed=1)).save(source / "images/good.png")
    write_reports(source, [{"id": "bomb", "image": "images/bomb.png", **GOOD_REPORT},
                           {"id": "good", "image": "images/good.png", **GOOD_REPORT}])  # fmt: skip
    command = [sys.executable, "-m", "medklip.cli", "data", "prepare", "--source", f"folder://{source}"]
    code, peak = peak_rss_mb([*command, "--out", str(out), "--workers", "1"])
    assert code == 0 and peak < 2048, peak
    manifest = json.loads((out / "manifest.json").read_text())
    [skip] = manifest["skipped"]
    assert skip["id"] == "bomb" and skip["reason"].startswith("too large: 15000 x 15000 = 225,000,000 pixels")
    assert manifest["n_images"] == 1


@pytest.mark.parametrize("workers", [1, 2])
def test_images_between_pillows_limit_and_ours_are_skipped_in_every_process(tmp_path, workers):
    # 10000 x 9000 is above the default cap (Pillow's warning threshold) but below Pillow's error threshold: the
    # old code reopened such a file under Pillow's own rules and ended the whole prepare with an uncaught error.
    source = tmp_path / "source"
    (source / "images").mkdir(parents=True)
    Image.new("L", (10000, 9000)).save(source / "images/big.png", compress_level=1)
    Image.fromarray(radiograph(128, 128, seed=1)).save(source / "images/good.png")
    write_reports(source, [{"id": "big", "image": "images/big.png", **GOOD_REPORT},
                           {"id": "good", "image": "images/good.png", **GOOD_REPORT}])  # fmt: skip
    manifest = prepare(f"folder://{source}", tmp_path / "out", PrepareConfig(workers=workers))
    assert [item["reason"].split(":")[0] for item in manifest["skipped"]] == ["too large"]
    capped = prepare(f"folder://{source}", tmp_path / "capped", PrepareConfig(workers=workers, max_bytes=100_000))
    [skip] = capped["skipped"]  # the byte cap: the big file is not even read
    assert skip["id"] == "big" and skip["reason"].endswith("bytes, above the limit of 100,000 (--max-bytes)")


# --- nothing of the user's is deleted -------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["same", "inside", "contains"])
def test_prepare_refuses_an_out_folder_that_overlaps_the_source(tmp_path, capsys, where):
    source = tmp_path / "hospital" / "export"
    (source / "shards").mkdir(parents=True)
    (source / "shards/keep.txt").write_text("the user's own")
    Image.fromarray(radiograph(128, 128, seed=1)).save(source / "a.png")
    write_reports(source, [{"id": "a", "image": "a.png", **GOOD_REPORT}])
    out = {"same": source, "inside": source / "prepared", "contains": tmp_path / "hospital"}[where]
    before = snapshot(tmp_path)
    assert main(["data", "prepare", "--source", f"folder://{source}", "--out", str(out), "--workers", "1"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("medklip: error: --out") and "source folder" in line
    assert snapshot(tmp_path) == before


def test_prepare_refuses_a_folder_it_did_not_write_and_replaces_only_its_own_files(tmp_path, capsys):
    source, out = tmp_path / "source", tmp_path / "mine"
    source.mkdir()
    Image.fromarray(radiograph(128, 128, seed=1)).save(source / "a.png")
    write_reports(source, [{"id": "a", "image": "a.png", **GOOD_REPORT}])
    (out / "shards").mkdir(parents=True)
    (out / "shards/notes.txt").write_text("mine")
    (out / "reports.parquet").write_text("not prepare's")
    before = snapshot(tmp_path)
    assert main(["data", "prepare", "--source", f"folder://{source}", "--out", str(out), "--workers", "1"]) == 2
    assert "was not written by `medklip data prepare`" in capsys.readouterr().err
    assert snapshot(tmp_path) == before

    fresh = tmp_path / "prepared"
    prepare(f"folder://{source}", fresh, PrepareConfig(workers=1))
    (fresh / "shards/user-notes.txt").write_text("kept")  # a file the user put in prepare's folder
    prepare(f"folder://{source}", fresh, PrepareConfig(workers=1, short_side=128))  # a rebuild
    assert (fresh / "shards/user-notes.txt").read_text() == "kept"


# --- bounded inputs ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("synthetic://1000000000?seed=0", "synthetic n = 1000000000 is out of range: 1 to 100,000"),
        ("synthetic://10?seed=0&size=100000", "synthetic size = 100000 is out of range: 64 to 1024"),
        ("synthetic://0", "synthetic n = 0 is out of range"),
        ("hf://../x", "NAME must be a Hub dataset id"),
    ],
)
def test_unbounded_sources_are_refused_before_any_allocation(tmp_path, capsys, uri, message):
    command = [sys.executable, "-m", "medklip.cli", "data", "prepare", "--source", uri, "--out", str(tmp_path / "o")]
    code, peak = peak_rss_mb(command)
    assert code == 2 and peak < 1024, peak
    assert main(["data", "prepare", "--source", uri, "--out", str(tmp_path / "o")]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert message in line
    assert not (tmp_path / "o/source").exists()


def test_the_prefect_form_refuses_the_same_sources():
    import jsonschema
    from prefect.utilities.callables import parameter_schema

    from flows.retrain import retrain

    schema = parameter_schema(retrain.fn).model_dump()["properties"]["source"]
    for good in ["synthetic://2000?seed=0", "synthetic://100000?size=1024&seed=3", "folder:///data/x", "hf://a/b"]:
        jsonschema.validate(good, schema)
    for bad in ["synthetic://1000000000", "synthetic://10?size=100000", "synthetic://0", "ftp://x"]:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_a_header_asking_for_a_huge_model_allocates_nothing(tmp_path):
    from safetensors.torch import load_file, save_file

    from medklip.config import load_config
    from medklip.model.network import MedKLIP
    from medklip.training.checkpoints import save_weights

    torch.manual_seed(0)
    config = load_config("debug")
    path = tmp_path / "model.safetensors"
    save_weights(MedKLIP(config.model, torch.randn(75, 24), torch.randn(51, 24)), path, config)
    tensors = load_file(str(path))
    # Out of range; in range but huge; in range but not the file's tensors; a path the header names (never opened:
    # the weights are in the file, so predict works).
    for change, expected in [({"ffn_dim": 100_000_000}, 2), ({"ffn_dim": 16384, "d_model": 4096, "num_heads": 8,
                             "num_decoder_layers": 48}, 2), ({"ffn_dim": 16384}, 2),
                             ({"backbone_weights": "/nonexistent/weights.pt"}, 0)]:  # fmt: skip
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata()
        values = json.loads(metadata["config"])
        values["model"].update(change)
        hostile = tmp_path / "hostile.safetensors"
        save_file(tensors, str(hostile), {**metadata, "config": json.dumps(values)})
        image = tmp_path / "x.png"
        Image.fromarray(radiograph(128, 128, seed=1)).save(image)
        command = [sys.executable, "-m", "medklip.cli", "predict", "--weights", str(hostile), str(image)]
        code, peak = peak_rss_mb(command)
        assert code == expected and peak < 1500, (change, code, peak)


def test_a_config_file_asking_for_a_huge_model_is_one_line(tmp_path, capsys):
    config = tmp_path / "huge.yaml"
    config.write_text("model:\n  d_model: 4096\n  num_heads: 8\n  ffn_dim: 16384\n  num_decoder_layers: 48\n")
    assert main(["train", "--config", str(config), "--data", str(tmp_path), "--save", str(tmp_path / "s")]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "parameters" in line and "above the limit" in line and not (tmp_path / "s").exists()


def test_a_million_empty_rows_keep_the_manifest_small(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "reports.csv").write_text("id,image,findings,impression\n" + ",,,\n" * 200_000)
    with pytest.raises(DataError, match="no usable images"):
        prepare(f"folder://{source}", tmp_path / "out", PrepareConfig(workers=1))
    Image.fromarray(radiograph(128, 128, seed=1)).save(source / "a.png")
    rows = "\n".join(f"e{i},a.png,," for i in range(200_000))
    (source / "reports.csv").write_text("id,image,findings,impression\na,a.png,Clear lungs.,Normal.\n" + rows + "\n")
    manifest = prepare(f"folder://{source}", tmp_path / "out", PrepareConfig(workers=1))
    assert manifest["n_skipped"] == 200_000 and len(manifest["skipped"]) == 1000
    assert (tmp_path / "out/manifest.json").stat().st_size < 200_000
    assert len((tmp_path / "out/skipped.csv").read_text().splitlines()) == 200_001  # nothing lost: all are listed


# --- the local stack signals only its own processes ---------------------------------------------------------------
def test_down_never_signals_a_pid_that_is_not_the_one_up_started(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("stack", Path(__file__).parents[2] / "infra/local/stack.py")
    stack = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stack)
    monkeypatch.setattr(stack, "STACK", tmp_path)
    (tmp_path / "pids").mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = stack.pid_file("mlflow")
        path.write_text(f"{sleeper.pid} {stack.started_at(sleeper.pid)}")
        assert stack.alive("mlflow") == sleeper.pid  # the process `up` started
        for stale in [f"{sleeper.pid} 1", f"{sleeper.pid}", "1", "not a pid", f"{os.getpid()} 0"]:
            path.write_text(stale)  # a reused pid (another start time), or a file from an older release
            assert stack.alive("mlflow") is None, stale
        stack.down()  # finds nothing of its own to stop
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
