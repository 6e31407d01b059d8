"""The gradient-based search methods and their options, checked before anything runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class MethodSpec:
    """What distinguishes one method: its relaxation and the extra terms or rules it adds."""

    relaxation: str = "softmax"  # softmax | gumbel | sigmoid (spaces' differentiable supernet)
    order: int = 1  # 2: DARTS's unrolled architecture gradient
    partial_channels: int = 1  # > 1: PC-DARTS's channel sampling and edge normalisation
    aux_skip: bool = False  # DARTS-'s decaying auxiliary skip connection
    zero_one: bool = False  # FairDARTS's zero-one loss on the sigmoids
    stop: str | None = None  # "dartsplus" or "hessian": an early-stopping rule
    cyclic: bool = False  # CDARTS: a deeper evaluation network trained beside the search one
    # Single-path methods on the space's weight-sharing supernet (raynas.gradient.paths):
    # "proxyless" (binarised paths, two-path gate gradients), "parsec" (a fixed number of
    # sampled architectures per step) or "fpnas" (that number adapted to the entropy).
    sampling: str | None = None
    citation: str = ""


METHODS: dict[str, MethodSpec] = {
    "darts": MethodSpec(citation="Liu et al., DARTS, ICLR 2019 (first order)"),
    "darts2": MethodSpec(order=2, citation="Liu et al., DARTS, ICLR 2019 (second order)"),
    "gdas": MethodSpec(relaxation="gumbel", citation="Dong & Yang, GDAS, CVPR 2019"),
    "fairdarts": MethodSpec(relaxation="sigmoid", zero_one=True,
                            citation="Chu et al., Fair DARTS, ECCV 2020"),
    "dartsplus": MethodSpec(stop="dartsplus", citation="Liang et al., DARTS+, 2019"),
    "darts_es": MethodSpec(stop="hessian",
                           citation="Zela et al., Understanding and Robustifying DARTS, ICLR 2020"),
    "dartsminus": MethodSpec(aux_skip=True, citation="Chu et al., DARTS-, ICLR 2021"),
    "pcdarts": MethodSpec(partial_channels=4, citation="Xu et al., PC-DARTS, ICLR 2020"),
    "cdarts": MethodSpec(cyclic=True, citation="Yu et al., Cyclic DARTS, TPAMI 2022"),
    "proxyless": MethodSpec(sampling="proxyless",
                            citation="Cai et al., ProxylessNAS, ICLR 2019"),
    "parsec": MethodSpec(sampling="parsec",
                         citation="Casale et al., Probabilistic NAS (PARSEC), 2019"),
    "fpnas": MethodSpec(sampling="fpnas", citation="Yan et al., FP-NAS, CVPR 2021"),
}
LATENCY_LOSSES = ("hinge", "absolute", "linear")


@dataclass(frozen=True)
class GradientOptions:
    """Options of one gradient search; defaults are the papers' (DARTS's for the shared ones).

    Network weights: SGD, ``w_lr`` cosine-annealed to ``w_lr_min``, momentum 0.9, weight decay
    3e-4, gradients clipped at 5. Alpha: Adam 3e-4, betas (0.5, 0.999), weight decay 1e-3,
    initialised at zero. The training split is halved: weights learn on the first half, alpha
    on the second; the data's validation split only measures.
    """

    method: str = "darts"
    epochs: int = 50
    batch_size: int = 64
    seed: int = 0
    channels: int | None = None  # the network's width and depth (None: the space's)
    cells_per_stage: int | None = None
    w_lr: float = 0.025
    w_lr_min: float = 0.001
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    grad_clip: float = 5.0
    a_lr: float = 3e-4
    a_beta1: float = 0.5
    a_beta2: float = 0.999
    a_weight_decay: float = 1e-3
    warmup_epochs: int = 0  # epochs of weight training before alpha moves (PC-DARTS: 15 of 50)
    tau_max: float = 10.0  # GDAS's Gumbel temperature, linearly from tau_max to tau_min
    tau_min: float = 0.1
    zero_one_weight: float = 10.0  # FairDARTS
    partial_channels: int | None = None  # PC-DARTS's K (None: the method's, 4)
    aux_skip_start: float = 1.0  # DARTS-: the auxiliary skip's weight, decayed to 0
    max_skip: int = 2  # DARTS+: stop once the derived cell has this many skip connections
    stable_epochs: int = 10  # DARTS+: or once its architecture held this many epochs
    hessian_window: int = 5  # DARTS-ES: eigenvalues averaged over this many epochs
    hessian_lag: int = 5  # and compared with those this many epochs before
    hessian_ratio: float = 0.75  # stop when the earlier mean / the current one falls below
    hessian_batches: int = 2
    hessian_iterations: int = 20
    eval_cells: int | None = None  # CDARTS's evaluation network depth (None: 2x the search's)
    distill_weight: float = 1.0  # CDARTS: weight of the distillation term
    distill_temperature: float = 1.0
    # Hardware-aware, single-path methods (proxyless, parsec, fpnas):
    latency_table: str | None = None  # a layer-wise lookup table (raynas latency build)
    latency_model: str | None = None  # or a learned LatencyMLP (raynas latency train, .pt)
    target_ms: float | None = None  # the latency the search aims at
    latency_weight: float = 1.0  # weight of the latency term (needs target_ms)
    latency_loss: str = "hinge"  # hinge: w*max(0, L/T-1) (FP-NAS); absolute: w*|L/T-1|;
    # linear: w*L/T (ProxylessNAS's lambda * E[LAT])
    target_tolerance: float = 0.1  # derive the most probable architecture within this of it
    derive_samples: int = 2000  # architectures drawn to find it
    samples_max: int = 16  # PARSEC's architectures per step; FP-NAS's at full entropy
    samples_min: int = 2  # FP-NAS's fewest per step
    coarse_epochs: int | None = None  # FP-NAS: epochs on the factorised distribution (None: half)
    calib_batches: int = 4  # batches re-estimating a path's batch norms before it is measured
    device: str = "auto"

    @property
    def spec(self) -> MethodSpec:
        """The method's spec (the method is checked at construction)."""
        return METHODS[self.method]

    @property
    def partial(self) -> int:
        """PC-DARTS's K for this run (1 when the method sends every channel through the mix)."""
        if self.spec.partial_channels == 1:
            return 1
        return self.partial_channels or self.spec.partial_channels

    def with_changes(self, **changes: Any) -> GradientOptions:
        """A copy with ``changes`` applied and checked."""
        return check_options(replace(self, **changes))


