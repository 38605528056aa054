"""Training survives any kill: a run SIGKILLed at moments drawn at random, restarted with the same command each time,
ends with the same bytes as a run never interrupted; and bad states are errors, never silent.

Kills come from `tests/kill_harness.py`, which runs `medklip.train` and kills its own process at an addressed moment
(before micro-batch g of the run, while step s's state is written, halfway through writing model_best, right after
an epoch's checkpoint). Each scenario draws its kill points from a seeded generator and covers, by name: inside epoch
0, inside a later epoch, inside an accumulation window (accumulation > 1), right after an epoch boundary, while a
checkpoint is being written, one step before the end. The scenarios cross world size 1 and 2 (torchrun, gloo, CPU),
0 and 2 loader workers, accumulation 1 and 3, on a train split that no batch x accumulation divides. The negative
control breaks the sampler's resume position and must make the comparison fail.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medklip.data.prepare import PreparedData
from tests.helpers import prepared_synthetic, tiny_text_encoder

pytestmark = pytest.mark.slow

HARNESS = Path(__file__).resolve().parents[1] / "kill_harness.py"
TORCHRUN = Path(sys.executable).with_name("torchrun")
BATCH = 4
SEED = 20261206  # the kill points' generator; a failure names the scenario and its plan


@dataclass(frozen=True)
class Scenario:
    world_size: int
    workers: int
    accumulation: int
    epochs: int
    kills: int
    save_every: int = 1  # optimizer steps between periodic checkpoints
    deterministic: bool = True

    @property
    def name(self) -> str:
        flags = "" if self.deterministic else "-nondeterministic"
        return f"world{self.world_size}-workers{self.workers}-accumulation{self.accumulation}{flags}"


SCENARIOS = [
    Scenario(world_size=1, workers=0, accumulation=1, epochs=3, kills=7, save_every=2),
    Scenario(world_size=1, workers=2, accumulation=3, epochs=3, kills=6),
    Scenario(world_size=2, workers=0, accumulation=3, epochs=4, kills=6),
    Scenario(world_size=2, workers=2, accumulation=1, epochs=3, kills=6, save_every=2),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    data = prepared_synthetic(root / "data", 48, seed=4)
    n_train = len(PreparedData(data).rows("train"))
    assert n_train % (BATCH * 3) and math.ceil(n_train / 2) % (BATCH * 3), "the leftover case needs a remainder"
    space = {"root": root, "data": data, "encoder": tiny_text_encoder(root / "bert"), "n_train": n_train, "refs": {}}
    yield space
    for ref in space["refs"].values():  # a reference a failed test never waited for
        if isinstance(ref, subprocess.Popen):
            ref.kill()
            ref.communicate()


def layout(n_train: int, s: Scenario) -> tuple[int, int]:
    """(micro-batches per epoch, optimizer steps per epoch), as the trainer derives them."""
    per_rank = math.ceil(n_train / s.world_size)
    batches = per_rank // BATCH if n_train >= BATCH * s.world_size else math.ceil(per_rank / BATCH)
    steps = batches // s.accumulation
    return steps * s.accumulation, steps


def kill_plan(rng: random.Random, n_train: int, s: Scenario, improved: list[int]) -> list[dict]:
    """Kill events in the order they happen: one for every named moment, then random ones up to `s.kills`.

    `improved` are the epochs (1-based) whose end writes model_best in the uninterrupted run: only those have a
    model_best write to be killed in.
    """
    micro, steps = layout(n_train, s)
    total_micro, total_steps, a = micro * s.epochs, steps * s.epochs, s.accumulation
    inside = [g for g in range(total_micro) if g % micro]  # not the first micro-batch of an epoch
    later = [g for g in inside if micro < g < total_micro - a]  # a later epoch's middle, not the last step's start

    def before_micro_batch(g: int, category: str) -> dict:
        rank = rng.randrange(s.world_size)
        return {"event": "micro_batch", "at": g, "rank": rank, "key": g, "category": category}

    def after_epoch() -> dict:
        e = rng.randrange(1, s.epochs)
        return {"event": "after_epoch", "at": e, "key": e * micro - 0.25, "category": "after epoch"}

    def while_writing() -> dict:
        if rng.random() < 0.5:
            e = rng.choice(improved)
            return {"event": "best_write", "at": e, "key": e * micro - 0.4, "category": "best write"}
        step = rng.choice([st for st in range(1, total_steps) if st % s.save_every == 0])
        epoch, within = divmod(step - 1, steps)
        key = epoch * micro + (within + 1) * a - 0.5  # after the step's last micro-batch
        return {"event": "state_write", "at": step, "key": key, "category": "state write"}

    named = {
        "inside epoch 0": lambda: before_micro_batch(rng.randrange(1, micro), "inside epoch 0"),
        "inside a later epoch": lambda: before_micro_batch(rng.choice(later), "later"),
        "right after an epoch boundary": after_epoch,
        "while a checkpoint is written": while_writing,
        "one step before the end": lambda: before_micro_batch(total_micro - a, "one step before the end"),
    }
    if a > 1:
        window = [g for g in inside if g % a]
        named["inside an accumulation window"] = lambda: before_micro_batch(rng.choice(window), "accumulation window")
    plan: list[dict] = []
    for draw in named.values():  # each named moment gets a kill of its own: a shared key would merge two into one
        kill = draw()
        for _ in range(100):
            if kill["key"] not in {k["key"] for k in plan}:
                break
            kill = draw()
        plan.append(kill)
    while len({kill["key"] for kill in plan}) < s.kills:
        plan.append(rng.choice(list(named.values()))())
    unique = {kill["key"]: kill for kill in plan}
    return [unique[key] for key in sorted(unique)]


def improved_epochs(history: list[dict]) -> list[int]:
    best, epochs = None, []
    for record in history:
        score = record.get("val_mean_auc")
        if best is None or (score is not None and score > best):
            best, epochs = score if score is not None else best, [*epochs, record["epoch"]]
    return epochs


def command(workspace: dict, s: Scenario, save: Path) -> list[str]:
    train = ["--data", str(workspace["data"]), "--config", "debug", "--save", str(save), "--no-mlflow"]
    train += ["--epochs", str(s.epochs), "--batch-size", str(BATCH), "--num-workers", str(s.workers)]
    train += ["--text-encoder", str(workspace["encoder"]), "--set", "model.text_max_length=32"]
    train += ["--set", f"train.grad_accumulation={s.accumulation}", "--set", f"train.save_every_steps={s.save_every}"]
    train += ["--deterministic"] if s.deterministic else []
    if s.world_size == 1:
        return [sys.executable, str(HARNESS), *train]
    return [str(TORCHRUN), "--standalone", "--nproc-per-node", str(s.world_size), str(HARNESS), *train]


def launch(workspace: dict, s: Scenario, save: Path, kill: dict | None = None, broken: bool = False, wait=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    env.pop("MEDKLIP_KILL", None)
    if kill is not None:
        env["MEDKLIP_KILL"] = json.dumps({key: kill[key] for key in ("event", "at", "rank") if key in kill})
    if broken:
        env["MEDKLIP_BREAK"] = "sampler"
    pipe = subprocess.PIPE
    process = subprocess.Popen(command(workspace, s, save), stdout=pipe, stderr=pipe, text=True, env=env)
    return finish(process) if wait else process


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=240)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def was_killed(result: subprocess.CompletedProcess, s: Scenario) -> bool:
    if s.world_size == 1:
        return result.returncode == -9
    return result.returncode != 0 and ("SIGKILL" in result.stderr or "exitcode: -9" in result.stderr)


def outcome(save: Path) -> dict:
    """What must be identical: model_best's bytes, the final step's weights, history without wall time."""
    last = json.loads((save / "last.json").read_text())
    history = [json.loads(line) for line in (save / "history.jsonl").read_text().splitlines()]
    return {
        "best_bytes": (save / "model_best.safetensors").read_bytes(),
        "best": load_file(str(save / "model_best.safetensors")),
        "final": load_file(str(save / last["dir"] / "model.safetensors")),
        "final_bytes": (save / last["dir"] / "model.safetensors").read_bytes(),
        "history": [{key: value for key, value in record.items() if key != "img_s"} for record in history],
        "step": last["step"],
    }


def reference(workspace: dict, s: Scenario) -> dict:
    """The uninterrupted run's outcome (started by `start_reference`, or now)."""
    if s not in workspace["refs"]:
        start_reference(workspace, s)
    ref = workspace["refs"][s]
    if isinstance(ref, subprocess.Popen):
        result = finish(ref)
        assert result.returncode == 0, result.stderr[-3000:]
        ref = workspace["refs"][s] = outcome(Path(result.args[result.args.index("--save") + 1]))
    return ref


