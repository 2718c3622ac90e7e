"""Seeded degradations that move a clean slice towards a histology section (``histology`` track).

A degradation is drawn once per sample as a :class:`HistologyDraw` (every number is stored in the
sample row as a ``deg_*`` column) and applied by :func:`apply_histology`. Random spatial fields
(noise, warp, holes, tear line) are generated from the draw's ``seed``, so a stored row is enough
to reproduce its slice exactly. Each step is a small function over a 2D array in slice pixels.

Order of application: slab average (thickness) -> intensity remap -> bias field -> shrinkage and
elastic warp -> tear -> holes -> partial-section crop -> noise -> clip to [0, 1].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from decimal import Decimal

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage


@dataclass(frozen=True)
class HistologyDraw:
    """One sample's degradation parameters (units in brackets)."""

    thickness: float  # slab thickness [cube voxels]; the slice averages sub-slices across it
    gamma: float  # power applied to intensities before the wave [-]
    wave_amp: float  # amplitude of the non-monotonic intensity wave [intensity]
    wave_freq: float  # cycles of the wave over [0, 1] [-]
    wave_phase: float  # [radians]
    bias: float  # peak log-amplitude of the multiplicative bias field [-]
    warp: float  # standard deviation of the elastic displacement [pixels]
    shrink: float  # isotropic in-plane scale of the section (< 1 shrinks) [-]
    tear: float  # 1 when the section is torn along a line, else 0
    holes: float  # number of elliptical holes [count]
    crop: float  # fraction of the slice area kept as a partial section [-]
    noise: float  # Gaussian noise standard deviation [intensity]
    seed: int  # seed of the spatial random fields

    def columns(self) -> dict[str, float]:
        """The ``deg_*`` columns of a sample row (the seed is stored in the row's ``seed``)."""
        return {f"deg_{k}": float(v) for k, v in asdict(self).items() if k != "seed"}


DEGRADATION_COLUMNS: tuple[str, ...] = tuple(
    f"deg_{name}" for name in HistologyDraw.__dataclass_fields__ if name != "seed"
)
NO_DEGRADATION: dict[str, float] = dict.fromkeys(DEGRADATION_COLUMNS, 0.0)


def correctly_rounded_exp(x: float) -> float:
    """``exp(x)`` rounded once to the nearest double, the same on every CPU.

    ``np.exp`` picks vectorised code by CPU features (AVX-512 or not) and may differ in the last
    bit; the drawn parameters are stored in the data, so that bit would change the bytes of a
    rebuild (atom-mini 1.0 was built on an AVX-512 machine and could not be rebuilt byte for byte
    elsewhere). The decimal module computes in software (28 digits) before one rounding.
    """
    return float(Decimal(x).exp())


def draw_histology(rng: np.random.Generator, seed: int) -> HistologyDraw:
    """Draw one sample's degradation parameters."""
    return HistologyDraw(
        thickness=float(rng.uniform(0.0, 3.0)),
        gamma=correctly_rounded_exp(float(rng.uniform(-0.5, 0.5))),
        wave_amp=float(rng.uniform(0.1, 0.4)),
        wave_freq=float(rng.uniform(0.5, 2.0)),
        wave_phase=float(rng.uniform(0.0, 2 * np.pi)),
        bias=float(rng.uniform(0.0, 0.4)),
        warp=float(rng.uniform(0.0, 1.5)),
        shrink=float(rng.uniform(0.85, 1.0)),
        tear=float(rng.random() < 0.3),
        holes=float(rng.integers(0, 4)),
        crop=float(rng.uniform(0.5, 1.0)) if rng.random() < 0.5 else 1.0,
        noise=float(rng.uniform(0.0, 0.08)),
        seed=int(seed),
    )


def soften_histology(draw: HistologyDraw, severity: float) -> HistologyDraw:
    """``draw`` moved towards no degradation: ``severity`` 1 keeps it, 0 turns every step off.

    Continuous parameters are interpolated linearly between their no-degradation value and the
    drawn one (the gamma in log space, so 0 gives the identity power); the hole count is
    rounded; the tear, a yes/no step, is kept from ``severity`` 0.5 on. The wave's frequency and
    phase and the seed of the spatial fields stay, so one sample softens continuously. Used by
    a training curriculum (``SynthSettings.severity_ramp``); the dataset's draws are never
    softened.
    """
    if not 0.0 <= severity <= 1.0:
        raise ValueError(f"severity must lie in [0, 1]; got {severity}")
    if severity == 1.0:
        return draw
    s = float(severity)
    return replace(
        draw,
        thickness=draw.thickness * s,
        gamma=float(draw.gamma**s),
        wave_amp=draw.wave_amp * s,
        bias=draw.bias * s,
        warp=draw.warp * s,
        shrink=1.0 - (1.0 - draw.shrink) * s,
        tear=draw.tear if s >= 0.5 else 0.0,
        holes=float(round(draw.holes * s)),
        crop=1.0 - (1.0 - draw.crop) * s,
        noise=draw.noise * s,
    )


def slab_offsets(thickness: float) -> NDArray[np.float64]:
    """Offsets along the normal (voxels) of the sub-slices averaged for a slab of ``thickness``."""
    count = max(1, int(np.ceil(thickness)) + 1) if thickness > 0 else 1
    return np.linspace(-thickness / 2, thickness / 2, count) if count > 1 else np.zeros(1)


