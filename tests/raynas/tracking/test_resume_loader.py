"""raynas.tracking.resume on real MLflow sqlite stores: a real search, and written interrupted
ones."""

from __future__ import annotations

import copy
import itertools
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from raynas.tracking.resume import (
    TAG_INTERRUPTED,
    TAG_RESUMED_AS,
    RecordedTrial,
    ResumeError,
    load_resume_plan,
    load_trials,
    load_warm_start,
    mark_interrupted,
    order_trials,
    replay_into,
)
from raynas.tracking.store import (
    TAG_ARCH,
    TAG_CANONICAL,
    TAG_ROLE,
    TAG_SEARCHER,
    TAG_SPACE,
    TAG_TRIAL_ID,
    TAG_TRIAL_INDEX,
    default_artifact_location,
)
from searchers import NASSearch, create_searcher
from spaces import create_space

SPACE = create_space("nb201")
REA = "regularized_evolution"
REA_OPTIONS = {"population_size": 4, "tournament_size": 2}
T0 = 1_700_000_000_000  # ms


def _score(arch: str) -> float:
    """A deterministic stand-in for an accuracy."""
    return 40.0 + float(np.dot(SPACE.encode(arch), [3, 1, 4, 1, 5, 9]))


def _config(**over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "sim",
        "space": "nb201",
        "searcher": {"name": REA, **REA_OPTIONS},
        "evaluator": {"name": "training", "dataset": "digits"},  # builds without data
        "budget": {"trials": 20, "concurrency": 3},
        "seed": 5,
    }
    cfg.update(over)
    return cfg


def _searcher(name: str = REA, seed: int = 5, **options: Any) -> NASSearch:
    opts = REA_OPTIONS if name == REA and not options else options
    return create_searcher(name, SPACE, metric="val_acc", mode="max", seed=seed, max_trials=20,
                           **opts)


@dataclass
class Store:
    """A sqlite MLflow store and its experiment."""

    uri: str
    client: MlflowClient
    experiment_id: str
    clock: Any = field(default_factory=lambda: itertools.count(T0, 7))

    @classmethod
    def create(cls, folder: Path, template: Path) -> Store:
        """A store in ``folder``, copied from an empty one (creating tables takes seconds)."""
        shutil.copyfile(template, folder / "mlflow.db")
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        client = MlflowClient(uri)
        exp = client.create_experiment("sim", artifact_location=default_artifact_location(uri))
        return cls(uri, client, exp)

    def search_run(self, cfg: dict[str, Any] | None, *, space: str = "nb201",
                   searcher: str = REA, config_text: str | None = None) -> str:
        """A parent run as the runner writes it (RUNNING: its driver died)."""
        tags = {TAG_ROLE: "search", TAG_SPACE: space, TAG_SEARCHER: searcher}
        run = self.client.create_run(self.experiment_id, run_name="sim",
                                     start_time=next(self.clock), tags=tags)
        rid = run.info.run_id
        if config_text is not None:
            self.client.log_text(rid, config_text, "config.yaml")
        elif cfg is not None:
            self.client.log_text(rid, yaml.safe_dump(cfg), "config.yaml")
        self.client.log_text(rid, json.dumps(SPACE.describe()), "space.json")
        return rid

    def trial_run(self, parent: str, trial_id: str, arch: str, *, searcher: str = REA,
                  role: str = "trial") -> str:
        """A trial run as TrialLogger creates it: tags, then params (strings)."""
        config = SPACE.to_config(arch)
        run = self.client.create_run(
            self.experiment_id, run_name=f"evaluate_trial_{trial_id}", start_time=next(self.clock),
            tags={MLFLOW_PARENT_RUN_ID: parent, TAG_ROLE: role, TAG_TRIAL_ID: trial_id,
                  TAG_ARCH: arch, TAG_CANONICAL: SPACE.canonical(arch), TAG_SPACE: "nb201",
                  TAG_SEARCHER: searcher})
        params = [Param(k, str(v)) for k, v in {**config, "arch": arch}.items()]
        self.client.log_batch(run.info.run_id, params=params)
        return run.info.run_id

    def end_trial(self, run_id: str, metrics: dict[str, float] | None, status: str) -> None:
        """Log a result (an earlier, different value at step 1 first) and close the run."""
        now = next(self.clock)
        items = [Metric("training_iteration", 1.0, now, 1)]
        for key, value in (metrics or {}).items():
            items += [Metric(key, value - 10.0, now, 1), Metric(key, value, now, 2)]
        items.append(Metric("training_iteration", 2.0, now, 2))
        self.client.log_batch(run_id, metrics=items)
        self.client.set_terminated(run_id, status, end_time=next(self.clock))

    def snapshot(self) -> dict[str, Any]:
        """Status, end time, tags, metrics and params of every run."""
        runs = self.client.search_runs([self.experiment_id], max_results=1000)
        # as JSON text, so that NaN metrics compare equal
        return {r.info.run_id: json.dumps([r.info.status, r.info.end_time, r.data.tags,
                                           r.data.metrics, r.data.params], sort_keys=True)
                for r in runs}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow sqlite store, created once."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture()