def start_reference(workspace: dict, s: Scenario) -> None:
    """Starts the uninterrupted run in the background: it shares nothing with the killed one but the 2 cores."""
    if s not in workspace["refs"]:
        workspace["refs"][s] = launch(workspace, s, workspace["root"] / f"straight-{s.name}", wait=False)


def interrupted(workspace: dict, s: Scenario, plan: list[dict], broken: bool = False) -> dict:
    save = workspace["root"] / f"killed-{s.name}{'-broken' if broken else ''}"
    for kill in plan:
        result = launch(workspace, s, save, kill, broken)
        assert was_killed(result, s), (
            f"{s.name}: {kill} was not reached (exit {result.returncode}):\n" + result.stderr[-3000:]
        )
    result = launch(workspace, s, save, broken=broken)
    assert result.returncode == 0, result.stderr[-3000:]
    leftovers = [path.name for path in save.iterdir() if path.name.startswith(".")]
    assert not leftovers, f"{s.name}: partial writes left behind: {leftovers}"
    return outcome(save)


def same_tensors(a: dict, b: dict, exact: bool = True) -> bool:
    if a.keys() != b.keys():
        return False
    if exact:
        return all(torch.equal(a[name], b[name]) for name in a)
    return all(torch.allclose(a[name], b[name], rtol=1e-5, atol=1e-6) for name in a)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_a_run_killed_at_random_moments_ends_byte_identical_to_an_uninterrupted_one(workspace, scenario):
    straight = reference(workspace, scenario)  # the plan needs the epochs that write model_best
    if scenario is not SCENARIOS[-1]:
        start_reference(workspace, SCENARIOS[SCENARIOS.index(scenario) + 1])  # runs beside this one's kills
    rng = random.Random(f"{SEED}-{scenario.name}")
    plan = kill_plan(rng, workspace["n_train"], scenario, improved_epochs(straight["history"]))
    resumed = interrupted(workspace, scenario, plan)
    where = f"{scenario.name}, kills {[(k['event'], k['at'], k.get('rank', 0)) for k in plan]}"
    assert resumed["step"] == straight["step"], where
    assert resumed["history"] == straight["history"], where
    assert same_tensors(resumed["final"], straight["final"]), where
    assert same_tensors(resumed["best"], straight["best"]), where
    assert resumed["final_bytes"] == straight["final_bytes"], where
    assert resumed["best_bytes"] == straight["best_bytes"], where


