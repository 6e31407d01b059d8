"""Runs a Tune experiment with a bare raynas searcher and interrupts itself (SIGINT).

Usage: python _tune_restore_driver.py STORAGE SEARCHER STOP_AFTER NUM_SAMPLES. After
STOP_AFTER completed trials the driver sends itself SIGINT, as Ctrl-C would; Tune saves the
experiment and exits. ``python _tune_restore_driver.py STORAGE --restore`` continues it with
``Tuner.restore`` in a new process and prints the trial configs as JSON on its last line.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

import ray
from ray import tune

from searchers import create_searcher
from searchers.testing import MIXED_PARAM_SPACE


def trainable(config: dict[str, Any]) -> None:
    """A deterministic score of the configuration."""
    bonus = {"conv": 1.0, "pool": 0.5, "skip": 0.0}[config["op"]]
    tune.report({"score": bonus - config["lr"] * config["depth"] + config["dropout"]})


class StopAfter(tune.Callback):
    """Sends SIGINT to this process after ``n`` completed trials (once)."""

    def __init__(self, n: int, marker: str) -> None:
        self.n, self.marker, self.done = n, marker, 0

    def on_trial_complete(self, iteration: int, trials: Any, trial: Any, **info: Any) -> None:
        self.done += 1
        if self.done >= self.n and not os.path.exists(self.marker):
            with open(self.marker, "w") as f:
                f.write(str(self.done))
            os.kill(os.getpid(), signal.SIGINT)


def main() -> None:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    if sys.argv[2] == "--restore":
        grid = tune.Tuner.restore(os.path.join(sys.argv[1], "exp"), trainable,
                                  param_space=MIXED_PARAM_SPACE).fit()
        out = {"configs": [r.config for r in grid], "errors": len(grid.errors)}
        ray.shutdown()
        print(json.dumps(out))
        return
    storage, name, stop_after, samples = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(
        sys.argv[4])
    searcher = create_searcher(name, seed=0)
    tune.Tuner(
        trainable,
        param_space=MIXED_PARAM_SPACE,
        tune_config=tune.TuneConfig(search_alg=searcher, metric="score", mode="max",
                                    num_samples=samples, max_concurrent_trials=2,
                                    reuse_actors=True),
        run_config=tune.RunConfig(name="exp", storage_path=storage, verbose=0,
                                  callbacks=[StopAfter(stop_after,
                                                       os.path.join(storage, "stopped"))]),
    ).fit()
    ray.shutdown()


if __name__ == "__main__":
    main()