def store(tmp_path: Path, template: Path) -> Store:
    """A fresh store for one test."""
    return Store.create(tmp_path, template)


@dataclass
class Sim:
    """A search driven by hand, recorded as the runner records one, then interrupted."""

    store: Store
    parent: str
    searcher: NASSearch
    runs: dict[str, str]  # trial id -> run id
    archs: dict[str, str]  # trial id -> architecture
    interrupted: list[str]  # trial ids
    checkpoints: list[dict[str, Any]]


def simulate(store: Store, *, completions: int = 14, fail_at: tuple[int, ...] = (3,),
             nan_at: tuple[int, ...] = (7,), checkpoint_at: tuple[int, ...] = (14,),
             cfg: dict[str, Any] | None = None, log_config: bool = True) -> Sim:
    """Three trials in flight; completions alternate oldest / second oldest, so completion
    order differs from trial order. As under Tune, a completion is checkpointed before the
    next suggestion. The trials in flight at the end stay RUNNING."""
    cfg = cfg or _config()
    searcher = _searcher()
    parent = store.search_run(cfg if log_config else None)
    runs: dict[str, str] = {}
    archs: dict[str, str] = {}
    pending: list[str] = []
    checkpoints = []
    counter = itertools.count()

    def fill() -> None:
        while len(pending) < 3:
            tid = f"trial{next(counter):03d}"
            config = searcher.suggest(tid)
            if not isinstance(config, dict):  # the budget is spent
                return
            archs[tid] = SPACE.to_string(SPACE.from_config(config))
            runs[tid] = store.trial_run(parent, tid, archs[tid])
            pending.append(tid)

    for done in range(completions):
        fill()
        tid = pending.pop(done % 2 if len(pending) > 1 else 0)
        arch = archs[tid]
        if done in fail_at:
            searcher.on_trial_complete(tid, None, error=True)
            store.end_trial(runs[tid], None, "FAILED")
        else:
            metrics = {"val_acc": math.nan if done in nan_at else _score(arch), "val_loss": 1.0}
            searcher.on_trial_complete(tid, {**metrics, "training_iteration": 2})
            store.end_trial(runs[tid], metrics, "FINISHED")
        if done + 1 in checkpoint_at:
            state = json.loads(json.dumps(searcher.get_state()))
            store.client.log_text(parent, json.dumps(state), "searcher_state.json")
            checkpoints.append(state)
    fill()
    return Sim(store, parent, searcher, runs, archs, pending, checkpoints)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory, template: Path) -> Sim:
    """A shared interrupted search: tests may add runs beside it, never change its own."""
    return simulate(Store.create(tmp_path_factory.mktemp("sim"), template))


def _seen(searcher: NASSearch) -> set[str]:
    return {SPACE.canonical(SPACE.from_string(t)) for t in searcher.get_state()["seen"]}


