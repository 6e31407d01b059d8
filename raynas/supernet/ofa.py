"""Once-for-All progressive shrinking: phase schedule and in-place distillation.

Cai et al., "Once-for-All: Train One Network and Specialize it for Efficient Deployment", ICLR
2020; ``SupernetTrainer(method="ofa")`` runs the training loop. Torch loads lazily.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from spaces import SearchSpace

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

__all__ = ["distillation_loss", "ofa_phase_starts", "ofa_schedule"]


def ofa_phase_starts(total_steps: int, dimensions: int) -> tuple[int, ...]:
    """Default OFA phase starts: ``total_steps`` split evenly into ``dimensions + 1`` phases.

    Phase 0 trains the largest network only; phase ``p`` begins at 0-based step
    ``p * total_steps // (dimensions + 1)`` (Cai et al., "Once-for-All", ICLR 2020).
    """
    return tuple(p * total_steps // (dimensions + 1) for p in range(1, dimensions + 1))


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL divergence of the student's from the teacher's soft targets, times ``T**2``.

    ``KL(softmax(teacher / T) || softmax(student / T)) * T**2`` averaged over the batch
    (Hinton et al., 2015), with ``teacher`` detached: in-place distillation from the largest
    network (Yu & Huang, "Universally Slimmable Networks", ICCV 2019; Yu et al., "BigNAS",
    ECCV 2020).
    """
    from torch import nn

    t = temperature
    soft = nn.functional.softmax(teacher.detach() / t, dim=1)
    log_p = nn.functional.log_softmax(student / t, dim=1)
    return nn.functional.kl_div(log_p, soft, reduction="batchmean") * (t * t)


def ofa_schedule(
    space: SearchSpace, phase_steps: Sequence[int] | None, total_steps: int | None
) -> tuple[int, ...]:
    """Validated 0-based start steps of OFA phases 1..n (n = len(space.shrinking_order()))."""
    missing = [m for m in ("shrinking_order", "largest", "sample_shrunk") if not space.provides(m)]
    if missing:
        raise ValueError(f"method 'ofa' needs a space with progressive shrinking; space "
                         f"{space.name!r} has no {', '.join(missing)}")
    order = space.shrinking_order()
    if phase_steps is None:
        if total_steps is None:
            raise ValueError("method 'ofa' needs ofa_phase_steps (the step each shrinking phase "
                             "begins) or total_steps (split evenly into phases)")
        return ofa_phase_starts(total_steps, len(order))
    if (isinstance(phase_steps, (str, bytes)) or not isinstance(phase_steps, Sequence)
            or len(phase_steps) != len(order)
            or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0
                   for v in phase_steps)
            or any(b < a for a, b in zip(phase_steps, phase_steps[1:]))):
        raise ValueError(
            f"ofa_phase_steps must be {len(order)} non-decreasing integers >= 0 (the step at "
            f"which each of the phases {', '.join(order)} begins), got {phase_steps!r}"
        )
    return tuple(int(v) for v in phase_steps)
