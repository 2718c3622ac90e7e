"""The pose search (baselines/search.py): NCC results pinned on a real volume, the correlation
ratio's definition, and its invariance to any remap of the contrast on a real atom-mini volume."""

from __future__ import annotations

import importlib.resources

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import atom_bench
from atom_bench.core import geometry, labels
from atom_bench.data.dataset import load_split
from atom_bench.errors import ModelError
from atom_bench.models.diagnostics import volume_swap_diagnostic
from atom_bench.models.registry import get_model, resolve_model
from baselines._search_tools import (
    coarse_reduction,
    BACKGROUND,
    bin_index,
    correlation_ratio_rows,
    intensity_bin_edges,
    ncc_rows_torch,
    noise_floor_level,
)
from baselines.search import PoseSearch

# ------------------------------------------------------------------------------------------
# NCC search on a real volume (nibabel's anatomical.nii: these pin the NCC search's results)


@pytest.fixture(scope="module")
def anatomical_cube() -> np.ndarray:
    """nibabel's own test image, min-max scaled, centred into a 32^3 cube (cropped/zero padded)."""
    import nibabel

    path = importlib.resources.files("nibabel") / "tests" / "data" / "anatomical.nii"
    data = np.asarray(nibabel.load(str(path)).get_fdata(), dtype=np.float64)
    data = (data - data.min()) / (data.max() - data.min())
    src = tuple(slice(max(0, (n - 32) // 2), max(0, (n - 32) // 2) + min(n, 32)) for n in data.shape)
    crop = data[src]
    cube = np.zeros((32, 32, 32))
    cube[tuple(slice((32 - n) // 2, (32 - n) // 2 + n) for n in crop.shape)] = crop
    return cube.astype(np.float32)


def test_torch_sampler_matches_the_reference_sampler(anatomical_cube: np.ndarray) -> None:
    from baselines.search import sample_points_torch

    points = np.random.default_rng(0).uniform(-2.0, 34.0, (2000, 3))
    ours = sample_points_torch(torch.from_numpy(anatomical_cube), torch.from_numpy(points)).numpy()
    np.testing.assert_allclose(ours, geometry.sample_points(anatomical_cube, points, "linear"), atol=1e-5)


def _axis_slices(cube: np.ndarray, views: list[str], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images, centers, normals = [], [], []
    for view in views:
        u, v = geometry.view_frame(view)
        n = np.cross(u, v)
        # in-plane: half-integer centres (16 is even), out of plane: an integer voxel
        c = np.where(np.abs(n) > 0.5, rng.integers(11, 21, 3), rng.integers(11, 21, 3) + 0.5).astype(np.float64)
        images.append(geometry.sample_slices(cube, c, u, v, (16, 16))[0])
        centers.append(c)
        normals.append(n)
    return np.stack(images), np.stack(centers), np.stack(normals)


def test_search_finds_exact_pose_of_axis_aligned_slices(anatomical_cube: np.ndarray) -> None:
    model, _ = resolve_model("search")
    images, centers, normals = _axis_slices(anatomical_cube, ["axial", "coronal", "sagittal"], seed=3)
    volumes = torch.from_numpy(np.stack([anatomical_cube] * 3))[:, None]
    pred = model.predict(volumes, torch.from_numpy(images)[:, None])
    assert pred.center_vox is not None and pred.normal is not None
    np.testing.assert_array_less(np.abs(pred.center_vox.numpy() - centers).max(axis=1), 0.5)
    assert (geometry.angle_between_planes_deg(pred.normal.double().numpy(), normals) < 1.0).all()
    assert pred.low_label.tolist() == labels.low_label(centers, 32).tolist()
    assert pred.high_label.tolist() == labels.high_label(centers, 32).tolist()


def test_search_accuracy_drops_when_volumes_are_swapped(anatomical_cube: np.ndarray) -> None:
    """The diagnostic: a model that uses the volume loses accuracy on the wrong volume."""
    other = np.ascontiguousarray(np.transpose(anatomical_cube, (2, 0, 1))[::-1])
    model, _ = resolve_model("search", n_normals=0)  # axis-aligned orientations suffice here
    img_a, c_a, _ = _axis_slices(anatomical_cube, ["axial", "sagittal"], seed=5)
    img_b, c_b, _ = _axis_slices(other, ["coronal", "axial"], seed=6)
    volumes = torch.from_numpy(np.stack([anatomical_cube, other, anatomical_cube, other]))[:, None]
    slices = torch.from_numpy(np.stack([img_a[0], img_b[0], img_a[1], img_b[1]]))[:, None]
    centers = np.stack([c_a[0], c_b[0], c_a[1], c_b[1]])
    low = torch.as_tensor(labels.low_label(centers, 32))
    out = volume_swap_diagnostic(model, volumes, slices, low // 27, low)
    assert out["low_acc"] == 1.0 and out["high_acc"] == 1.0
    assert out["low_drop"] >= 0.5


def test_search_recovers_an_oblique_pose(anatomical_cube: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    normal = geometry.random_unit_vectors(rng, 1)[0]
    u, v = geometry.frame_from_normal(normal, rng.uniform(0, 2 * np.pi))
    center = rng.uniform(12, 20, 3)
    image = geometry.sample_slices(anatomical_cube, center, u, v, (16, 16))[0]
    model, _ = resolve_model("search")
    pred = model.predict(torch.from_numpy(anatomical_cube)[None, None], torch.from_numpy(image)[None, None])
    assert np.abs(pred.center_vox[0].numpy() - center).max() < 0.5
    assert geometry.angle_between_planes_deg(pred.normal[0].double().numpy(), normal) < 1.0


def _oblique_slice(cube: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    u, v = geometry.frame_from_normal(geometry.random_unit_vectors(rng, 1)[0], rng.uniform(0, 2 * np.pi))
    return geometry.sample_slices(cube, rng.uniform(12, 20, 3), u, v, (16, 16))[0]


def test_search_batched_predict_matches_per_pair_search(anatomical_cube: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two volumes interleaved in one batch: grouped by volume, the same answers as one pair at a time."""
    from baselines import search
    from baselines.search import PoseSearch

    monkeypatch.setattr(search, "SLICE_BATCH", 2)  # the 3 slices of the first volume: 2 + 1

    other = np.ascontiguousarray(np.transpose(anatomical_cube, (2, 0, 1))[::-1])
    img_a, _, _ = _axis_slices(anatomical_cube, ["axial", "sagittal"], seed=7)
    img_b, _, _ = _axis_slices(other, ["coronal"], seed=8)
    images = [img_a[0], img_b[0], _oblique_slice(anatomical_cube, 9), img_a[1], _oblique_slice(other, 10)]
    cubes = [anatomical_cube, other, anatomical_cube, anatomical_cube, other]
    volumes = torch.from_numpy(np.stack(cubes))[:, None]
    slices = torch.from_numpy(np.stack(images))[:, None]
    model = PoseSearch(n_normals=6, n_rotations=4, top_k=3)
    pred = model.predict(volumes, slices)
    assert len(model._cache) == 2  # one entry per distinct volume
    assert {chunk.dense for entry in model._cache.values() for family in entry.families for chunk in family.chunks} == {True, False}

    single = PoseSearch(n_normals=6, n_rotations=4, top_k=3)
    results = [single.search(volumes[i, 0], slices[i, 0]) for i in range(len(images))]
    block = torch.stack([r.block_ncc for r in results])
    torch.testing.assert_close(pred.low_scores, torch.softmax(block / model.temperature, dim=1), rtol=1e-3, atol=1e-6)
    assert pred.low_label.tolist() == block.argmax(dim=1).tolist()
    assert pred.center_vox is not None and pred.normal is not None
    np.testing.assert_allclose(pred.center_vox.numpy(), np.stack([r.center for r in results]), atol=1e-4)
    np.testing.assert_allclose(pred.normal.numpy(), np.stack([r.normal for r in results]), atol=1e-4)


def test_search_blank_volume_gives_uniform_scores(anatomical_cube: np.ndarray) -> None:
    """Against an all-zero volume every NCC is 0: uniform scores, centre pose, no search, no cache."""
    from baselines.search import PoseSearch

    model = PoseSearch(n_normals=0)
    images, _, _ = _axis_slices(anatomical_cube, ["axial", "coronal"], seed=11)
    volumes = torch.from_numpy(np.stack([np.zeros_like(anatomical_cube), anatomical_cube]))[:, None]
    pred = model.predict(volumes, torch.from_numpy(images)[:, None])
    torch.testing.assert_close(pred.low_scores[0], torch.full((729,), 1 / 729))
    torch.testing.assert_close(pred.high_scores[0], torch.full((27,), 1 / 27))
    assert pred.center_vox is not None and pred.normal is not None
    assert pred.center_vox[0].tolist() == [15.5, 15.5, 15.5]
    assert pred.normal[0].tolist() == [0.0, 0.0, 1.0]
    assert pred.low_scores[1].max() > 0.1  # the real volume beside it is searched as usual
    assert len(model._cache) == 1


def test_search_cache_is_bounded_and_reused(anatomical_cube: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cached volumes are not resampled again; the least recently used go beyond the entry or byte bound."""
    from baselines.search import PoseSearch

    cubes = [anatomical_cube, anatomical_cube[::-1], anatomical_cube[:, ::-1]]
    volumes = torch.from_numpy(np.ascontiguousarray(np.stack(cubes)))[:, None]
    image = _axis_slices(anatomical_cube, ["axial"], seed=12)[0][0]
    slices = torch.from_numpy(np.stack([image] * 3))[:, None]
    model = PoseSearch(n_normals=0, top_k=1, max_iterations=2, cache_volumes=2)
    builds = []
    plain = model._family_windows
    monkeypatch.setattr(model, "_family_windows", lambda *args: builds.append(1) or plain(*args))
    model.predict(volumes, slices)
    assert len(builds) == 3 and len(model._cache) == 2  # the oldest volume was evicted
    model.predict(volumes[1:], slices[1:])  # the two most recent volumes: no resampling
    assert len(builds) == 3
    model.predict(volumes[:1], slices[:1])  # the evicted one is resampled
    assert len(builds) == 4 and len(model._cache) == 2
    entry = next(iter(model._cache.values()))
    model.cache_bytes = entry.nbytes - 1  # the byte budget also binds: a new entry does not fit
    model.predict(volumes[1:2], slices[1:2])
    assert len(builds) == 5 and len(model._cache) == 0


def test_the_default_coarse_stage_of_the_64_cube_tracks_and_the_paper_track() -> None:
    from baselines.search import COARSE_SIDE, MIN_COARSE_PIXELS

    assert coarse_reduction(64, (16, 16), COARSE_SIDE, MIN_COARSE_PIXELS) == (40, (10, 10))  # easy, hard, histology
    assert coarse_reduction(20, (4, 4), COARSE_SIDE, MIN_COARSE_PIXELS) == (20, (4, 4))  # paper: not reduced
    assert coarse_reduction(64, (16, 16), 20, 6) == (24, (6, 6))  # the first defaults: the slice's floor binds


def test_each_similarity_has_its_own_orientation_grid_and_an_explicit_grid_wins() -> None:
    from baselines.search import ORIENTATION_GRIDS, PoseSearch

    # 24 axis-view frames, then normals x rotations x 2 normal signs
    for similarity, (normals, rotations) in ORIENTATION_GRIDS.items():
        model = PoseSearch(similarity=similarity)
        assert (model.n_normals, model.n_rotations) == (normals, rotations)
        assert len(model.frames) == 24 + 2 * normals * rotations
    assert len(PoseSearch(similarity="ncc", n_normals=4, n_rotations=3).frames) == 24 + 24
    assert len(PoseSearch(similarity="ncc", n_normals=0).frames) == 24
    _, meta = resolve_model("search")
    assert "32 normals x 12 in-plane rotations" in meta.notes


@settings(max_examples=200, deadline=None)
@given(st.integers(9, 160), st.integers(2, 48), st.integers(2, 48), st.integers(9, 96), st.integers(2, 24))
def test_coarse_reduction_never_enlarges_and_keeps_the_bounds(size: int, h: int, w: int, coarse_side: int, min_pixels: int) -> None:
    side, (hc, wc) = coarse_reduction(size, (h, w), coarse_side, min_pixels)
    assert 9 <= side <= size or side == size  # never enlarged; at least one voxel per fine block
    assert 2 <= hc <= h or hc == h
    assert 2 <= wc <= w or wc == w
    if side < size:
        factor = size / side
        # the cube reaches the target side unless the slice's floor stops it first
        assert side <= coarse_side + 1 or min(h, w) / factor <= min_pixels + 1
        # one factor for cube and slice (up to rounding to whole voxels and pixels)
        assert abs(hc - h / factor) <= 1 + h / size and abs(wc - w / factor) <= 1 + w / size
    else:
        assert (hc, wc) == (h, w)


# ------------------------------------------------------------------------------------------
# The correlation ratio and its bins


def test_correlation_ratio_matches_its_definition_and_ignores_affine_remaps() -> None:
    rng = np.random.default_rng(20)
    bins = torch.from_numpy(rng.integers(0, 5, (3, 64)).astype(np.uint8))
    y = torch.from_numpy(rng.normal(size=(3, 64)))
    y = y - y.mean(dim=1, keepdim=True)
    ours = correlation_ratio_rows(bins, y, (y * y).sum(dim=1), 5).numpy()
    for row in range(3):  # 1 - E[Var(y | bin)] / Var(y), the population variances
        b, x = bins[row].numpy(), y[row].numpy()
        within = sum(((x[b == k] - x[b == k].mean()) ** 2).sum() for k in np.unique(b))
        assert ours[row] == pytest.approx(1 - within / (x * x).sum(), abs=1e-12)
    remapped = -3.0 * y + 7.0
    remapped = remapped - remapped.mean(dim=1, keepdim=True)
    np.testing.assert_allclose(correlation_ratio_rows(bins, remapped, (remapped * remapped).sum(dim=1), 5).numpy(), ours, atol=1e-12)


def test_correlation_ratio_is_one_for_any_function_of_the_bin_and_zero_when_flat_or_in_one_bin() -> None:
    rng = np.random.default_rng(21)
    bins = torch.from_numpy(rng.integers(0, 8, (2, 100)).astype(np.uint8))
    table = torch.tensor([0.3, 0.9, 0.1, 0.5, 0.5, 0.0, 0.8, 0.2], dtype=torch.float64)  # not monotone
    y = table[bins.long()]
    y = y - y.mean(dim=1, keepdim=True)
    np.testing.assert_allclose(correlation_ratio_rows(bins, y, (y * y).sum(dim=1), 8).numpy(), 1.0, atol=1e-12)
    flat = torch.zeros(2, 100, dtype=torch.float64)
    assert correlation_ratio_rows(bins, flat, (flat * flat).sum(dim=1), 8).tolist() == [0.0, 0.0]
    one_bin = torch.full((2, 100), 3, dtype=torch.uint8)
    assert correlation_ratio_rows(one_bin, y, (y * y).sum(dim=1), 8).numpy() == pytest.approx([0.0, 0.0], abs=1e-12)


def test_bins_split_the_background_off_and_the_tissue_at_equal_counts(mini_cube: torch.Tensor) -> None:
    edges = intensity_bin_edges(mini_cube, 8)
    bins = bin_index(mini_cube, edges)
    assert edges.shape == (7,) and float(edges[0]) == pytest.approx(BACKGROUND) and bool((edges[1:] > edges[:-1]).all())
    assert bool(((bins == 0) == (mini_cube <= BACKGROUND)).all())
    counts = torch.bincount(bins.reshape(-1).long(), minlength=8)[1:].double()
    assert len(counts) == 7 and float((counts - counts.mean()).abs().max() / counts.mean()) < 0.05
    assert intensity_bin_edges(mini_cube, 2).numel() == 1 and int(bin_index(mini_cube, intensity_bin_edges(mini_cube, 2)).max()) == 1


def test_otsu_and_floor_backgrounds_keep_the_tissue_bins_out_of_a_noisy_air() -> None:
    # a bright ball in air that is not exactly zero (a scan's noise floor): with the "zero" level
    # most of the tissue bins hold air; the Otsu level and the noise floor put all of them in the ball
    g = torch.Generator().manual_seed(5)
    axis = torch.arange(32, dtype=torch.float32) - 15.5
    r = (axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2).sqrt()
    air = 0.002 + 0.02 * torch.rand(32, 32, 32, generator=g)
    cube = torch.where(r < 8, 0.4 + 0.6 * torch.rand(32, 32, 32, generator=g), air)
    zero, otsu = intensity_bin_edges(cube, 8, "zero"), intensity_bin_edges(cube, 8, "otsu")
    assert int((zero[1:] < 0.03).sum()) >= 4 and 0.022 <= float(otsu[0]) <= 0.4 and bool((otsu[1:] > 0.4).all())
    assert bool(((bin_index(cube, otsu) == 0) == (r >= 8)).all())
    floor = intensity_bin_edges(cube, 8, "floor")
    assert 0.02 <= float(floor[0]) < 0.4 and bool((floor[1:] > 0.4).all())
    floor_bins = bin_index(cube, floor)
    assert bool((floor_bins[r < 8] > 0).all()) and float((floor_bins[r >= 8] == 0).double().mean()) >= 0.98  # its 99th percentile
    with pytest.raises(ModelError, match="background must be one of zero, otsu, floor"):
        PoseSearch(similarity="cr", background="mean")


def test_the_noise_floor_finds_the_noisy_air_of_real_volumes_and_leaves_a_zero_air_alone() -> None:
    from atom_bench.data.dataset import load_volumes

    for volume_id, volume in load_volumes("hard").items():
        cube = torch.from_numpy(volume.data)
        level = noise_floor_level(cube)
        if float((cube[cube > BACKGROUND] < 0.05).double().mean()) < 0.25:  # air exactly 0: the "zero" bins
            assert torch.equal(intensity_bin_edges(cube, 8, "floor"), intensity_bin_edges(cube, 8, "zero")), volume_id
        else:  # atom-mini's DWI, ROBEX T1 and CT head: above the air's noise, below the tissue
            tissue = cube[torch.from_numpy(volume.mask)]
            assert 0.03 < level < float(torch.quantile(tissue.double(), 0.02)), volume_id
            zero, floor = intensity_bin_edges(cube, 8, "zero"), intensity_bin_edges(cube, 8, "floor")
            assert int((zero[1:] < 0.05).sum()) >= 2 and bool((floor[1:] > 0.05).all()), volume_id  # tissue bins out of the air


def test_similarity_and_bins_are_checked_and_the_cr_entry_is_registered() -> None:
    with pytest.raises(ModelError, match="similarity"):
        PoseSearch(similarity="mi")
    with pytest.raises(ModelError, match="n_bins"):
        PoseSearch(similarity="cr", n_bins=1)
    assert get_model("search-cr").capabilities.uses_volume
    model, meta = resolve_model("search-cr", n_bins=6)
    assert model.similarity == "cr" and model.n_bins == 6 and "6 bins" in meta.notes and meta.name == "search-cr"
    assert resolve_model("search")[0].similarity == "ncc"


# ------------------------------------------------------------------------------------------
# Invariance to any remap of the contrast, on a real atom-mini volume


@pytest.fixture(scope="module")
def mini_cube() -> torch.Tensor:
    """The first test_unseen volume of the embedded atom-mini, averaged down to a 32^3 cube (a
    real volume, small enough for the axis-view search to run in about a second per slice)."""
    volume_id = load_split("easy", "test_unseen")[0]["volume_id"]
    data = torch.as_tensor(np.asarray(atom_bench.load_volume(volume_id, "easy").data), dtype=torch.float32)
    return F.adaptive_avg_pool3d(data[None, None], 32)[0, 0].contiguous()


@pytest.fixture(scope="module")
def cr_search() -> PoseSearch:
    return PoseSearch(similarity="cr", n_normals=0, top_k=2)  # axis views only: the poses are axis-aligned


def _binned_slice(cube: torch.Tensor, view: str, centre: tuple[int, int, int], table: np.ndarray) -> tuple[np.ndarray, np.ndarray, torch.Tensor, torch.Tensor]:
    """An axis-aligned cut at an integer pose (in-plane half-integer centre: every pixel on a voxel)
    and the slice ``table[bin]``: centre (voxels), normal, the cut's bins and the slice."""
    u, v = geometry.view_frame(view)
    n = np.cross(u, v)
    c = np.where(np.abs(n) > 0.5, centre, np.asarray(centre) + 0.5).astype(np.float64)
    cut = torch.from_numpy(geometry.sample_slices(cube.numpy(), c, u, v, (16, 16))[0].astype(np.float32))
    bins = bin_index(cut, intensity_bin_edges(cube, 8))
    return c, n, bins, torch.from_numpy(table.astype(np.float32))[bins.long()]


def _non_monotone(table: np.ndarray, present: np.ndarray) -> bool:
    steps = np.diff(table[np.sort(present)])
    return bool((steps > 0).any() and (steps < 0).any())


@settings(max_examples=8, deadline=None, derandomize=True)
@given(
    view=st.sampled_from(geometry.VIEWS),
    centre=st.tuples(*[st.integers(8, 22)] * 3),
    table=st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=8, max_size=8, unique=True),
)
def test_any_table_of_the_bins_has_cr_one_at_the_true_pose_and_the_cr_search_finds_it(
    mini_cube: torch.Tensor, cr_search: PoseSearch, view: str, centre: tuple[int, int, int], table: list[float]
) -> None:
    lut = np.asarray(table)
    c, n, bins, image = _binned_slice(mini_cube, view, centre, lut)
    present = torch.unique(bins).numpy()
    assume(len(present) >= 4 and _non_monotone(lut, present))  # tissue under the slice, a non-monotone remap
    y = image.double().reshape(1, -1)
    y = y - y.mean()
    cut = torch.from_numpy(geometry.sample_slices(mini_cube.numpy(), c, *geometry.view_frame(view), (16, 16))[0]).double().reshape(1, -1)
    assert float(correlation_ratio_rows(bins.reshape(1, -1), y, (y * y).sum(dim=1), 8)) == pytest.approx(1.0, abs=1e-9)
    assert float(ncc_rows_torch(cut, y, y.norm(dim=1))) < 1 - 1e-3  # the remap is beyond NCC's affine invariance
    result = cr_search.search(mini_cube, image)
    assert result.ncc == pytest.approx(1.0, abs=1e-6)
    assert np.abs(result.center - c).max() < 1.0
    assert labels.high_label(result.center[None], 32)[0] == labels.high_label(c[None], 32)[0]
    assert geometry.angle_between_planes_deg(result.normal[None], n[None])[0] < 1.0


def test_the_cr_search_finds_remapped_slices_that_the_ncc_search_misses(mini_cube: torch.Tensor, cr_search: PoseSearch) -> None:
    rng = np.random.default_rng(23)  # seeded poses and tables, recorded here
    images, centres = [], []
    while len(images) < 6:
        view, centre, lut = rng.choice(geometry.VIEWS), tuple(rng.integers(8, 23, 3)), rng.permutation(8) / 7.0
        c, _, bins, image = _binned_slice(mini_cube, str(view), centre, lut)
        if len(torch.unique(bins)) >= 4 and _non_monotone(lut, torch.unique(bins).numpy()):
            images.append(image)
            centres.append(c)
    truth = labels.high_label(np.stack(centres), 32)
    volumes = mini_cube[None, None].expand(len(images), 1, 32, 32, 32)
    slices = torch.stack(images)[:, None]
    cr_high = cr_search.predict(volumes, slices).high_label.numpy()
    ncc_high = PoseSearch(similarity="ncc", n_normals=0, top_k=2).predict(volumes, slices).high_label.numpy()
    assert (cr_high == truth).all()
    assert (ncc_high != truth).sum() >= 2