# ------------------------------------------------------------------------ the plan
def test_plan_counts_states_and_budget(sim: Sim, tmp_path: Path) -> None:
    before = sim.store.snapshot()
    plan = load_resume_plan(sim.store.uri, sim.parent, dest_dir=tmp_path / "dl")
    assert sim.store.snapshot() == before  # reading changed nothing
    assert (len(plan.finished), len(plan.failed), len(plan.interrupted)) == (12, 2, 3)
    assert plan.remaining == 20 - 14 and plan.spent == 14
    assert plan.remaining_by_searcher == {REA: 6}
    assert plan.status == "RUNNING" and plan.objective_keys == ("val_acc",)
    assert plan.config.searcher.name == REA and plan.config.budget.trials == 20
    assert {t.trial_id for t in plan.interrupted} == set(sim.interrupted)
    assert all(t.status == "RUNNING" for t in plan.interrupted)
    assert sorted(t.status for t in plan.failed) == ["FAILED", "FINISHED"]  # NaN counts failed
    assert plan.searcher_states == {REA: sim.checkpoints[-1]}
    assert plan.portfolio_state is None and plan.supernet_checkpoint is None
    assert plan.warnings == []  # a live driver is refused by the lease, not warned about
    assert (tmp_path / "dl" / "config.yaml").is_file()
    for trial in plan.finished:
        assert trial.metrics["val_acc"] == _score(trial.arch)  # the last value, not step 1's
        assert trial.metrics["training_iteration"] == 2.0
        assert trial.config == SPACE.to_config(trial.arch)  # typed, rebuilt from the arch
        assert trial.run_id == sim.runs[trial.trial_id] and trial.search_run_id == sim.parent
    ordered = plan.replay_trials()
    assert [t.trial_id for t in ordered] == sorted(t.trial_id for t in ordered)
    by_completion = [t.trial_id for t in plan.replay_trials(order="completion")]
    assert by_completion != [t.trial_id for t in ordered]


def test_restored_searcher_suggests_what_the_original_would(sim: Sim, tmp_path: Path) -> None:
    plan = load_resume_plan(sim.store.uri, sim.parent, dest_dir=tmp_path)
    restored = _searcher()
    restored.set_state(plan.searcher_states[REA])
    assert replay_into(restored, plan.replay_trials(order="completion"), drop_pending=True) == 0
    assert restored.get_state()["pending"] == {}
    original = copy.deepcopy(sim.searcher)
    assert original.population == restored.population and len(original.population) == 4
    # The last trial was suggested after the last checkpoint: the restored searcher
    # suggests it again, then continues exactly as the original.
    last = sorted(sim.archs)[-1]
    assert last in sim.interrupted
    ahead = [original.suggest(f"o{i}") for i in range(3)]
    assert [restored.suggest(f"r{i}") for i in range(4)] == [
        SPACE.to_config(sim.archs[last]), *ahead]
    assert original.num_suggested == restored.num_suggested == 20


def test_lagging_checkpoint_is_completed_by_replay(store: Store, tmp_path: Path) -> None:
    sim = simulate(store, checkpoint_at=(9,))
    plan = load_resume_plan(sim.store.uri, sim.parent, dest_dir=tmp_path / "dl")
    restored = _searcher()
    restored.set_state(plan.searcher_states[REA])
    assert restored.get_state()["completed"] + restored.num_failed == 9
    told = replay_into(restored, plan.replay_trials(order="completion"), drop_pending=True)
    assert told == 14 - 9
    mine, theirs = restored.get_state(), sim.searcher.get_state()
    assert restored.population == sim.searcher.population
    assert (mine["completed"], mine["failed"]) == (theirs["completed"], theirs["failed"])
    assert mine["pending"] == {}
    recorded = {t.canonical for t in plan.finished + plan.failed}
    assert recorded <= _seen(restored) <= _seen(sim.searcher)
    # replaying again teaches nothing twice
    assert replay_into(restored, plan.replay_trials(order="completion")) == 0


def test_replay_into_a_fresh_searcher_teaches_exactly_the_recorded_trials(
    sim: Sim, tmp_path: Path
) -> None:
    plan = load_resume_plan(sim.store.uri, sim.parent, dest_dir=tmp_path)
    fresh = _searcher(seed=99)
    assert replay_into(fresh, plan.replay_trials()) == 14
    assert _seen(fresh) == {t.canonical for t in plan.finished + plan.failed}
    assert fresh.num_failed == 2 and fresh.num_suggested == 0
    assert fresh.best is not None and fresh.best[1] == max(
        t.metrics["val_acc"] for t in plan.finished)
    # the population holds the last four successes in the order they were told
    last = [t for t in plan.replay_trials() if t in plan.finished][-4:]
    assert [SPACE.to_string(a) for a, _ in fresh.population] == [t.arch for t in last]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "not JSON"),
        (json.dumps({"hello": 1}), "not a raynas searcher state"),
        ("RANDOM", "saved by 'RandomSearch', the config's searcher is "
                   "'RegularizedEvolutionSearch'"),
        ("SPACE", "saved for space 'mobilenet', the config's space is 'nb201'"),
        ("TRUNCATED", "corrupt searcher state"),
    ],
)
def test_unusable_state_falls_back_to_replay(
    store: Store, tmp_path: Path, text: str, expected: str
) -> None:
    sim = simulate(store, completions=6, fail_at=(), nan_at=())
    good = sim.checkpoints[-1] if sim.checkpoints else sim.searcher.get_state()
    if text == "RANDOM":
        text = json.dumps(_searcher("random").get_state())
    elif text == "SPACE":
        text = json.dumps({**good, "space": "mobilenet"})
    elif text == "TRUNCATED":
        text = json.dumps({k: v for k, v in good.items() if k != "algorithm"})
    sim.store.client.log_text(sim.parent, text, "searcher_state.json")
    plan = load_resume_plan(sim.store.uri, sim.parent, dest_dir=tmp_path / "dl")
    assert plan.searcher_states == {REA: None}
    (warning,) = [w for w in plan.warnings if "searcher_state.json" in w]
    assert expected in warning and "replaying the recorded trials" in warning
    assert "\n" not in warning
    fresh = _searcher()
    assert replay_into(fresh, plan.replay_trials()) == 6
    assert _seen(fresh) == {t.canonical for t in plan.finished}


