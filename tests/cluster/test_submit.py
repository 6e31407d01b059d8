"""`raynas submit` against a real Ray job server (`ray start --head` with its dashboard)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from raynas.run.placement import ALLOW_LOCAL_TRACKING_ENV
from raynas.tracking.store import TAG_NODE_ID, TAG_ROLE

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAYNAS = str(Path(sys.executable).parent / "raynas")


def test_submit_runs_the_search_as_a_ray_job(ray_cluster, tmp_path) -> None:
    config = {
        "name": "submitted",
        "space": {"name": "nb201", "channels": 4, "cells_per_stage": 1, "resolution": 8},
        "searcher": {"name": "random"},
        "evaluator": {"name": "supernet", "train_steps": 10, "num_threads": 1,
                      "num_cpus": 0.25},
        "budget": {"trials": 4, "concurrency": 1, "cpus_per_trial": 0.5},
        "tracking": {"experiment": "submitted"},
        "output_dir": str(tmp_path / "out"),
    }
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run(
        [RAYNAS, "submit", str(path), "--address", ray_cluster.dashboard, "--tracking-uri", uri,
         "--env", f"{ALLOW_LOCAL_TRACKING_ENV}=1", "--wait"],
        env=ray_cluster.env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    job_id = done.stdout.splitlines()[0]
    assert re.fullmatch(r"raynas-submitted-[0-9a-f]{8}", job_id), job_id
    # The job's log streamed back: the search ran `raynas run` on the shipped config.
    assert "raynas: searching nb201 with random on supernet for 4 trials" in done.stdout
    assert "best architecture:" in done.stdout
    assert f"job {job_id} SUCCEEDED" in done.stderr

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("submitted").experiment_id])
    search = [r for r in runs if r.data.tags.get(TAG_ROLE) == "search"]
    assert len(search) == 1 and search[0].info.status == "FINISHED"
    assert search[0].data.params["budget.trials"] == "4"
    trials = [r for r in runs if r.data.tags.get(TAG_ROLE) == "trial"]
    assert len(trials) == 4
    assert {r.data.tags[TAG_NODE_ID] for r in trials} <= set(ray_cluster.node_ids)
    assert list((tmp_path / "out").glob("submitted-*/trials.parquet"))
