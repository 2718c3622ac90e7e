"""Synthetic training subjects (domain randomisation): endless new subjects from each training volume.

    source = SyntheticSource("hard", seed=0, batch_size=64)
    volumes, slices, high, low = source.batch(12)       # batch 12, without drawing batches 0..11

With four training volumes a learned localiser can reach the label prior (where tissue usually
is) without reading the volume. Following SynthSeg / SynthMorph, every draw here is a new
subject: the training volume's *generation labels* (:func:`generation_labels`: intensity classes
inside its mask, background 0, computed once) are deformed by a random smooth warp (TorchIO's
affine + elastic B-spline draws, evaluated on a 4-voxel grid and applied by nearest neighbour:
:func:`_deform`), painted with random intensities per class (a
Gaussian mixture), then given a random bias field, blur and noise and rescaled to [0, 1]
(:func:`synthesize`). The mask is the deformed foreground, and a random cube symmetry
(:func:`~atom_bench.models.batches.cube_symmetry`) moves the subject in the cube. Poses and slices
then come from the track's own sampler and renderer, so labels are those of the deformed geometry
by construction. On ``histology`` the slice is cut from a second, independent contrast of the
same deformed labels (a stained section differs from the scan it is matched to), then degraded as
usual (``SynthSettings.slice_contrast="same"``: from the volume itself, so only the track's own
remap separates the two); on the other tracks it is cut from the volume the model is given.

Randomness: batch ``n`` of seed ``s`` depends only on ``(s, track, n)``: numpy draws come from
``np.random.default_rng([s, track index, 2, n])``, and TorchIO (which draws from torch's global
generator) runs inside ``torch.random.fork_rng`` seeded from that generator, so the caller's
torch state is untouched, a resumed run jumps straight to batch ``n``, and equal seeds give equal
batches. Only the ``train`` group's volumes are read; validation and test volumes stay real.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import ndimage

from atom_bench.core.tracks import TRACK_NAMES, Poses, render_samples, sample_poses
from atom_bench.core.volumes import Volume, quantise
from atom_bench.errors import ModelError
from atom_bench.models.batches import Batch, batch_of_groups, cube_symmetry

__all__ = ["SynthSettings", "SyntheticDraw", "SyntheticSource", "SyntheticSubject", "generation_labels", "synthesize",
           "synthetic_batches"]

SLICE_CONTRASTS = ("independent", "same")
_REFERENCE_SIDE = 64  # deformation settings are in voxels of a 64^3 cube and scale with the side


@dataclass(frozen=True)
class SynthSettings:
    """What a synthetic subject draws (recorded in every checkpoint trained on them).

    Lengths are in cube voxels at ``S = 64`` and scale with ``S / 64``; intensities are in the
    [0, 1] units of a prepared volume.
    """

    classes: int = 7  # generation labels inside the mask (plus background 0)
    degrees: float = 12.0  # rotation about each axis, uniform in [-degrees, degrees]
    scales: float = 0.12  # scale per axis, uniform in [1 - scales, 1 + scales]
    translation: float = 3.0  # shift per axis [voxels], uniform in [-translation, translation]
    control_points: int = 6  # elastic B-spline grid per axis: coarse = smooth and cheap
    max_displacement: float = 4.0  # largest elastic displacement per axis [voxels]
    background_mean: tuple[float, float] = (0.0, 0.4)  # mean intensity range of background
    class_mean: tuple[float, float] = (0.0, 1.0)  # mean intensity range of each tissue class
    class_std: tuple[float, float] = (0.005, 0.05)  # within-class standard deviation range
    bias: float = 0.4  # bias-field polynomial coefficients, uniform in [-bias, bias]
    bias_order: int = 2  # bias-field polynomial order (TorchIO's default 3 costs twice as much)
    blur: tuple[float, float] = (0.3, 1.0)  # Gaussian blur standard deviation range [voxels]
    noise: float = 0.04  # largest noise standard deviation (intensity units)
    # histology only: what the slice is cut from before the track's degradations. "independent":
    # a second contrast of the same deformed labels (a stain unrelated to the scan); "same": the
    # volume the model is given, so the slice's contrast differs from it only by the track's own
    # remap (what the histology splits do with real volumes)
    slice_contrast: str = "independent"
    # histology only: a curriculum. The track's degradations grow linearly from none (batch 0) to
    # full strength (batch ``severity_ramp``) by ``soften_histology``; 0 = full from the start.
    # A matcher trained at full strength from the start learns the slice-free layout and stays
    # at the prior (PROTOCOL section 10), so its matching must survive while invariance is learnt
    severity_ramp: int = 0
    # histology only: each subject's slices at a severity drawn from U(0, 1) (times the ramp's),
    # so every batch mixes near-clean cuts, which keep the matching alive, with degraded ones
    severity_mix: bool = False

    def __post_init__(self) -> None:
        if self.slice_contrast not in SLICE_CONTRASTS:
            raise ModelError(
                f"slice_contrast must be one of {', '.join(SLICE_CONTRASTS)}; got {self.slice_contrast!r}", parameters=("slice_contrast",)
            )
        if isinstance(self.severity_ramp, bool) or not isinstance(self.severity_ramp, int) or self.severity_ramp < 0:
            raise ModelError(f"severity_ramp must be a whole number of batches >= 0; got {self.severity_ramp!r}", parameters=("severity_ramp",))

    def severity(self, index: int) -> float:
        """Strength of the histology degradations in batch ``index`` (1 = the track's own)."""
        return 1.0 if self.severity_ramp == 0 else min(1.0, index / self.severity_ramp)

    def describe(self) -> dict[str, Any]:
        """The settings as plain numbers and lists (JSON-able)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def generation_labels(
    volume: Volume, classes: int = 7, iterations: int = 30, smooth: float = 1.0, votes: int = 2
) -> NDArray[np.uint8]:
    """Intensity classes ``(S, S, S)`` of a volume: 0 outside its mask, ``1..classes`` inside.

    A one-dimensional k-means of the masked intensities after a Gaussian blur of ``smooth``
    voxels (standard deviation), started at evenly spaced quantiles and run a fixed number of
    Lloyd steps, then ``votes`` rounds of a 3x3x3 majority vote; deterministic. Without the
    blur and the vote, partial-volume voxels at every boundary become speckles of other
    classes, which random contrasts turn into salt-and-pepper noise. Classes are numbered by
    increasing centre (mean blurred intensity). Array axes are those of ``volume`` (RAS cube
    voxels).
    """
    labels = np.zeros(volume.data.shape, dtype=np.uint8)
    if not volume.mask.any():
        return labels
    values = ndimage.gaussian_filter(volume.data.astype(np.float64), smooth)[volume.mask]
    centres = np.quantile(values, (np.arange(classes) + 0.5) / classes)
    for _ in range(iterations):
        nearest = np.argmin(np.abs(values[:, None] - centres[None]), axis=1)
        sums = np.bincount(nearest, weights=values, minlength=classes)
        counts = np.bincount(nearest, minlength=classes)
        centres = np.where(counts > 0, sums / np.maximum(counts, 1), centres)  # an empty class keeps its centre
    order = np.argsort(centres, kind="stable")
    rank = np.empty(classes, dtype=np.uint8)
    rank[order] = np.arange(1, classes + 1, dtype=np.uint8)
    labels[volume.mask] = rank[np.argmin(np.abs(values[:, None] - centres[None]), axis=1)]
    for _ in range(votes):
        counts = np.stack([ndimage.uniform_filter((labels == k).astype(np.float32), size=3) for k in range(1, classes + 1)])
        labels[volume.mask] = (np.argmax(counts, axis=0) + 1).astype(np.uint8)[volume.mask]  # ties: the darker class
    return labels


def _scaled(settings: SynthSettings, side: int) -> SynthSettings:
    factor = side / _REFERENCE_SIDE
    return replace(settings, translation=settings.translation * factor, max_displacement=settings.max_displacement * factor,
                   blur=(settings.blur[0] * factor, settings.blur[1] * factor))  # fmt: skip


def _warp(labels: NDArray[np.uint8], settings: SynthSettings) -> tuple[Any, Any, Any]:
    """TorchIO's random affine + elastic warp of ``labels``: its parameter draws (torch's RNG) and
    transforms, returned as ``(torchio transform, SimpleITK composite, SimpleITK reference image)``."""
    import SimpleITK as sitk
    import torchio as tio
    from torchio.data.io import nib_to_sitk

    draw = tio.RandomAffineElasticDeformation(
        affine_kwargs={"scales": settings.scales, "degrees": settings.degrees, "translation": settings.translation},
        elastic_kwargs={"num_control_points": settings.control_points, "max_displacement": settings.max_displacement,
                        "locked_borders": 1},
    )  # fmt: skip
    (scales, degrees, translation), control = draw.get_params()
    affine = {"scales": scales.tolist(), "degrees": degrees.tolist(), "translation": translation.tolist(), "center": "image",
              "label_interpolation": "nearest"}  # fmt: skip
    elastic = {"control_points": control, "max_displacement": draw.random_elastic.max_displacement, "label_interpolation": "nearest"}
    transform = tio.AffineElasticDeformation(affine_first=True, affine_params=affine, elastic_params=elastic)
    # an identity affine makes TorchIO's millimetres cube voxels
    image = tio.LabelMap(tensor=torch.from_numpy(labels.astype(np.int64))[None], affine=np.eye(4))
    reference = nib_to_sitk(image.data, image.affine, force_3d=True)
    parts = [tio.Affine(**affine).get_affine_transform(image), tio.ElasticDeformation(**elastic).get_bspline_transform(reference)]
    return transform, sitk.CompositeTransform(parts), reference  # the composite TorchIO resamples with


def _deform(labels: NDArray[np.uint8], settings: SynthSettings, exact: bool = False) -> NDArray[np.uint8]:
    """``labels`` ``(S, S, S)`` under one random TorchIO affine + elastic warp, nearest neighbour.

    ``exact`` resamples through TorchIO (SimpleITK evaluates the B-spline at every voxel: about
    0.46 s at 64^3 on one core). Otherwise the same warp's displacement is evaluated on a grid
    every 4 voxels, interpolated trilinearly (the field is smooth on the scale of the control
    points, about 20 voxels apart) and the labels are looked up at the nearest voxel: 0.05 s,
    and the same label at over 99.6 % of voxels (tests/models/test_synthetic.py checks 98 %).
    """
    import SimpleITK as sitk
    import torchio as tio

    transform, composite, reference = _warp(labels, settings)
    side = labels.shape[0]
    if exact:
        subject = tio.Subject(labels=tio.LabelMap(tensor=torch.from_numpy(labels.astype(np.int64))[None], affine=np.eye(4)))
        return transform(subject)["labels"].data[0].numpy().astype(np.uint8)
    nodes = side // 4 + 1
    spacing = (side - 1) / (nodes - 1)
    field = sitk.TransformToDisplacementField(
        composite, sitk.sitkVectorFloat64, [nodes] * 3, reference.GetOrigin(), [spacing] * 3, reference.GetDirection()
    )
    # SimpleITK arrays are (z, y, x, component) in physical LPS units; the reference's direction maps them to voxels
    direction = np.asarray(reference.GetDirection()).reshape(3, 3)
    coarse = sitk.GetArrayFromImage(field).transpose(2, 1, 0, 3) @ np.linalg.inv(direction).T
    dense = torch.nn.functional.interpolate(
        torch.from_numpy(coarse).permute(3, 0, 1, 2)[None], size=labels.shape, mode="trilinear", align_corners=True
    )[0].numpy()
    source = np.rint(np.indices(labels.shape, dtype=np.float64) + dense).astype(np.int64)
    inside = ((source >= 0) & (source < side)).all(axis=0)
    return np.where(inside, labels[tuple(np.clip(source, 0, side - 1))], 0).astype(np.uint8)


@lru_cache(maxsize=8)
def _appearance(classes: int, settings: SynthSettings) -> Any:
    """TorchIO's appearance chain for ``classes`` labels plus background (built once per setting)."""
    import torchio as tio

    means = [settings.background_mean] + [settings.class_mean] * classes
    # copy=False: each draw builds its own subject, so TorchIO's defensive deep copies are waste
    return tio.Compose([
        tio.RandomLabelsToImage(label_key="labels", image_key="image", mean=means, std=[settings.class_std] * (classes + 1),
                                copy=False),
        tio.RandomBiasField(coefficients=settings.bias, order=settings.bias_order, include=["image"], copy=False),
        tio.RandomBlur(std=settings.blur, include=["image"], copy=False),
        tio.RandomNoise(std=(0.0, settings.noise), include=["image"], copy=False),
    ], copy=False)  # fmt: skip


