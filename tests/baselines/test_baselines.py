"""Baselines: shapes, the released model's volume independence, training steps, the NCC search."""

from __future__ import annotations

import importlib.resources

import numpy as np
import pytest
import torch

from atom_bench.core import geometry, labels
from atom_bench.models.diagnostics import volume_swap_diagnostic
from atom_bench.models.losses import asymmetric_loss, block_loss, cross_entropy
from atom_bench.models.registry import resolve_model
from baselines._blocks import grid_to_label_order
from baselines.released import parameter_counts

LEARNED = ("regismcan", "cnn", "vit")




def _batch(b: int, size: int, hw: tuple[int, int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 1, size, size, size, generator=g), torch.rand(b, 1, *hw, generator=g)


def test_grid_to_label_order_matches_protocol_labels() -> None:
    cells = torch.arange(9)
    f0, f1, f2 = torch.meshgrid(cells, cells, cells, indexing="ij")
    grid = torch.stack([f0, f1, f2])[None].float()  # (1, 3, 9, 9, 9): each cell holds its (f0, f1, f2)
    ordered = grid_to_label_order(grid).reshape(729, 3).long().numpy()
    np.testing.assert_array_equal(ordered, labels.fine_cells(np.arange(729)))


def test_volume_encoder_encodes_each_run_of_equal_volumes_once() -> None:
    from baselines._blocks import VolumeEncoder, consecutive_runs

    a, b = torch.rand(2, 1, 1, 20, 20, 20, generator=torch.Generator().manual_seed(3))
    volumes = torch.cat([a, a, b, b, b, a])  # the last `a` is not adjacent to the first run
    first, inverse = consecutive_runs(volumes)
    assert first.tolist() == [0, 2, 5] and inverse.tolist() == [0, 0, 1, 1, 1, 2]
    assert torch.equal(volumes[first][inverse], volumes)
    encoder = VolumeEncoder(8).eval()
    with torch.no_grad():
        together = encoder(volumes)
        one_by_one = torch.cat([encoder(v[None]) for v in volumes])
    torch.testing.assert_close(together, one_by_one, rtol=1e-5, atol=1e-6)


def test_released_parameter_counts_match_the_spec() -> None:
    counts = parameter_counts(20, (4, 4))
    assert (counts["slice_net"], counts["high_net"], counts["low_net"]) == (784, 11_112_027, 537_435)
    model, meta = resolve_model("released")
    assert meta.n_parameters == 11_650_246 == sum(p.numel() for p in model.parameters())
    assert parameter_counts(40, (4, 4))["high_net"] > 700_000_000  # grows as S^6 (spec: about 705 M)


@pytest.mark.parametrize("name", LEARNED)
def test_learned_models_shapes_for_several_sizes(name: str) -> None:
    model, meta = resolve_model(name)
    for size in (20, 32, 64):
        for hw in ((4, 4), (16, 16)):
            pred = model.predict(*_batch(2, size, hw))
            assert pred.high_scores.shape == (2, 27) and pred.low_scores.shape == (2, 729)
            assert torch.isfinite(pred.low_scores).all()
    assert meta.n_parameters == sum(p.numel() for p in model.parameters())  # independent of S


def test_released_shapes_and_floors() -> None:
    for hw in ((4, 4), (16, 16)):
        model, _ = resolve_model("released", volume_size=20, slice_shape=hw)
        pred = model.predict(*_batch(2, 20, hw))
        assert pred.high_scores.shape == (2, 27) and pred.low_scores.shape == (2, 729)
    for name in ("chance", "prior"):
        model, _ = resolve_model(name)
        for size, hw in ((20, (4, 4)), (64, (16, 16))):
            pred = model.predict(*_batch(3, size, hw))
            assert pred.high_scores.shape == (3, 27) and pred.low_scores.shape == (3, 729)


def test_floors_behave() -> None:
    a, _ = resolve_model("chance", seed=7)
    b, _ = resolve_model("chance", seed=7)
    volumes, slices = _batch(500, 9, (4, 4))
    pa, pb = a.predict(volumes, slices), b.predict(volumes, slices)
    assert torch.equal(pa.low_scores, pb.low_scores)
    assert torch.equal(a.predict(volumes[:3], slices[:3]).low_scores, pa.low_scores[:3])  # batch-independent
    assert volume_swap_diagnostic(a, volumes[:4], slices[:4])["max_abs_diff_low"] == 0.0
    c, _ = resolve_model("chance", seed=8)
    assert not torch.equal(c.predict(volumes, slices).low_scores, pa.low_scores)
    assert torch.equal(pa.low_label // 27, pa.high_label)  # fine choice inside the coarse choice
    assert len(set(pa.high_label.tolist())) == 27
    from baselines.prior import Prior

    prior = Prior.from_labels(torch.tensor([3, 3, 3, 5]), torch.tensor([81, 81, 90, 140]))
    pred = prior.predict(*_batch(2, 20, (4, 4)))
    assert pred.high_label.tolist() == [3, 3] and pred.low_label.tolist() == [81, 81]


def test_released_logits_are_exactly_independent_of_the_volume() -> None:
    model, _ = resolve_model("released")
    with torch.no_grad():  # any weights, not only the initial ones
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    volumes, slices = _batch(4, 20, (4, 4))
    out = volume_swap_diagnostic(model, volumes, slices)
    assert out["max_abs_diff_high"] == 0.0 and out["max_abs_diff_low"] == 0.0
    other = model.predict(torch.rand_like(volumes), slices)
    assert torch.equal(other.high_scores, model.predict(volumes, slices).high_scores)
    # ...and the volume patch embedding gets no gradient at all
    logits = model(volumes, slices)
    (logits.high.sum() + logits.low.sum()).backward()
    assert model.high_net.patch.weight.grad is None or model.high_net.patch.weight.grad.abs().max() == 0


@pytest.mark.parametrize("name", LEARNED)
def test_models_that_compare_use_the_volume(name: str) -> None:
    model, _ = resolve_model(name)
    out = volume_swap_diagnostic(model, *_batch(3, 20, (8, 8)))
    assert out["max_abs_diff_high"] > 1e-6 and out["max_abs_diff_low"] > 1e-6


@pytest.mark.parametrize("name", (*LEARNED, "released"))
def test_one_training_step_lowers_the_loss(name: str) -> None:
    torch.manual_seed(0)
    model, _ = resolve_model(name)
    volumes, slices = _batch(4, 20, (4, 4), seed=1)
    high = torch.tensor([0, 5, 13, 26])
    low = 27 * high + torch.tensor([0, 7, 13, 26])
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def loss() -> torch.Tensor:
        logits = model(volumes, slices)
        return block_loss(logits.high, logits.low, high, low, kind="asl")

    before = loss()
    optimiser.zero_grad()
    before.backward()
    optimiser.step()
    with torch.no_grad():
        after = loss()
    assert float(after) < float(before.detach())


def test_losses() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.0], [0.5, 0.5, -3.0]])
    target = torch.tensor([0, 2])
    p = torch.sigmoid(logits)
    y = torch.nn.functional.one_hot(target, 3).float()
    pm = (p - 0.05).clamp(min=0)
    expected = -(y * torch.log(p) + (1 - y) * torch.log(1 - pm) * pm**4).sum(1)
    torch.testing.assert_close(asymmetric_loss(logits, target, reduction="none"), expected)
    torch.testing.assert_close(asymmetric_loss(logits, target, detach_focus=True), expected.mean())
    # the default differentiates through the focusing weight: its gradient is the loss's gradient
    z = logits.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(asymmetric_loss(z, target), z)
    numeric = torch.zeros_like(logits)
    for i in range(2):
        for j in range(3):
            d = torch.zeros_like(logits)
            d[i, j] = 1e-3
            numeric[i, j] = (asymmetric_loss(logits + d, target) - asymmetric_loss(logits - d, target)) / 2e-3
    torch.testing.assert_close(grad, numeric, atol=1e-3, rtol=1e-2)
    torch.testing.assert_close(asymmetric_loss(logits, target, reduction="sum"), 2 * asymmetric_loss(logits, target))
    torch.testing.assert_close(cross_entropy(logits, target), torch.nn.functional.cross_entropy(logits, target))
    torch.testing.assert_close(cross_entropy(logits, y), cross_entropy(logits, target))


