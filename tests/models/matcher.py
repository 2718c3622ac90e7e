"""A user-defined model for the tests: exact template matching of axis-aligned slices.

It really registers the slice against the volume (sum of squared differences at every voxel
position of the three axis-aligned views, computed with 3D convolutions), so it is perfect on
clean ``easy`` slices and only as good as chance with someone else's volume.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from atom_bench.core.labels import high_label, low_label
from atom_bench.models.registry import ModelMeta, Prediction


class AxisMatcher:
    def predict(self, volumes: torch.Tensor, slices: torch.Tensor) -> Prediction:
        b, size = volumes.shape[0], volumes.shape[-1]
        h, w = slices.shape[-2:]
        high = torch.zeros(b, 27)
        low = torch.zeros(b, 729)
        for i in range(b):
            vol, sl = volumes[i : i + 1], slices[i, 0]
            best, centre = None, None
            # (kernel shape, how the slice maps onto array axes, centre offset) per view; see PROTOCOL 3.2
            for kernel, axes in (((w, h, 1), "axial"), ((w, 1, h), "coronal"), ((1, w, h), "sagittal")):
                k = sl.T.reshape(kernel)
                ssd = F.conv3d(vol**2, torch.ones(1, 1, *kernel)) - 2 * F.conv3d(vol, k[None, None]) + (k**2).sum()
                value, flat = ssd.flatten().min(0)
                if best is None or value < best:
                    idx = torch.unravel_index(flat, ssd.shape[2:])
                    best, centre = value, [float(idx[a]) + (kernel[a] - 1) / 2 for a in range(3)]
            high[i, int(high_label(centre, size))] = 1.0
            low[i, int(low_label(centre, size))] = 1.0
        return Prediction(high, low)


def create_model(volume_size=None, slice_shape=None):
    return AxisMatcher(), ModelMeta(name="axis-matcher", training_data="none", uses_volume=True)
