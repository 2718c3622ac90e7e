"""Training losses for block scores.

- :func:`asymmetric_loss`: the Asymmetric Loss (ASL, Ridnik et al. 2021) exactly as the released
  RegisMCAN configures it (``gamma_neg=4, gamma_pos=0, clip=0.05, eps=1e-8``, focusing weight
  computed without gradient), with one documented change: the released code **sums** over batch
  and classes; we sum over classes and take the **mean over the batch**, so the loss scale (and
  a learning rate) does not depend on the batch size. ``reduction="sum"`` restores the original.
  The released code also computes the focusing weight without gradient
  (``disable_torch_grad_focal_loss=True``); its update is then not the gradient of the loss it
  reports (with 756 negatives against 2 positives, a small step can *raise* that loss). We
  differentiate through the weight by default, so the update is the true gradient;
  ``detach_focus=True`` restores the released behaviour.
- :func:`cross_entropy`: softmax cross-entropy, the natural loss for the single-label partition
  targets of the benchmark.

Targets are integer labels ``(B,)`` (one-hot) or multi-hot / soft ``(B, K)`` tensors.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Reduction = Literal["mean", "sum", "none"]


def _dense_targets(targets: Tensor, n_classes: int, dtype: torch.dtype) -> Tensor:
    if targets.ndim == 1:
        return F.one_hot(targets.long(), n_classes).to(dtype)
    if targets.shape[-1] != n_classes:
        raise ValueError(f"targets have {targets.shape[-1]} classes, logits {n_classes}")
    return targets.to(dtype)


def _reduce(per_sample: Tensor, reduction: Reduction) -> Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def asymmetric_loss(
    logits: Tensor,
    targets: Tensor,
    gamma_neg: float = 4.0,
    gamma_pos: float = 0.0,
    clip: float = 0.05,
    eps: float = 1e-8,
    reduction: Reduction = "mean",
    detach_focus: bool = False,
) -> Tensor:
    """ASL over independent sigmoids, summed over classes, reduced over the batch.

    With ``p = sigmoid(logit)`` and the shifted negative probability ``p_m = max(p - clip, 0)``::

        L = -sum_k [ y log(max(p, eps)) (1 - p)^gamma_pos
                     + (1 - y) log(max(1 - p_m, eps)) p_m^gamma_neg ]

    ``detach_focus=True`` computes the focusing weights under ``no_grad`` like the released code.
    """
    y = _dense_targets(targets, logits.shape[-1], logits.dtype)
    p = torch.sigmoid(logits)
    p_neg = (1 - p + clip).clamp(max=1) if clip > 0 else 1 - p  # = 1 - p_m
    loss = y * torch.log(p.clamp(min=eps)) + (1 - y) * torch.log(p_neg.clamp(min=eps))
    if gamma_neg > 0 or gamma_pos > 0:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not detach_focus):
            pt = p * y + p_neg * (1 - y)
            weight = torch.pow(1 - pt, gamma_pos * y + gamma_neg * (1 - y))
        loss = loss * weight
    return _reduce(-loss.sum(dim=-1), reduction)


def cross_entropy(logits: Tensor, targets: Tensor, reduction: Reduction = "mean") -> Tensor:
    """Softmax cross-entropy; ``targets`` are labels ``(B,)`` or (normalised) soft targets ``(B, K)``."""
    if targets.ndim == 1:
        return F.cross_entropy(logits, targets.long(), reduction=reduction)
    y = _dense_targets(targets, logits.shape[-1], logits.dtype)
    y = y / y.sum(dim=-1, keepdim=True).clamp(min=1e-12)
    return _reduce(-(y * F.log_softmax(logits, dim=-1)).sum(dim=-1), reduction)


LOSSES = {"asl": asymmetric_loss, "ce": cross_entropy}


def block_loss(high_logits: Tensor, low_logits: Tensor, high: Tensor, low: Tensor, kind: str = "asl") -> Tensor:
    """Coarse plus fine loss (unweighted sum, as the released training)."""
    fn = LOSSES[kind]
    return fn(high_logits, high) + fn(low_logits, low)