def test_the_kill_plans_cover_every_named_moment(workspace):
    for s in SCENARIOS:
        plan = kill_plan(random.Random(f"{SEED}-{s.name}"), workspace["n_train"], s, improved=[1])
        categories = {kill["category"] for kill in plan}
        expected = {"inside epoch 0", "later", "after epoch", "one step before the end"}
        expected |= {"accumulation window"} if s.accumulation > 1 else set()
        assert expected <= categories and categories & {"state write", "best write"}, (s.name, categories)
        assert len(plan) >= 6 and [k["key"] for k in plan] == sorted({k["key"] for k in plan})
    assert {s.world_size for s in SCENARIOS} == {1, 2} and {s.workers for s in SCENARIOS} == {0, 2}
    assert {s.accumulation for s in SCENARIOS} == {1, 3}


def test_without_deterministic_a_resumed_run_ends_within_float_tolerance(workspace):
    s = Scenario(world_size=1, workers=0, accumulation=1, epochs=2, kills=2, deterministic=False)
    micro, _ = layout(workspace["n_train"], s)
    plan = [{"event": "micro_batch", "at": micro // 2, "key": 0}, {"event": "micro_batch", "at": micro + 3, "key": 1}]
    start_reference(workspace, s)
    resumed, straight = interrupted(workspace, s, plan), reference(workspace, s)
    assert resumed["step"] == straight["step"]
    assert same_tensors(resumed["final"], straight["final"], exact=False)


def test_negative_control_a_broken_sampler_resume_is_caught(workspace):
    # The same harness with the sampler's resume position disabled: a restarted epoch replays its first batches
    # instead of the remaining ones, and the comparison must see it.
    s = SCENARIOS[0]
    micro, _ = layout(workspace["n_train"], s)
    plan = [{"event": "micro_batch", "at": micro + micro // 2 + 1, "key": 0}]
    straight = reference(workspace, s)
    resumed = interrupted(workspace, s, plan, broken=True)
    assert resumed["step"] == straight["step"]
    assert not same_tensors(resumed["final"], straight["final"])
    assert resumed["history"] != straight["history"]


# --- bad states are errors, never silent ---------------------------------------------------------------------------
def train_here(workspace: dict, save: Path, *flags: str) -> int:
    """`medklip train` in this process (tiny encoder, no MLflow): for the refusals, which need no kill."""
    from medklip.cli import main

    args = ["train", "--data", str(workspace["data"]), "--config", "debug", "--save", str(save), "--no-mlflow"]
    return main([*args, "--text-encoder", str(workspace["encoder"]), "--set", "model.text_max_length=32", *flags])


def one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("medklip train: error: ")]
    assert len(lines) == 1, lines
    return lines[0]


def test_a_truncated_model_best_found_on_resume_stops_naming_the_file(workspace, tmp_path, capsys):
    save = tmp_path / "ckpt"
    assert train_here(workspace, save, "--epochs", "1") == 0
    best = save / "model_best.safetensors"
    truncated = best.read_bytes()[: best.stat().st_size // 2]
    best.write_bytes(truncated)
    capsys.readouterr()
    assert train_here(workspace, save, "--epochs", "2") == 2
    assert str(best) in one_error_line(capsys)
    assert best.read_bytes() == truncated  # kept for the user to look at, not overwritten


@pytest.mark.parametrize("target", ["../elsewhere", "/tmp", "step-1", 7])
def test_a_last_pointer_outside_its_folder_is_refused(workspace, tmp_path, capsys, target):
    save = tmp_path / "ckpt"
    assert train_here(workspace, save, "--max-steps", "1") == 0
    (save / "last.json").write_text(json.dumps({"dir": target, "step": 1}))
    capsys.readouterr()
    assert train_here(workspace, save, "--max-steps", "2") == 2
    line = one_error_line(capsys)
    assert str(save / "last.json") in line and "step-NNNNNNNN" in line


def test_resuming_with_another_batch_size_or_world_size_is_refused(workspace, tmp_path, capsys):
    save = tmp_path / "ckpt"
    assert train_here(workspace, save, "--max-steps", "2", "--batch-size", str(BATCH)) == 0
    kept = (save / "last.json").read_text()
    capsys.readouterr()
    assert train_here(workspace, save, "--max-steps", "4", "--batch-size", str(BATCH // 2)) == 2
    assert f"batch_size = {BATCH}, this run has {BATCH // 2}" in one_error_line(capsys)

    s = Scenario(world_size=2, workers=0, accumulation=1, epochs=1, kills=0)
    result = launch(workspace, s, save)
    errors = [line for line in result.stderr.splitlines() if line.startswith("medklip train: error: ")]
    assert result.returncode != 0 and errors, result.stderr[-3000:]
    assert all("world_size = 1, this run has 2" in line for line in errors)
    assert (save / "last.json").read_text() == kept  # nothing was trained on top