def test_a_run_without_a_state_plans_a_replay(store: Store, tmp_path: Path) -> None:
    sim = simulate(store, completions=5, checkpoint_at=())
    plan = load_resume_plan(sim.store.uri, sim.parent, dest_dir=tmp_path / "dl")
    assert plan.searcher_states == {REA: None}
    assert not [w for w in plan.warnings if "searcher state" in w]


def test_the_supernet_checkpoint_is_downloaded_not_loaded(store: Store, tmp_path: Path) -> None:
    sim = simulate(store, completions=5, checkpoint_at=())
    weights = tmp_path / "raynas-supernet-0123456789.pt"
    weights.write_bytes(b"not a pickle: never loaded here")
    store.client.log_artifact(sim.parent, str(weights))
    plan = load_resume_plan(store.uri, sim.parent, dest_dir=tmp_path / "dl")
    assert plan.supernet_checkpoint == tmp_path / "dl" / weights.name
    assert plan.supernet_checkpoint.read_bytes() == weights.read_bytes()
    plan = load_resume_plan(store.uri, sim.parent, dest_dir=tmp_path / "dl2",
                            download_checkpoint=False)
    assert plan.supernet_checkpoint is None and not (tmp_path / "dl2" / weights.name).exists()


def test_of_several_supernet_checkpoints_the_latest_step_wins(
    store: Store, tmp_path: Path
) -> None:
    """Runs of older raynas hold one checkpoint per driver, under random names."""
    import torch

    sim = simulate(store, completions=5, checkpoint_at=())
    saved = {"raynas-supernet-0aaaaaaaaa.pt": 800, "raynas-supernet-ffffffffff.pt": 100}
    for name, step in saved.items():  # name order would pick the older one
        torch.save({"format": 1, "step": step}, tmp_path / name)
        store.client.log_artifact(sim.parent, str(tmp_path / name))
    (tmp_path / "raynas-supernet-zzzzzzzzzz.pt").write_bytes(b"\x80\x04not a checkpoint")
    store.client.log_artifact(sim.parent, str(tmp_path / "raynas-supernet-zzzzzzzzzz.pt"))
    plan = load_resume_plan(store.uri, sim.parent, dest_dir=tmp_path / "dl")
    assert plan.supernet_checkpoint == tmp_path / "dl" / "raynas-supernet-0aaaaaaaaa.pt"
    (warning,) = [w for w in plan.warnings if "supernet checkpoints" in w]
    assert "3 supernet checkpoints" in warning and "step 800" in warning


def test_a_recorded_trial_index_orders_the_trials(store: Store) -> None:
    parent = store.search_run(_config())
    rng = np.random.default_rng(3)
    runs = [store.trial_run(parent, f"t{i}", SPACE.to_string(SPACE.sample(rng))) for i in range(4)]
    for index, run_id in zip([2, 0, 3, 1], runs):  # started in another order than suggested
        store.client.set_tag(run_id, TAG_TRIAL_INDEX, str(index))
    trials = load_trials(store.client, parent, SPACE)
    assert [t.run_id for t in trials] == [runs[1], runs[3], runs[0], runs[2]]
    assert [t.trial_index for t in trials] == [0, 1, 2, 3]
    store.client.delete_tag(runs[0], TAG_TRIAL_INDEX)  # one without: start order for all
    trials = load_trials(store.client, parent, SPACE)
    assert [(t.run_id, t.trial_index) for t in trials] == list(zip(runs, [1, 2, 3, 4]))


