"""The columns of a built benchmark (PROTOCOL section 4): sample rows, withheld labels, volumes."""

from __future__ import annotations

import datasets

from atom_bench.core.degrade import DEGRADATION_COLUMNS
from atom_bench.core.tracks import TrackSpec

# Columns that give away the answer; withheld from public test splits when labels are hidden.
LABEL_COLUMNS = (
    "high_label", "low_label", "paper_high", "paper_low",
    "center_vox", "center_mm", "normal", "normal_mm", "u", "v",
)  # fmt: skip


def sample_features(spec: TrackSpec, with_labels: bool = True) -> datasets.Features:
    """``datasets`` features of a track's sample rows (PROTOCOL section 4)."""
    vec3 = datasets.Sequence(datasets.Value("float64"), length=3)
    features = {
        "sample_id": datasets.Value("string"),
        "volume_id": datasets.Value("string"),
        "subject": datasets.Value("string"),
        "modality": datasets.Value("string"),
        "source": datasets.Value("string"),
        "view": datasets.Value("string"),
        "slice": datasets.Array2D(spec.slice_shape, "float32"),
        "center_vox": vec3,
        "center_mm": vec3,
        "normal": vec3,
        "normal_mm": vec3,
        "u": vec3,
        "v": vec3,
        "pixel_spacing": datasets.Value("float64"),
        "high_label": datasets.Value("int64"),
        "low_label": datasets.Value("int64"),
        "paper_high": datasets.Sequence(datasets.Value("int64")),
        "paper_low": datasets.Sequence(datasets.Value("int64")),
        "tissue_fraction": datasets.Value("float64"),
        "seed": datasets.Value("int64"),
        **{name: datasets.Value("float64") for name in DEGRADATION_COLUMNS},
    }
    if not with_labels:
        features = {k: v for k, v in features.items() if k not in LABEL_COLUMNS}
    return datasets.Features(features)


def label_features(spec: TrackSpec) -> datasets.Features:
    """Features of a withheld labels file: ids, label columns and breakdown columns."""
    full = sample_features(spec)
    keep = ("sample_id", "volume_id", "modality", "view", *LABEL_COLUMNS, *DEGRADATION_COLUMNS)
    return datasets.Features({k: full[k] for k in keep})


def volume_features(size: int) -> datasets.Features:
    return datasets.Features(
        {
            "volume_id": datasets.Value("string"),
            "subject": datasets.Value("string"),
            "modality": datasets.Value("string"),
            "source": datasets.Value("string"),
            "licence": datasets.Value("string"),
            "group": datasets.Value("string"),
            "size": datasets.Value("int64"),
            "affine": datasets.Sequence(datasets.Value("float64"), length=16),
            "spacing_mm": datasets.Value("float64"),
            "voxels": datasets.Array3D((size, size, size), "uint16"),
            "mask": datasets.Array3D((size, size, size), "uint8"),
        }
    )