def _paint(labels: NDArray[np.uint8], classes: int, settings: SynthSettings) -> NDArray[np.float32]:
    """One random contrast of (deformed) labels: TorchIO's Gaussian mixture, bias field, blur and
    noise, rescaled to [0, 1] and quantised like a prepared volume."""
    import torchio as tio

    # uint8 labels: TorchIO's label lookup (torch.unique) is 3x faster than on int64
    subject = tio.Subject(labels=tio.LabelMap(tensor=torch.from_numpy(labels)[None], affine=np.eye(4)))
    image = _appearance(classes, settings)(subject)["image"].data[0].numpy().astype(np.float64)
    low, high = np.percentile(image, (0.5, 99.5))  # robust: a few noisy voxels do not set the range
    return quantise((image - low) / max(high - low, 1e-6))


def synthesize(
    labels: NDArray[np.uint8], seed: int, settings: SynthSettings = SynthSettings(), contrasts: int = 1, exact: bool = False
) -> tuple[list[NDArray[np.float32]], NDArray[np.bool_]]:
    """One synthetic subject from generation labels ``(S, S, S)``: ``contrasts`` images and the mask.

    Every image is float32 ``(S, S, S)`` in [0, 1] (multiples of 1/65535), painted from the same
    deformed labels with independent intensities, bias, blur and noise; the mask is the deformed
    foreground (label > 0). Axes are those of ``labels``. ``seed`` fixes the draw; the caller's
    torch generator state is left as it was.
    """
    classes = int(labels.max()) if labels.size else 0
    settings = _scaled(settings, labels.shape[0])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        deformed = _deform(labels, settings, exact)
        images = [_paint(deformed, max(classes, settings.classes), settings) for _ in range(contrasts)]
    return images, deformed > 0