# ------------------------------------------------------------------------ errors
def _error(uri: str, run_id: str, dest: Path) -> str:
    with pytest.raises(ResumeError) as info:
        load_resume_plan(uri, run_id, dest_dir=dest)
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, ValueError)
    return message


def test_errors_name_the_run_and_the_problem(sim: Sim, tmp_path: Path) -> None:
    uri, client = sim.store.uri, sim.store.client
    other = client.create_run(sim.store.experiment_id).info.run_id
    before = sim.store.snapshot()
    assert _error(uri, "abc", tmp_path) == f"no MLflow run 'abc' at {uri}"
    trial = sim.runs["trial000"]
    assert _error(uri, trial, tmp_path) == (
        f"MLflow run {trial!r} is a trial run of search run {sim.parent!r}, not a search; "
        f"pass {sim.parent!r} instead"
    )
    assert _error(uri, other, tmp_path) == (
        f"MLflow run {other!r} is not a raynas search (it has no raynas.role=search tag)")
    missing = tmp_path / "nowhere" / "mlflow.db"
    assert _error(f"sqlite:///{missing}", sim.parent, tmp_path) == (
        f"no MLflow store at sqlite:///{missing} (the database file does not exist)")
    assert not missing.exists()
    assert sim.store.snapshot() == before
    client.delete_run(other)
    assert _error(uri, other, tmp_path) == (
        f"MLflow run {other!r} at {uri} is deleted; restore it first")


@pytest.mark.parametrize(
    ("config_text", "expected"),
    [
        (None, "has no config.yaml artifact; it cannot be resumed"),
        ("space: [nb201\n", "has an invalid config.yaml artifact: not valid YAML"),
        (yaml.safe_dump({**_config(), "colour": "red"}),
         "has an invalid config.yaml artifact: unknown config field 'colour'"),
        (yaml.safe_dump(_config(space="nb999")), "its space cannot be built: unknown space"),
    ],
)
def test_config_artifact_errors(
    store: Store, tmp_path: Path, config_text: str | None, expected: str
) -> None:
    parent = store.search_run(None, config_text=config_text)
    message = _error(store.uri, parent, tmp_path / "dl")
    assert message.startswith(f"search run {parent!r}") and expected in message


def test_a_run_tagged_with_another_space_than_its_config(store: Store, tmp_path: Path) -> None:
    parent = store.search_run(_config(), space="mobilenet")
    assert _error(store.uri, parent, tmp_path) == (
        f"search run {parent!r} is tagged space 'mobilenet' but its config.yaml builds space "
        "'nb201'")


def test_a_complete_search_is_finalised_then_has_nothing_to_resume(
    store: Store, tmp_path: Path
) -> None:
    sim = simulate(store, completions=20, checkpoint_at=(20,))
    # the last suggestions were never completed: 20 done plus none in flight within budget;
    # its driver died before recording the outcome, so a resume only finalises it
    plan = load_resume_plan(sim.store.uri, sim.parent, dest_dir=tmp_path / "dl")
    assert plan.remaining == 0 and plan.spent == 20 and plan.status == "RUNNING"
    MlflowClient(sim.store.uri).set_terminated(sim.parent, "FINISHED")
    message = _error(sim.store.uri, sim.parent, tmp_path / "dl")
    assert message == (f"search run {sim.parent!r} already ran its 20 trials (18 finished, "
                       "2 failed): nothing to resume")


# ------------------------------------------------------------------------ mark_interrupted
def test_mark_interrupted_kills_only_the_interrupted_runs(store: Store, tmp_path: Path) -> None:
    sim = simulate(store, completions=8)
    store = sim.store
    plan = load_resume_plan(store.uri, sim.parent, dest_dir=tmp_path / "dl")
    before = store.snapshot()
    changed = mark_interrupted(store.client, plan, resumed_as="new-run")
    after = store.snapshot()
    assert sorted(changed) == sorted(sim.runs[t] for t in sim.interrupted)
    for run_id in changed:
        status, _, tags, _, _ = json.loads(after[run_id])
        assert status == "KILLED" and tags[TAG_INTERRUPTED] == "true"
        assert tags[TAG_RESUMED_AS] == "new-run"
    assert {k: v for k, v in after.items() if k not in changed} == {
        k: v for k, v in before.items() if k not in changed}
    again = load_resume_plan(store.uri, sim.parent, dest_dir=tmp_path / "dl2")
    assert again.interrupted == [] and again.remaining == plan.remaining
    assert [t.run_id for t in again.finished] == [t.run_id for t in plan.finished]


