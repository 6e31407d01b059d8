"""SupernetEvaluator: architectures scored with weights inherited from a shared supernet."""

from __future__ import annotations

import inspect
import logging
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raynas.evaluators.base import Evaluator, Report
from spaces import Arch, SearchSpace

logger = logging.getLogger(__name__)

LogMetrics = Callable[[dict[str, float], int], None]
_OWN_OPTIONS = ("checkpoint_path", "num_threads", "primary")
HOST_PREFIX = "raynas-supernet"


def search_host_name(search_id: str) -> str:
    """The host name (and checkpoint file stem) of a search: every driver of it uses it."""
    return f"{HOST_PREFIX}-{search_id}"


def _trainer_parameters() -> set[str]:
    from raynas.supernet.trainer import SupernetTrainer

    params = inspect.signature(SupernetTrainer.__init__).parameters
    return {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY}


def _ofa_options(
    space: SearchSpace, train_steps: int, options: dict[str, Any]
) -> dict[str, Any]:
    """``options`` checked for ``method="ofa"``; phases default to ``train_steps`` split evenly."""
    from raynas.supernet.ofa import ofa_phase_starts, ofa_schedule

    options = dict(options)
    if options.get("ofa_phase_steps") is None and options.get("total_steps") is None:
        if train_steps < 1:
            raise ValueError("method 'ofa' needs train_steps >= 1, total_steps or "
                             "ofa_phase_steps to place its shrinking phases")
        if space.provides("shrinking_order"):
            options["ofa_phase_steps"] = list(
                ofa_phase_starts(train_steps, len(space.shrinking_order())))
    # The trainer's own checks, on the driver: a bad config stops before any actor starts.
    ofa_schedule(space, options.get("ofa_phase_steps"), options.get("total_steps"))
    return options