# ------------------------------------------------------------------------------------------
# NCC search on a real volume


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
    from baselines.search import NCCSearch

    monkeypatch.setattr(search, "SLICE_BATCH", 2)  # the 3 slices of the first volume: 2 + 1

    other = np.ascontiguousarray(np.transpose(anatomical_cube, (2, 0, 1))[::-1])
    img_a, _, _ = _axis_slices(anatomical_cube, ["axial", "sagittal"], seed=7)
    img_b, _, _ = _axis_slices(other, ["coronal"], seed=8)
    images = [img_a[0], img_b[0], _oblique_slice(anatomical_cube, 9), img_a[1], _oblique_slice(other, 10)]
    cubes = [anatomical_cube, other, anatomical_cube, anatomical_cube, other]
    volumes = torch.from_numpy(np.stack(cubes))[:, None]
    slices = torch.from_numpy(np.stack(images))[:, None]
    model = NCCSearch(n_normals=6, n_rotations=4, top_k=3)
    pred = model.predict(volumes, slices)
    assert len(model._cache) == 2  # one entry per distinct volume
    assert {chunk.dense for entry in model._cache.values() for family in entry.families for chunk in family.chunks} == {True, False}

    single = NCCSearch(n_normals=6, n_rotations=4, top_k=3)
    results = [single.search(volumes[i, 0], slices[i, 0]) for i in range(len(images))]
    block = torch.stack([r.block_ncc for r in results])
    torch.testing.assert_close(pred.low_scores, torch.softmax(block / model.temperature, dim=1), rtol=1e-3, atol=1e-6)
    assert pred.low_label.tolist() == block.argmax(dim=1).tolist()
    assert pred.center_vox is not None and pred.normal is not None
    np.testing.assert_allclose(pred.center_vox.numpy(), np.stack([r.center for r in results]), atol=1e-4)
    np.testing.assert_allclose(pred.normal.numpy(), np.stack([r.normal for r in results]), atol=1e-4)


def test_search_blank_volume_gives_uniform_scores(anatomical_cube: np.ndarray) -> None:
    """Against an all-zero volume every NCC is 0: uniform scores, centre pose, no search, no cache."""
    from baselines.search import NCCSearch

    model = NCCSearch(n_normals=0)
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
    from baselines.search import NCCSearch

    cubes = [anatomical_cube, anatomical_cube[::-1], anatomical_cube[:, ::-1]]
    volumes = torch.from_numpy(np.ascontiguousarray(np.stack(cubes)))[:, None]
    image = _axis_slices(anatomical_cube, ["axial"], seed=12)[0][0]
    slices = torch.from_numpy(np.stack([image] * 3))[:, None]
    model = NCCSearch(n_normals=0, top_k=1, max_iterations=2, cache_volumes=2)
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