def test_mark_interrupted_refuses_when_the_search_still_runs(store: Store, tmp_path: Path) -> None:
    sim = simulate(store, completions=6)
    plan = load_resume_plan(sim.store.uri, sim.parent, dest_dir=tmp_path / "dl")
    late = plan.interrupted[0].run_id
    sim.store.client.set_terminated(late, "FINISHED")
    with pytest.raises(ResumeError, match=f"trial run '{late}' became FINISHED after the resume "
                                          "plan was read"):
        mark_interrupted(sim.store.client, plan)
    statuses = {t.run_id: sim.store.client.get_run(t.run_id).info.status
                for t in plan.interrupted[1:]}
    assert set(statuses.values()) == {"RUNNING"}


# ------------------------------------------------------------------------ load_trials
def test_load_trials_pages_through_every_run(sim: Sim) -> None:
    client = sim.store.client
    full = load_trials(client, sim.parent, SPACE)
    assert len(full) == 17 and [t.trial_index for t in full] == list(range(1, 18))
    paged = load_trials(client, sim.parent, SPACE, page_size=4)
    assert repr(paged) == repr(full)  # repr: one trial's metric is NaN


def test_portfolio_runs_nest_trials_under_searcher_runs(store: Store, tmp_path: Path) -> None:
    members = [{"label": "evo", "name": REA, "trials": 10, **REA_OPTIONS},
               {"label": "rnd", "name": "random", "trials": 10}]
    cfg = _config(searchers=members)
    del cfg["searcher"]
    cfg["budget"] = {"trials": 20}
    parent = store.search_run(cfg, searcher="portfolio")
    evo, rnd = _searcher(seed=1), _searcher("random", seed=2)
    rng = np.random.default_rng(0)
    for label, searcher, n in (("evo", evo, 4), ("rnd", rnd, 3)):
        sub = store.client.create_run(store.experiment_id, run_name=label, tags={
            TAG_ROLE: "searcher", TAG_SEARCHER: label, MLFLOW_PARENT_RUN_ID: parent}).info.run_id
        for i in range(n):
            arch = SPACE.to_string(SPACE.sample(rng))
            store.end_trial(store.trial_run(sub, f"{label}{i}", arch, searcher=label),
                            {"val_acc": _score(arch)}, "FINISHED")
            searcher.add_evaluated_point(SPACE.to_config(arch), {"val_acc": _score(arch)})
    store.trial_run(parent, "orphan", SPACE.to_string(SPACE.sample(rng)), searcher="rnd")
    state_evo = json.loads(json.dumps(evo.get_state()))
    store.client.log_text(parent, json.dumps(state_evo), "searchers/evo/searcher_state.json")
    portfolio_state = {"format": "raynas.portfolio/1", "space": "nb201",
                       "members": {"evo": {"state": None},
                                   "rnd": {"state": json.loads(json.dumps(rnd.get_state()))}}}
    store.client.log_text(parent, json.dumps(portfolio_state), "searcher_state.json")

    assert _error(store.uri, sub, tmp_path) == (
        f"MLflow run {sub!r} is a searcher run of search run {parent!r}, not a search; "
        f"pass {parent!r} instead")
    plan = load_resume_plan(store.uri, parent, dest_dir=tmp_path / "dl")
    assert (len(plan.finished), len(plan.interrupted)) == (7, 1)
    assert plan.remaining == 13 and plan.remaining_by_searcher == {"evo": 6, "rnd": 7}
    assert plan.searcher_states["evo"] == state_evo
    assert plan.searcher_states["rnd"] == portfolio_state["members"]["rnd"]["state"]
    assert plan.portfolio_state == portfolio_state
    assert [w for w in plan.warnings if "searcher state" in w] == []
    assert {t.searcher for t in plan.replay_trials("evo")} == {"evo"}

    wrong = {**portfolio_state, "members": {"evo": {}, "other": {}}}
    store.client.log_text(parent, json.dumps(wrong), "searcher_state.json")
    plan = load_resume_plan(store.uri, parent, dest_dir=tmp_path / "dl2")
    assert plan.searcher_states["rnd"] is None and plan.searcher_states["evo"] == state_evo
    (warning,) = [w for w in plan.warnings if "searcher state" in w]
    assert "saved for searchers ['evo', 'other'], the config has ['evo', 'rnd']" in warning

    state_rnd = portfolio_state["members"]["rnd"]["state"]
    store.client.log_text(parent, json.dumps(state_rnd), "searchers/rnd/searcher_state.json")
    store.client.log_text(parent, "{broken", "searcher_state.json")
    plan = load_resume_plan(store.uri, parent, dest_dir=tmp_path / "dl3")
    assert plan.searcher_states == {"evo": state_evo, "rnd": state_rnd}
    assert plan.portfolio_state is None
    (warning,) = [w for w in plan.warnings if "state" in w]
    assert warning.startswith(f"portfolio state searcher_state.json of run {parent!r} is "
                              "unusable (not JSON") and "members' own states are used" in warning