@dataclass(frozen=True)
class SyntheticSubject:
    """One group of a batch: a synthetic volume, what its slices were cut from, and the poses."""

    source_id: str  # the training volume the subject was generated from
    volume: Volume  # what the model is given
    slice_volume: Volume  # what the slices were cut from (``volume`` itself except on histology)
    poses: Poses  # in ``volume``'s cube voxels
    columns: dict[str, list]  # render_samples' columns for ``poses`` (slice, labels, degradations)


@dataclass(frozen=True)
class SyntheticDraw:
    """Batch ``index``: the tensors :func:`~atom_bench.models.train.train` consumes and their subjects."""

    index: int
    batch: Batch
    subjects: tuple[SyntheticSubject, ...]


class SyntheticSource:
    """Endless batches of synthetic subjects generated from a track's training volumes.

    A batch of ``batch_size`` slices holds ``volumes_per_batch`` subjects (groups of slices), each
    generated from a training volume drawn at random. Generation labels are computed once at
    construction. ``augment`` applies a random cube symmetry to every subject.
    """

    def __init__(
        self, track: str, root: Any = None, *, seed: int, batch_size: int, volumes_per_batch: int = 4,
        augment: bool = True, settings: SynthSettings = SynthSettings(),
    ) -> None:  # fmt: skip
        from atom_bench.data.dataset import stream_sources

        spec, volumes = stream_sources(track, root, "train")  # never validation or unseen volumes
        self.track, self.spec, self.seed, self.augment, self.settings = track, spec, seed, augment, settings
        self.volumes = {k: volumes[k] for k in sorted(volumes)}
        self.labels = {k: generation_labels(v, settings.classes) for k, v in self.volumes.items()}
        groups = max(1, min(volumes_per_batch, batch_size))
        self.sizes = [batch_size // groups + (i < batch_size % groups) for i in range(groups)]

    def subject(self, source_id: str, rng: np.random.Generator, count: int, severity: float = 1.0) -> SyntheticSubject:
        """A new subject from training volume ``source_id`` and ``count`` slices of it, drawn from ``rng``.

        ``severity`` scales the histology degradations (:meth:`SynthSettings.severity`).
        """
        second = self.spec.histology and self.settings.slice_contrast == "independent"
        images, mask = synthesize(self.labels[source_id], int(rng.integers(2**63 - 1)), self.settings, 2 if second else 1)
        base = self.volumes[source_id]
        volume = replace(base, volume_id=f"synthetic-{source_id}", data=images[0], mask=mask)
        cut_from = replace(volume, data=images[-1]) if second else None
        if self.augment:
            permutation, flips = rng.permutation(3), rng.integers(0, 2, size=3)
            volume = cube_symmetry(volume, permutation, flips)
            cut_from = cube_symmetry(cut_from, permutation, flips) if second else None
        cut_from = volume if cut_from is None else cut_from  # one contrast: the slices come from the volume itself
        poses = sample_poses(self.spec, volume, count, rng)
        columns = render_samples(self.spec, cut_from, poses, rng.integers(0, 2**31 - 1, size=count), severity)
        return SyntheticSubject(source_id, volume, cut_from, poses, columns)

    def draw(self, index: int) -> SyntheticDraw:
        """Batch ``index`` with its subjects; depends only on ``(seed, track, index)``."""
        if index < 0:
            raise ValueError(f"batch index must be >= 0; got {index}")
        rng = np.random.default_rng([self.seed, TRACK_NAMES.index(self.track), 2, index])
        ids = list(self.volumes)
        severity = self.settings.severity(index)
        subjects = tuple(
            self.subject(ids[rng.integers(len(ids))], rng, count, severity * float(rng.uniform()) if self.settings.severity_mix else severity)
            for count in self.sizes
        )
        return SyntheticDraw(index, batch_of_groups([(subject.volume, subject.columns) for subject in subjects]), subjects)

    def batch(self, index: int) -> Batch:
        """The ``(volumes, slices, high, low)`` tensors of batch ``index``."""
        return self.draw(index).batch

    def batches(self, start: int = 0) -> Iterator[Batch]:
        """Batches ``start, start + 1, ...`` (a resumed run starts at its saved step)."""
        index = start
        while True:
            yield self.batch(index)
            index += 1


def synthetic_batches(
    track: str, root: Any, batch_size: int, seed: int, augment: bool = True, volumes_per_batch: int = 4,
    start: int = 0, settings: SynthSettings = SynthSettings(),
) -> Iterator[Batch]:  # fmt: skip
    """Endless synthetic batches from batch ``start`` on (the form :mod:`atom_bench.models.train` uses)."""
    source = SyntheticSource(track, root, seed=seed, batch_size=batch_size, volumes_per_batch=volumes_per_batch,
                             augment=augment, settings=settings)  # fmt: skip
    return source.batches(start)
