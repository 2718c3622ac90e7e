"""What a build reads and writes: an input volume's record, and the columns of a built benchmark
(PROTOCOL section 4): sample rows, withheld labels, volumes."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import datasets

from atom_bench.core.degrade import DEGRADATION_COLUMNS
from atom_bench.core.tracks import TrackSpec


@dataclass(frozen=True)
class VolumeSource:
    """One input scan and its metadata (a row of the volumes CSV, or an entry of an ``.npz``).

    A volume held in an ``.npz`` has ``path`` = the ``.npz`` file, ``array`` = the key of the
    array that holds it (e.g. ``train_images``) and ``frame`` = its index along that array's first
    axis; for a scan file ``array`` is empty.
    """

    path: str
    volume_id: str
    subject: str
    modality: str
    group: str
    source: str = ""
    licence: str = ""
    frame: int | None = None  # the volume of a 4D series to use (of an .npz array: the entry)
    array: str = ""  # the .npz array holding the volume; empty for a scan file

    def record(self) -> dict:
        """This source as the manifest lists it: every field, less ``array`` for a scan file
        (so that builds from scan files keep the manifest they always had)."""
        fields = asdict(self)
        if not self.array:
            del fields["array"]
        return fields


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