_POSITIVE_INT = ("epochs", "batch_size", "hessian_window", "hessian_lag", "hessian_batches",
                 "hessian_iterations", "stable_epochs", "max_skip", "samples_max", "samples_min",
                 "calib_batches", "derive_samples")
_POSITIVE = ("w_lr", "a_lr", "tau_max", "tau_min", "distill_temperature", "grad_clip")
_NON_NEGATIVE = ("w_lr_min", "w_momentum", "w_weight_decay", "a_weight_decay",
                 "zero_one_weight", "aux_skip_start", "distill_weight", "warmup_epochs",
                 "latency_weight", "target_tolerance")


def check_options(options: GradientOptions) -> GradientOptions:
    """``options`` if every value is usable, else a ``ValueError`` naming the key."""
    if options.method not in METHODS:
        raise ValueError(f"method {options.method!r} is unknown; known: {', '.join(METHODS)}")
    for name in _POSITIVE_INT:
        value = getattr(options, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    for name in ("channels", "cells_per_stage", "partial_channels", "eval_cells",
                 "coarse_epochs"):
        value = getattr(options, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 1):
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    for name in _POSITIVE + _NON_NEGATIVE:
        value = getattr(options, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if value < 0 or (name in _POSITIVE and value == 0):
            raise ValueError(f"{name} must be {'> 0' if name in _POSITIVE else '>= 0'}, "
                             f"got {value!r}")
    for name in ("a_beta1", "a_beta2", "hessian_ratio"):
        value = getattr(options, name)
        if not isinstance(value, (int, float)) or not 0 < value < 1:
            raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    if options.tau_min > options.tau_max:
        raise ValueError(f"tau_min ({options.tau_min}) must be <= tau_max ({options.tau_max})")
    if options.warmup_epochs >= options.epochs:
        raise ValueError(f"warmup_epochs ({options.warmup_epochs}) must be < epochs "
                         f"({options.epochs})")
    _check_latency(options)
    if options.device not in ("auto", "cpu", "cuda") and not options.device.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {options.device!r}")
    return options


def _check_latency(options: GradientOptions) -> None:
    """The latency options of the single-path methods: a table, a target, a known loss."""
    if options.latency_loss not in LATENCY_LOSSES:
        raise ValueError(f"latency_loss must be one of {', '.join(LATENCY_LOSSES)}, "
                         f"got {options.latency_loss!r}")
    if options.samples_min > options.samples_max:
        raise ValueError(f"samples_min ({options.samples_min}) must be <= samples_max "
                         f"({options.samples_max})")
    target = options.target_ms
    if target is not None and (not isinstance(target, (int, float)) or isinstance(target, bool)
                               or not target > 0):
        raise ValueError(f"target_ms must be a number > 0, got {target!r}")
    table, model = options.latency_table, options.latency_model
    for name, path, hint in (("latency_table", table, "build one with raynas latency build"),
                             ("latency_model", model, "train one with raynas latency train")):
        if path is not None and (not isinstance(path, str)
                                 or not Path(path).expanduser().is_file()):
            raise ValueError(f"{name} {str(path)[:80]!r} is not a file ({hint})")
    if table is not None and model is not None:
        raise ValueError("give latency_table or latency_model, not both")
    if model is not None and not str(model).endswith((".pt", ".pth")):
        raise ValueError(f"latency_model {str(model)[:80]!r} must be a LatencyMLP file (.pt): "
                         "the latency term differentiates it")
    if target is not None and table is None and model is None:
        raise ValueError("target_ms needs a latency_table or latency_model to measure "
                         "architectures against")
    if options.spec.sampling is None and (table or model or target) is not None:
        raise ValueError(f"latency_table, latency_model and target_ms are for proxyless, "
                         f"parsec and fpnas; method {options.method!r} does not use them")


def options_from_mapping(values: Mapping[str, Any]) -> GradientOptions:
    """``GradientOptions`` from a config mapping; an unknown key is a ``ValueError`` naming it."""
    known = {f.name for f in fields(GradientOptions)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r}; known: {', '.join(sorted(known))}")
    return check_options(GradientOptions(**dict(values)))