# ------------------------------------------------------------------------ warm start
def test_warm_start_keeps_the_first_of_each_architecture(sim: Sim) -> None:
    store = sim.store
    first = load_warm_start(store.uri, [sim.parent], SPACE)
    assert len(first) == 13  # FINISHED runs (the NaN one included); failed and running left out
    second = store.search_run(_config(name="second"))
    shared = [t.arch for t in first[:2]]
    known = {t.canonical for t in first}
    fresh = list(itertools.islice(
        (SPACE.to_string(a) for a in SPACE.enumerate() if SPACE.canonical(a) not in known), 2))
    for i, arch in enumerate(shared + fresh):
        store.end_trial(store.trial_run(second, f"s{i}", arch), {"acc": 1.0, "val_acc": 5.0},
                        "FINISHED")
    both = load_warm_start(store.uri, [sim.parent, second], SPACE)
    assert [t.run_id for t in both[:13]] == [t.run_id for t in first]
    assert [t.arch for t in both[13:]] == fresh
    assert both[13].metrics["acc"] == 1.0  # metrics of another objective are kept
    assert len({t.canonical for t in both}) == len(both) == 15
    # a searcher on another objective learns nothing from them
    other = create_searcher("random", SPACE, metric="latency", mode="min", seed=0)
    assert replay_into(other, both) == 0 and _seen(other) == set()


def test_warm_start_needs_the_same_space(store: Store) -> None:
    mobile = store.search_run(_config(space="mobilenet"), space="mobilenet")
    with pytest.raises(ResumeError) as info:
        load_warm_start(store.uri, [mobile], SPACE)
    assert str(info.value) == (f"cannot warm-start from search run {mobile!r}: it searched space "
                               "'mobilenet', this search's space is 'nb201'")
    parent = store.search_run(_config())
    describe = SPACE.describe()
    describe["decisions"]["op/0"] = describe["decisions"]["op/0"][:3]
    store.client.log_text(parent, json.dumps(describe), "space.json")
    with pytest.raises(ResumeError, match="has other decisions"):
        load_warm_start(store.uri, [parent], SPACE)
    with pytest.raises(ResumeError, match=f"no MLflow run 'nope' at {store.uri}"):
        load_warm_start(store.uri, ["nope"], SPACE)


def test_reinforce_pretrains_its_policy_on_warm_start_rewards(store: Store) -> None:
    parent = store.search_run(_config())
    rng = np.random.default_rng(1)
    for i in range(40):
        arch = SPACE.to_string(SPACE.sample(rng))
        good = SPACE.to_config(arch)["op/0"] == "nor_conv_3x3"
        store.end_trial(store.trial_run(parent, f"t{i}", arch),
                        {"val_acc": (90.0 if good else 10.0) + rng.normal()}, "FINISHED")
    trials = load_warm_start(store.uri, [parent], SPACE)
    controller = create_searcher("reinforce", SPACE, metric="val_acc", mode="max", seed=0)
    ops = list(SPACE.describe()["decisions"]["op/0"])
    assert controller.probabilities()[0][ops.index("nor_conv_3x3")] == pytest.approx(0.2)
    assert replay_into(controller, trials) == 40
    assert controller.probabilities()[0][ops.index("nor_conv_3x3")] > 0.8
    assert controller.num_suggested == 0  # told, not suggested: the budget is untouched


