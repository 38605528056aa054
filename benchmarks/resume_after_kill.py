"""A run SIGKILLed at given moments and restarted with the same command, against the same run never interrupted.

    python benchmarks/resume_after_kill.py [--workdir /tmp/resume-after-kill] [--kill-at 15 9 12 17]

Prepares `synthetic://300?seed=5` and extracts its triplets, trains the `debug` preset with `medklip train --epochs 6
--deterministic` once straight through (the baseline), then for each `--kill-at` second starts the same command in a
fresh folder, SIGKILLs it that many seconds in, and runs the command again to the end. Each kill reports the step
`last.json` held when it was killed and whether the resumed run's `history.jsonl` (without its wall-time `img_s`),
`model_best.safetensors` and final step weights equal the baseline's, byte for byte. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from medklip.labels.extract import file_sha256

MEDKLIP = [sys.executable, "-m", "medklip.cli"]


def outcome(save: Path) -> dict:
    last = json.loads((save / "last.json").read_text())
    lines = (save / "history.jsonl").read_text().splitlines()
    history = [{key: value for key, value in json.loads(line).items() if key != "img_s"} for line in lines]
    best, final = file_sha256(save / "model_best.safetensors"), file_sha256(save / last["dir"] / "model.safetensors")
    return {"history": history, "best": best, "final": final}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/resume-after-kill"))
    parser.add_argument("--kill-at", type=float, nargs="+", default=[15, 9, 12, 17], help="seconds after the start")
    args = parser.parse_args()
    root, data = args.workdir, args.workdir / "data"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    root.mkdir(parents=True, exist_ok=True)
    if not (data / "triplets.parquet").exists():
        prepare = [*MEDKLIP, "data", "prepare", "--source", "synthetic://300?seed=5", "--out", str(data)]
        subprocess.run(prepare, check=True, env=env)
        subprocess.run([*MEDKLIP, "extract", "--data", str(data)], check=True, env=env)

    def train(save: Path) -> list[str]:
        return [*MEDKLIP, "train", "--config", "debug", "--data", str(data), "--epochs", "6", "--deterministic",
                "--save", str(save)]  # fmt: skip

    started = time.perf_counter()
    subprocess.run(train(root / "straight"), check=True, env=env, capture_output=True)
    seconds = time.perf_counter() - started
    straight = outcome(root / "straight")
    kills = []
    for moment in args.kill_at:
        save = root / f"killed-at-{moment:g}s"
        process = subprocess.Popen(train(save), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(moment)
        process.send_signal(signal.SIGKILL)
        killed = process.wait() == -signal.SIGKILL
        pointer = save / "last.json"
        step = json.loads(pointer.read_text())["step"] if pointer.exists() else None
        subprocess.run(train(save), check=True, env=env, capture_output=True)
        resumed = outcome(save)
        kills.append({
            "kill_at_s": moment, "killed": killed, "last_step_when_killed": step,
            "history_equal": resumed["history"] == straight["history"],
            "best_bytes_equal": resumed["best"] == straight["best"],
            "final_bytes_equal": resumed["final"] == straight["final"],
        })  # fmt: skip
        print(json.dumps(kills[-1]), flush=True)
    identical = all(kill["history_equal"] and kill["best_bytes_equal"] and kill["final_bytes_equal"] for kill in kills)
    print(json.dumps({
        "uninterrupted_s": round(seconds, 1), "steps": straight["history"][-1]["step"],
        "final_val_mean_auc": straight["history"][-1]["val_mean_auc"], "kills": len(kills),
        "all_identical": identical,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
