"""Runs `medklip.train` and SIGKILLs this process at one chosen moment: the fault injector of the resume tests.

    MEDKLIP_KILL='{"event": "micro_batch", "at": 7, "rank": 1}' torchrun ... tests/kill_harness.py --data D ...

Events, addressed in the run's own terms so that a restarted run reaches them again at the same place:
- `micro_batch` at g: before the g-th micro-batch of the whole run (epoch * micro-batches per epoch + batch);
- `state_write` at s: while the training state of step s is being written (after its state file, before the rename);
- `best_write` at e: halfway through writing model_best of epoch e (its temporary file half written);
- `after_epoch` at e: right after the checkpoint that ends epoch e.
`rank` picks the process (writes happen on rank 0 only). `MEDKLIP_BREAK=sampler` disables the sampler's resume
position (a restarted epoch replays from its start): the negative control that shows the test can fail.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install(kill: dict) -> None:
    import torch

    from medklip.training import checkpoints, trainer

    event, at, rank = kill["event"], int(kill["at"]), int(kill.get("rank", 0))
    if int(os.environ.get("RANK", "0")) != rank:
        return
    if event == "micro_batch":
        original = trainer.Trainer.micro_batch

        def micro_batch(self, batch):
            if self.progress.epoch * self.micro_batches + self.progress.batch == at:
                _die()
            return original(self, batch)

        trainer.Trainer.micro_batch = micro_batch
    elif event == "state_write":
        original_save = torch.save

        def save(obj, path, *args, **kwargs):
            original_save(obj, path, *args, **kwargs)
            if str(path).endswith("state.pt") and obj["progress"]["step"] == at:
                _die()

        checkpoints.torch.save = save
    elif event == "best_write":
        original_weights = trainer.save_weights

        def save_weights(model, path, config, extra=None):
            if Path(path).name == "model_best.safetensors" and (extra or {}).get("epoch") == at:
                # As a kill halfway through the write leaves it: half of the temporary file, the old file in place.
                body = checkpoints._canonical_safetensors(
                    {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, {"format": "x"}
                )
                Path(path).with_name(f".{Path(path).name}.killed.tmp").write_bytes(body[: len(body) // 2])
                _die()
            return original_weights(model, path, config, extra)

        trainer.save_weights = save_weights
    elif event == "after_epoch":
        original_end = trainer.Trainer.end_epoch

        def end_epoch(self, images_per_second):
            stop = original_end(self, images_per_second)
            if self.progress.epoch == at:
                _die()
            return stop

        trainer.Trainer.end_epoch = end_epoch
    else:
        raise SystemExit(f"unknown kill event {event!r}")


def break_sampler() -> None:
    from medklip.data import dataset

    original = dataset.EpochSampler.set_epoch

    def set_epoch(self, epoch, start=0):
        original(self, epoch, 0)

    dataset.EpochSampler.set_epoch = set_epoch


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if os.environ.get("MEDKLIP_KILL"):
        install(json.loads(os.environ["MEDKLIP_KILL"]))
    if os.environ.get("MEDKLIP_BREAK") == "sampler":
        break_sampler()
    from medklip.train import main

    sys.exit(main(sys.argv[1:]))
