"""Does a model use the volume? The in-batch volume-swap diagnostic.

The split-level form (every slice of a split scored with another volume and with a blank one)
is :func:`atom_bench.models.run.volume_reliance`; this is the same test on one batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from atom_bench.errors import ModelError
from atom_bench.models.protocol import SliceLocator


def volume_swap_diagnostic(
    model: SliceLocator,
    volumes: Tensor,
    slices: Tensor,
    high_labels: Tensor | None = None,
    low_labels: Tensor | None = None,
    shift: int = 1,
) -> dict[str, float]:
    """Predict with the right volumes, then with each slice paired with another sample's volume.

    The volumes are rolled by ``shift`` along the batch, so every slice meets a different volume.
    A model that really compares slice and volume changes its scores (``max_abs_diff > 0``) and,
    once it is good, loses accuracy (``*_drop > 0``); the released RegisMCAN gives exactly 0.

    Returns:
        ``max_abs_diff_high``, ``max_abs_diff_low`` and, when labels are given, top-1 accuracies
        ``high_acc``, ``high_acc_swapped``, ``high_drop`` and the same for ``low``.
    """
    if volumes.shape[0] < 2:
        raise ModelError("the volume-swap diagnostic needs a batch of at least 2 samples")
    right = model.predict(volumes, slices)
    swapped = model.predict(torch.roll(volumes, shifts=shift, dims=0), slices)
    out = {
        "max_abs_diff_high": float((right.high_scores - swapped.high_scores).abs().max()),
        "max_abs_diff_low": float((right.low_scores - swapped.low_scores).abs().max()),
    }
    for level, labels in (("high", high_labels), ("low", low_labels)):
        if labels is None:
            continue
        labels = torch.as_tensor(labels)
        acc = float((getattr(right, f"{level}_label") == labels).float().mean())
        acc_swapped = float((getattr(swapped, f"{level}_label") == labels).float().mean())
        out.update({f"{level}_acc": acc, f"{level}_acc_swapped": acc_swapped, f"{level}_drop": acc - acc_swapped})
    return out