def remap_intensity(image: NDArray, gamma: float, amp: float, freq: float, phase: float) -> NDArray:
    """Non-monotonic contrast change: ``x**gamma + amp * sin(2 pi freq x + phase)``, rescaled to [0, 1]."""
    x = np.clip(image, 0.0, 1.0) ** gamma
    y = x + amp * np.sin(2 * np.pi * freq * x + phase)
    low, high = -amp, 1.0 + amp
    return (y - low) / (high - low)


def _unit_grid(shape: tuple[int, int]) -> tuple[NDArray, NDArray]:
    rows, cols = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    return rows, cols


def bias_field(shape: tuple[int, int], strength: float, rng: np.random.Generator) -> NDArray:
    """Smooth multiplicative field ``exp(second-order polynomial)`` with peak log-amplitude ``strength``."""
    rows, cols = _unit_grid(shape)
    terms = np.stack([rows, cols, rows * cols, rows**2, cols**2])
    log_field = np.tensordot(rng.uniform(-1, 1, len(terms)), terms, axes=1)
    peak = np.abs(log_field).max()
    return np.exp(strength * log_field / peak) if peak > 0 else np.ones(shape)


def warp_displacement(shape: tuple[int, int], warp: float, rng: np.random.Generator) -> list[NDArray]:
    """The elastic warp's displacement along rows and columns (pixels), each ``(h, w)``: white
    noise smoothed by a Gaussian of ``max(h, w) / 4`` pixels (wrapped) and scaled to standard
    deviation ``warp``. At that smoothing little is left but the mean (a translation) and the
    longest wave, so the local strain shrinks as the side grows."""
    smooth = max(shape) / 4
    fields = []
    for _ in range(2):
        field = ndimage.gaussian_filter(rng.standard_normal(shape), smooth, mode="wrap")
        std = field.std()
        fields.append(field / std * warp if std > 0 else field)
    return fields


def warp_and_shrink(image: NDArray, warp: float, shrink: float, rng: np.random.Generator) -> NDArray:
    """Resample ``image`` under a smooth random displacement (std ``warp`` px) and a scale ``shrink``."""
    h, w = image.shape
    rows, cols = np.meshgrid(np.arange(h, dtype=float), np.arange(w, dtype=float), indexing="ij")
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    fields = warp_displacement((h, w), warp, rng)
    src_rows = centre[0] + (rows - centre[0]) / shrink + fields[0]
    src_cols = centre[1] + (cols - centre[1]) / shrink + fields[1]
    return ndimage.map_coordinates(image, [src_rows, src_cols], order=1, mode="constant", cval=0.0)


def tear(image: NDArray, rng: np.random.Generator) -> NDArray:
    """Cut the section along a random line and pull one side away, leaving an empty gap."""
    h, w = image.shape
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    angle = rng.uniform(0, np.pi)
    normal = np.array([np.cos(angle), np.sin(angle)])
    offset = rng.uniform(-0.25, 0.25) * min(h, w)
    side = (rows - (h - 1) / 2) * normal[0] + (cols - (w - 1) / 2) * normal[1] - offset
    gap = max(1.0, 0.08 * min(h, w))
    shift = np.rint(normal * gap).astype(int)
    moved = np.roll(image, tuple(shift), axis=(0, 1))
    out = np.where(side > gap, moved, image)
    out[(side > 0) & (side <= gap)] = 0.0
    return out


def punch_holes(image: NDArray, count: int, rng: np.random.Generator) -> NDArray:
    """Zero ``count`` random ellipses (missing tissue)."""
    h, w = image.shape
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    out = image.copy()
    for _ in range(count):
        cr, cc = rng.uniform(0, h), rng.uniform(0, w)
        rr, rc = rng.uniform(0.05, 0.15) * h, rng.uniform(0.05, 0.15) * w
        out[((rows - cr) / rr) ** 2 + ((cols - cc) / rc) ** 2 <= 1.0] = 0.0
    return out


def crop_partial(image: NDArray, keep: float, rng: np.random.Generator) -> NDArray:
    """Keep a random axis-aligned rectangle covering a ``keep`` fraction of the area; zero the rest."""
    if keep >= 1.0:
        return image
    h, w = image.shape
    aspect = rng.uniform(0.7, 1.4)
    ch = int(np.clip(round(h * np.sqrt(keep * aspect)), 1, h))
    cw = int(np.clip(round(h * w * keep / ch), 1, w))
    r0, c0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    out = np.zeros_like(image)
    out[r0 : r0 + ch, c0 : c0 + cw] = image[r0 : r0 + ch, c0 : c0 + cw]
    return out


def apply_histology(slab: NDArray, draw: HistologyDraw) -> NDArray[np.float32]:
    """Degrade a slab of sub-slices ``(t, h, w)`` (from :func:`slab_offsets`) into one slice."""
    rng = np.random.default_rng(draw.seed)
    image = np.asarray(slab, dtype=np.float64).mean(axis=0)
    tissue = image > 0
    image = np.where(tissue, remap_intensity(image, draw.gamma, draw.wave_amp, draw.wave_freq, draw.wave_phase), 0.0)
    image = image * bias_field(image.shape, draw.bias, rng)
    image = warp_and_shrink(image, draw.warp, draw.shrink, rng)
    if draw.tear:
        image = tear(image, rng)
    image = punch_holes(image, int(draw.holes), rng)
    image = crop_partial(image, draw.crop, rng)
    image = image + draw.noise * rng.standard_normal(image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32)