class SupernetEvaluator(Evaluator):
    """Evaluate paths of a supernet trained once before the search (SPOS / GreedyNAS / OFA).

    ``setup`` (driver side) starts ``replicas`` ``SupernetHost`` actors named
    ``f"{host_name}-{i}"`` (``replicas="per_node"``: one pinned to each node that fits
    ``num_cpus`` / ``num_gpus``), pretrains replica 0 for ``train_steps`` steps in chunks
    of ``chunk_steps``, checkpoints it, syncs the other replicas from that file (copied to
    nodes that do not see it), and writes which node each replica runs on. ``evaluate``
    (worker side) finds a host by name, lazily, on its own node when one runs there, and
    asks it for the arch's validation accuracy after BN recalibration: a lookup of about a
    millisecond plus the evaluation itself, no training per trial. A host runs up to
    ``concurrency`` evaluations at once (default ``num_cpus``), each on
    ``num_threads // concurrency`` torch threads. Only names and options are pickled.

    Fine-tuning fidelity: with ``finetune_steps > 0`` a trial instead gets the path's
    inherited weights as a stand-alone network (``SupernetHost.extract``: BN recalibrated,
    so before any step it scores what the host's evaluation scores), fine-tunes it in the
    trial process with SGD for ``finetune_steps`` steps on the host's training split (same
    data spec, seeds and subsets, loaded once per process; batch size, momentum, weight
    decay and clipping of the supernet; learning rate ``finetune_lr``, default the
    supernet's ``lr``; one torch thread), and after every ``finetune_chunk`` steps
    recalibrates its batch norms and measures the validation split. Each measurement but
    the last is reported as ``{"val_acc", "val_loss", "finetune_steps"}``; the returned
    dict adds ``supernet_step``, ``inherited_val_acc``, ``inherited_val_loss`` and
    ``finetune_time_s``. Tune's ASHA / HyperBand then stop trials at rungs of
    ``time_attr: finetune_steps`` (make ``grace_period`` a multiple of ``finetune_chunk``
    and ``max_t`` equal to ``finetune_steps``). On CPU the same arch, weights and ``seed``
    give the same numbers. ``finetune_steps=0`` (the default) keeps the plain lookup.

    ``method="ofa"`` (progressive shrinking, see ``SupernetTrainer``) needs a space with
    ``shrinking_order``; without ``ofa_phase_steps`` or ``total_steps`` its phases split
    ``train_steps`` evenly.

    Example:
        >>> from spaces import create_space
        >>> space = create_space("nb201", channels=8, cells_per_stage=1, resolution=8)
        >>> ev = SupernetEvaluator(space, train_steps=100, num_cpus=1)
        >>> ev.setup()  # doctest: +SKIP
        >>> ev.evaluate(space.sample(np.random.default_rng(0)))["val_acc"]  # doctest: +SKIP
        >>> ev.teardown()  # doctest: +SKIP
    """

    def __init__(
        self,
        space: SearchSpace,
        *,
        host_name: str | None = None,
        replicas: int | str = 1,
        train_steps: int = 0,
        method: str = "spos",
        dataset: Any = "digits",
        namespace: str | None = None,
        num_cpus: float = 1,
        num_gpus: float = 0,
        num_threads: int | None = None,
        concurrency: int | None = None,
        chunk_steps: int = 50,
        detached: bool = False,
        finetune_steps: int = 0,
        finetune_chunk: int = 10,
        finetune_lr: float | None = None,
        **trainer_options: Any,
    ) -> None:
        if not space.provides("build_supernet"):
            raise ValueError(f"space {space.name!r} has no supernet (build_supernet)")
        if replicas != "per_node" and (
            isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1
        ):
            raise ValueError(f"replicas must be an integer >= 1 or 'per_node', got {replicas!r}")
        for label, value, low in (("train_steps", train_steps, 0), ("chunk_steps", chunk_steps, 1),
                                  ("finetune_steps", finetune_steps, 0),
                                  ("finetune_chunk", finetune_chunk, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{label} must be an integer >= {low}, got {value!r}")
        if finetune_lr is not None and (
            isinstance(finetune_lr, bool) or not isinstance(finetune_lr, (int, float))
            or not finetune_lr > 0
        ):
            raise ValueError(f"finetune_lr must be a number > 0 or None, got {finetune_lr!r}")
        unknown = set(trainer_options) - (_trainer_parameters() - set(_OWN_OPTIONS))
        if unknown:
            raise ValueError(
                f"unknown supernet option(s) {', '.join(sorted(unknown))}; trainer options: "
                f"{', '.join(sorted(_trainer_parameters() - set(_OWN_OPTIONS)))}"
            )
        from raynas.evaluators.data import resolve_spec
        from raynas.supernet.trainer import METHODS

        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        if method == "ofa":
            trainer_options = _ofa_options(space, train_steps, trainer_options)
        self.space = space
        # A fresh name per evaluator unless given; setup(search_id=...) names it after the
        # search, so a resumed search's host and checkpoint keep the name.
        self._named = host_name is not None
        self.host_name = host_name or f"{HOST_PREFIX}-{uuid.uuid4().hex[:10]}"
        self.replicas, self.train_steps, self.chunk_steps = replicas, train_steps, chunk_steps
        self.method, self.namespace, self.detached = method, namespace, detached
        self.num_cpus, self.num_gpus, self.num_threads = num_cpus, num_gpus, num_threads
        if concurrency is not None and (
            isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
        ):
            raise ValueError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        self.concurrency = concurrency
        self.dataset = resolve_spec(dataset)  # absolute paths, checked on the driver
        self.trainer_options = dict(trainer_options)
        self.finetune_steps, self.finetune_chunk = finetune_steps, finetune_chunk
        self.finetune_lr = None if finetune_lr is None else float(finetune_lr)
        self.checkpoint_path: str | None = None
        self.placement_path: str | None = None
        # How many replicas setup started (``replicas`` unless "per_node"); None before setup.
        self.num_replicas: int | None = replicas if isinstance(replicas, int) else None

    @property
    def metrics(self) -> tuple[str, ...]:
        """Validation accuracy (%) and loss, the supernet step; fine-tuning ones if enabled."""
        if self.finetune_steps:
            return ("val_acc", "val_loss", "finetune_steps", "supernet_step",
                    "inherited_val_acc", "inherited_val_loss", "finetune_time_s")
        return ("val_acc", "val_loss", "supernet_step")

    @property
    def default_metric(self) -> tuple[str, str]:
        """``("val_acc", "max")``."""
        return "val_acc", "max"

    def setup(
        self, *, log_metrics: LogMetrics | None = None, checkpoint_dir: str | None = None,
        search_id: str | None = None, log_artifact: Callable[[str], None] | None = None,
        restore_from: str | None = None,
    ) -> None:
        """Start the hosts, pretrain, checkpoint and sync replicas (driver, before the search).

        ``log_metrics({"supernet/loss": ..., "supernet/acc": ...}, step)`` is called per
        step, ``log_artifact(checkpoint_path)`` after each chunk of steps. Without
        ``checkpoint_dir`` the checkpoint goes to a new temporary folder. ``search_id``
        names the host and its checkpoint ``raynas-supernet-<search_id>`` (unless
        ``host_name`` was given). ``restore_from`` (an earlier driver's checkpoint) is
        copied to ``checkpoint_path`` and loaded by the host, which continues from its
        step; one that does not load is reported in one warning line and training starts
        from step 0.
        """
        from raynas.supernet.host import start_hosts, sync_replicas

        if search_id is not None and not self._named:
            self.host_name = search_host_name(search_id)
        folder = Path(checkpoint_dir or tempfile.mkdtemp(prefix="raynas-supernet-"))
        self.checkpoint_path = str((folder / f"{self.host_name}.pt").absolute())
        if restore_from is not None and Path(restore_from).absolute() != Path(
            self.checkpoint_path
        ):
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(restore_from, self.checkpoint_path)
        hosts = start_hosts(
            self.host_name, space=self.space, replicas=self.replicas,
            namespace=self.namespace, num_cpus=self.num_cpus, num_gpus=self.num_gpus,
            detached=self.detached, checkpoint_path=self.checkpoint_path,
            num_threads=self.num_threads, concurrency=self.concurrency, method=self.method,
            dataset=self.dataset, **self.trainer_options,
        )
        import ray

        primary = hosts[0]
        state: dict[str, Any] = dict(ray.get(primary.ready.remote()))
        # A detached host of an earlier driver of this search, found by name, keeps writing
        # its own file: upload that one.
        self.checkpoint_path = state.get("checkpoint_path") or self.checkpoint_path
        if state.get("restore_error"):
            logger.warning("supernet checkpoint %s is unusable (%s); training the supernet "
                           "from step 0", restore_from or self.checkpoint_path,
                           state["restore_error"])
        elif state.get("restored"):
            logger.info("supernet %s: continuing from step %d of %s", self.host_name,
                        state["steps"], self.checkpoint_path)
        done = state["steps"]  # a restored host keeps its steps
        while done < self.train_steps:
            chunk = min(self.chunk_steps, self.train_steps - done)
            records = ray.get(primary.train.remote(chunk))  # the host saves after the chunk
            for record in records:
                if log_metrics is not None:
                    log_metrics({"supernet/loss": record["loss"], "supernet/acc": record["acc"]},
                                int(record["step"]))
            # After the chunk's metrics: a driver killed in between retrains this chunk
            # (the same numbers) rather than leaving steps without metrics.
            if log_artifact is not None:
                log_artifact(self.checkpoint_path)
            done = int(records[-1]["step"])
            logger.info("supernet %s: step %d/%d, loss %.4f", self.host_name, done,
                        self.train_steps, records[-1]["loss"])
        self.num_replicas = len(hosts)
        sync_replicas(self.host_name, replicas=self.num_replicas, namespace=self.namespace)
        self._write_placement(folder)

    def _write_placement(self, folder: Path) -> None:
        """Write ``{host_name}-placement.json``: the Ray node of each replica."""
        import json

        from raynas.supernet.host import replica_nodes

        nodes = replica_nodes(self.host_name, replicas=self.num_replicas,
                              namespace=self.namespace)
        path = folder / f"{self.host_name}-placement.json"
        rows = [{"replica": i, "node_id": node} for i, node in sorted(nodes.items())]
        path.write_text(json.dumps({"host_name": self.host_name, "replicas": rows}, indent=1))
        self.placement_path = str(path.absolute())
        logger.info("supernet %s: %d replicas on %d nodes", self.host_name, len(rows),
                    len(set(nodes.values())))

    def artifacts(self) -> list[str]:
        """The trained supernet's checkpoint and replica placement, logged to the search's run."""
        return [p for p in (self.checkpoint_path, self.placement_path) if p]

    def teardown(self) -> None:
        """Kill the hosts (no restart); the checkpoint file stays."""
        from raynas.supernet.host import stop_hosts

        stop_hosts(self.host_name, self.num_replicas, self.namespace)

    def host(self) -> Any:
        """The handle of this process's replica (looked up by name, cached per process)."""
        from raynas.supernet.host import get_host

        try:
            return get_host(self.host_name, replicas=self.num_replicas, namespace=self.namespace)
        except ValueError as exc:
            raise RuntimeError(f"{exc}; call SupernetEvaluator.setup() first") from None

    def evaluate(self, arch: Arch, *, report: Report | None = None) -> dict[str, float]:
        """The host's scores, or with ``finetune_steps`` fine-tuned ones reported per chunk."""
        text = self.space.to_string(arch)
        if not self.finetune_steps:
            return dict(self._ask("evaluate", text))
        import torch

        from raynas.supernet.finetune import finetune

        extracted = self._ask("extract", text)
        metrics = finetune(
            self.space, self.space.validate(arch), extracted, steps=self.finetune_steps,
            chunk=self.finetune_chunk, lr=self.finetune_lr, report=report,
            device="cuda" if torch.cuda.is_available() else "cpu",
        )
        return {**metrics, "supernet_step": float(extracted["supernet_step"])}

    def _ask(self, method: str, text: str) -> Any:
        """Call ``method(text)`` on this process's host replica; look it up anew once if dead."""
        import ray

        from raynas.supernet.host import forget_host

        try:
            return ray.get(getattr(self.host(), method).remote(text))
        except ray.exceptions.RayActorError:
            # A cached handle of a host that was stopped and started again: look it up anew.
            forget_host(self.host_name, namespace=self.namespace)
            return ray.get(getattr(self.host(), method).remote(text))

    def candidate_source(self) -> SupernetCandidates:
        """The hosts' GreedyNAS candidate pool as a ``searchers.protocols.CandidateSource``."""
        return SupernetCandidates(self)


class SupernetCandidates:
    """``CandidateSource`` reading the candidate pool of a search's supernet host.

    GreedyNASSearch calls ``candidates(k)`` once, lazily, at its first suggestion (after the
    runner's ``setup`` trained the supernet). A host that is restarting is asked again, at most
    ``retries`` times, then the error is raised.
    """

    def __init__(self, evaluator: SupernetEvaluator, *, retries: int = 3) -> None:
        self.evaluator = evaluator
        self.retries = retries

    def candidates(self, k: int | None = None) -> list[tuple[str, float]]:
        """The best ``k`` paths of the pool (all when None), best (lowest loss) first."""
        import time

        import ray

        for attempt in range(self.retries + 1):
            try:
                pool = ray.get(self.evaluator.host().candidate_pool.remote(k))
                return [(str(arch), float(loss)) for arch, loss in pool]
            except ray.exceptions.RayActorError:
                if attempt == self.retries:
                    raise
                time.sleep(0.5 * 2**attempt)
        return []