def test_order_trials_rejects_unknown_orders() -> None:
    trial = RecordedTrial("r", "t", "a", "c", {}, {}, "FINISHED", REA, 1, 2, 0, "p")
    assert order_trials([trial], "completion") == [trial]
    with pytest.raises(ValueError, match="order must be 'trial' or 'completion', got 'x'"):
        order_trials([trial], "x")


# ------------------------------------------------------------------------ a real search
@pytest.mark.ray
@pytest.mark.data
def test_real_search_reads_back(tmp_path: Path, nb201_dir: Path, ray_session: None) -> None:
    from raynas.cli.main import main

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    config = {
        "name": "real",
        "space": "nb201",
        "searcher": {"name": REA, "population_size": 5, "tournament_size": 2},
        "evaluator": {"name": "tabular", "table_path": str(nb201_dir)},
        "budget": {"trials": 20, "concurrency": 2},
        "seed": 3,
        "tracking": {"uri": uri, "experiment": "real"},
        "output_dir": str(tmp_path / "out"),
    }
    path = tmp_path / "real.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path)]) == 0
    client = MlflowClient(uri)
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("real").experiment_id], "tags.`raynas.role` = 'search'")
    run_id = parent.info.run_id
    assert "nothing to resume" in _error(uri, run_id, tmp_path / "dl")

    trials = load_trials(client, run_id, SPACE)
    assert len(trials) == 20 and {t.status for t in trials} == {"FINISHED"}
    assert [t.trial_index for t in trials] == list(range(1, 21))
    assert len({t.canonical for t in trials}) == 20
    for t in trials:
        run = client.get_run(t.run_id)
        assert t.config == SPACE.to_config(SPACE.from_config(run.data.params))
        assert t.metrics["val_acc"] == run.data.metrics["val_acc"] and "test_acc_200ep" in t.metrics

    state = json.loads(Path(client.download_artifacts(run_id, "searcher_state.json",
                                                      str(tmp_path / "st"))).read_text())
    options = {"population_size": 5, "tournament_size": 2, "seed": 3}
    restored = create_searcher(REA, SPACE, metric="val_acc", mode="max", **options)
    restored.set_state(state)
    assert _seen(restored) == {t.canonical for t in trials}
    replayed = create_searcher(REA, SPACE, metric="val_acc", mode="max", **options)
    assert replay_into(replayed, order_trials(trials, "completion")) == 20
    assert _seen(replayed) == _seen(restored)
    assert replayed.population == restored.population

    # the same run with its last five trials and the driver interrupted
    for t in trials[-5:]:
        client.update_run(t.run_id, status="RUNNING")
    client.update_run(run_id, status="RUNNING")
    plan = load_resume_plan(uri, run_id, dest_dir=tmp_path / "dl")
    assert (len(plan.finished), len(plan.interrupted), plan.remaining) == (15, 5, 5)
    assert plan.searcher_states[REA] == state and plan.config.evaluator.name == "tabular"
    warm = load_warm_start(uri, [run_id], SPACE)
    assert [t.run_id for t in warm] == [t.run_id for t in plan.finished]


@pytest.mark.ray
def test_a_run_whose_driver_died_after_its_last_trial_is_finalised(
    store: Store, tmp_path: Path, ray_session: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from raynas.cli.main import main

    sim = simulate(store, completions=20, checkpoint_at=(20,))
    client = sim.store.client
    assert client.get_run(sim.parent).info.status == "RUNNING"
    client.set_tag(sim.parent, "raynas.driver_time_s", "123.0")  # its driver's heartbeats
    args = ["resume", sim.parent, "--tracking-uri", sim.store.uri]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "all trials done, recording the outcome" in out
    parent = client.get_run(sim.parent)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["num_trials"] == 20 and parent.data.metrics["num_failed"] == 2
    assert 123.0 < parent.data.metrics["wall_time_s"] < 123.0 + 600  # both drivers' time
    best = max(_score(a) for tid, a in sim.archs.items() if tid in sim.runs)
    assert parent.data.metrics["best_val_acc"] <= best
    assert parent.data.tags["raynas.best_arch"] in sim.archs.values()
    artifacts = {a.path for a in client.list_artifacts(sim.parent)}
    assert {"trials.parquet", "report"} <= artifacts
    # nothing ran: the trial runs are the 20 recorded ones
    assert len(load_trials(client, sim.parent, SPACE)) == len(sim.runs)
    assert main(args) == 2
    assert "nothing to resume" in capsys.readouterr().err
