"""The dense descriptor matcher: shapes, scores that come only from the volume, the block
aggregation against brute force, one 3D pass per distinct volume, and a short real training run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from atom_bench.core import labels
from atom_bench.models.diagnostics import volume_swap_diagnostic
from atom_bench.models.registry import get_model, resolve_model
from atom_bench.models.run import build_model, load_inputs
from atom_bench.models.train import read_log, train
from baselines import matcher

SIZES = {"paper": (20, (4, 4)), "hard": (64, (16, 16))}  # atom-mini's two cube sides


def _model(track: str) -> matcher.DescriptorMatcher:
    size, hw = SIZES[track]
    torch.manual_seed(0)  # the untrained weights of these tests
    model, _ = resolve_model("baselines.matcher", volume_size=size, slice_shape=hw)
    return model.eval()


def _real_batch(track: str, per_volume: int, volumes: int = 2, split: str = "test_unseen") -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``per_volume`` real slices of each of the first ``volumes`` volumes of ``split`` (grouped by
    volume, as training batches are), with their own atom-mini volumes."""
    inputs = load_inputs(track, split)
    ids = np.asarray(inputs.volume_ids)
    rows = np.concatenate([np.flatnonzero(ids == v)[:per_volume] for v in sorted(set(ids))[:volumes]])
    chosen = [str(ids[i]) for i in rows]
    return torch.stack([inputs.volumes[v] for v in chosen])[:, None], inputs.slices[rows], chosen


@pytest.mark.parametrize("track", list(SIZES))
def test_shapes_and_finite_scores_on_real_slices(track: str) -> None:
    volumes, slices, _ = _real_batch(track, 2)
    prediction = _model(track).predict(volumes, slices)
    assert prediction.high_scores.shape == (4, 27) and prediction.low_scores.shape == (4, 729)
    assert torch.isfinite(prediction.high_scores).all() and torch.isfinite(prediction.low_scores).all()
    size = SIZES[track][0]
    side = size // matcher.grid_stride(size)
    assert (side, matcher.grid_stride(size)) == ((32, 2) if size == 64 else (20, 1))


@pytest.mark.parametrize("track", list(SIZES))
def test_a_blank_volume_gives_uniform_scores(track: str) -> None:
    volumes, slices, _ = _real_batch(track, 2)
    prediction = _model(track).predict(torch.zeros_like(volumes), slices)
    for scores in (prediction.high_scores, prediction.low_scores):
        spread = scores.max(dim=1).values - scores.min(dim=1).values
        assert float(spread.max()) < 1e-4


def test_the_optional_volume_prior_is_uniform_on_a_blank_volume_too() -> None:
    torch.manual_seed(0)
    model, _ = resolve_model("baselines.matcher", volume_size=20, slice_shape=(4, 4), volume_prior=True)
    torch.nn.init.normal_(model.prior.weight, std=3.0)  # a prior that matters
    volumes, slices, _ = _real_batch("paper", 2)
    blank = model.predict(torch.zeros_like(volumes), slices).low_scores
    assert float((blank - blank[:, :1]).abs().max()) < 1e-4
    own = model.predict(volumes, slices).low_scores
    assert float((own - own[:, :1]).abs().max()) > 1e-2


@settings(max_examples=8)
@given(level=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_a_constant_volume_gives_uniform_scores_whatever_the_slice(level: float, seed: int) -> None:
    # the slice alone cannot favour a block: every difference between blocks comes from the volume
    g = torch.Generator().manual_seed(seed)
    slices = torch.rand(2, 1, 4, 4, generator=g) * 3 - 1
    prediction = _model("paper").predict(torch.full((2, 1, 20, 20, 20), level), slices)
    assert float((prediction.low_scores - prediction.low_scores[:, :1]).abs().max()) < 1e-4


def test_scores_change_with_the_volume_and_only_with_it() -> None:
    model = _model("hard")
    volumes, slices, ids = _real_batch("hard", 3)
    assert len(set(ids[:3])) == len(set(ids[3:])) == 1 and ids[0] != ids[3]
    again = model.predict(volumes, slices)
    alone = torch.cat([model.predict(volumes[i:i + 1], slices[i:i + 1]).low_scores for i in range(6)])
    torch.testing.assert_close(alone, again.low_scores, rtol=1e-4, atol=1e-4)  # no leak across the batch
    shift = 3  # the first three slices are from one volume, the last three from the other
    swap = volume_swap_diagnostic(model, volumes, slices, shift=shift)
    assert swap["max_abs_diff_high"] > 1e-3 and swap["max_abs_diff_low"] > 1e-3
    swapped = model.predict(torch.roll(volumes, shift, dims=0), slices)
    changed = (swapped.low_scores - again.low_scores).abs().amax(dim=1)
    assert bool((changed > 1e-4).all())  # every slice's scores move when its volume is swapped


def test_scores_are_invariant_to_in_plane_rotations_and_flips() -> None:
    model = _model("hard")
    volumes, slices, _ = _real_batch("hard", 1)
    reference = model.predict(volumes, slices).low_scores
    for view in matcher.dihedral_views(slices)[1:]:
        torch.testing.assert_close(model.predict(volumes, view).low_scores, reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size", [20, 64])
def test_block_logits_match_a_brute_force_log_mean_exp(size: int) -> None:
    centres = matcher.position_centres_vox(size)
    low = labels.low_label(centres, size)
    scores = torch.randn(3, centres.shape[0], generator=torch.Generator().manual_seed(size), dtype=torch.float64) * 4
    logits = matcher.block_logits(scores, size)
    brute_low = torch.stack([torch.logsumexp(scores[:, low == k], dim=1) - np.log((low == k).sum()) for k in range(729)], dim=1)
    high = low // 27
    brute_high = torch.stack([torch.logsumexp(scores[:, high == k], dim=1) - np.log((high == k).sum()) for k in range(27)], dim=1)
    torch.testing.assert_close(logits.low, brute_low.to(logits.low.dtype))
    torch.testing.assert_close(logits.high, brute_high.to(logits.high.dtype))
    # coarse = log-mean-exp of its 27 fine blocks, each weighted by its position count
    fine_counts = torch.as_tensor(np.bincount(low, minlength=729), dtype=scores.dtype).reshape(27, 27)
    from_fine = torch.logsumexp(logits.low.reshape(3, 27, 27) + fine_counts.log(), dim=2) - fine_counts.sum(1).log()
    torch.testing.assert_close(logits.high, from_fine)


@settings(max_examples=30)
@given(size=st.integers(10, 128))
def test_every_position_sits_in_exactly_the_block_of_its_centre(size: int) -> None:
    fine, _, coarse, _ = matcher.block_index(size)
    centres = matcher.position_centres_vox(size)
    n = centres.shape[0]
    assert np.all((centres > -0.5) & (centres <= size - 0.5))  # centres (voxels) lie in the cube, edge included
    for table, label in ((fine, labels.low_label(centres, size)), (coarse, labels.high_label(centres, size))):
        members = table.numpy()
        listed = members[members < n]
        assert np.array_equal(np.sort(listed), np.arange(n))  # each position in exactly one block
        rows = np.nonzero(members < n)[0]
        assert np.array_equal(label[members[members < n]], rows)


def test_a_cube_too_small_for_a_position_per_block_is_refused() -> None:
    with pytest.raises(ValueError, match="side 9 leaves a block without"):
        matcher.block_index(9)  # positions at i + 0.5 voxels: fine cell 0 of a 9-voxel cube holds none


def test_volume_features_run_once_per_distinct_consecutive_volume() -> None:
    model = _model("paper")
    volumes, slices, _ = _real_batch("paper", 3)
    volumes = volumes[[0, 1, 3, 4, 5, 2]]  # volumes a a b b b a: the last a is a run of its own
    calls: list[int] = []
    handle = model.volume_features.register_forward_hook(lambda _m, args, _out: calls.append(args[0].shape[0]))
    try:
        together = model.predict(volumes, slices).low_scores
    finally:
        handle.remove()
    assert calls == [3]
    one_by_one = torch.cat([model.predict(volumes[i:i + 1], slices[i:i + 1]).low_scores for i in range(6)])
    torch.testing.assert_close(together, one_by_one, rtol=1e-4, atol=1e-4)


def test_shipped_weights_cover_the_64_cube_tracks_and_paper_builds_untrained() -> None:
    entry = get_model("matcher")
    assert {w.track for w in entry.weights} == set(matcher.TRACKS) and all(w.path.is_file() for w in entry.weights)
    model, meta = build_model("matcher", "paper", None)  # no paper weights: the untrained model
    assert isinstance(model, matcher.DescriptorMatcher) and meta.weights_file is None and meta.uses_volume is True


def test_loss_falls_in_a_short_real_training_run(tmp_path) -> None:
    summary = train("baselines.matcher", "paper", out=tmp_path / "run", epochs=3, steps_per_epoch=4, batch_size=32,
                    lr=3e-3, seed=0, loss="ce")  # fmt: skip
    losses = [float(row["train_loss"]) for row in read_log(tmp_path / "run" / "log.csv")]
    assert summary["finished"] and len(losses) == 3
    assert losses[-1] < losses[0] - 0.05
    assert losses[0] < np.log(27) + np.log(729) + 0.5  # starts near uniform, as the log-mean-exp promises


# -- matcher-rings ---------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 12), w=st.integers(1, 12))
def test_ring_masks_are_averages_that_cover_the_map_once(h: int, w: int) -> None:
    masks = matcher.ring_masks(h, w)
    assert masks.shape == (len(matcher.RING_EDGES) + 1, h * w)
    members = masks > 0
    assert bool((members.sum(dim=0) == 1).all())  # every pixel in exactly one ring
    for ring, inside in zip(masks, members):
        if inside.any():
            assert float(ring.sum()) == pytest.approx(1.0) and bool((ring[inside] == ring[inside][0]).all())


@settings(max_examples=20, deadline=None)
@given(side=st.integers(1, 12))
def test_rings_of_a_square_map_map_onto_themselves_under_its_symmetries(side: int) -> None:
    masks = matcher.ring_masks(side, side).reshape(-1, side, side)
    for view in matcher.dihedral_views(masks[None]):  # (1, rings, side, side) per symmetry
        assert torch.equal(view[0], masks)


def test_ring_masks_split_the_8_by_8_map_of_a_16_pixel_slice_into_near_thirds() -> None:
    assert (matcher.ring_masks(8, 8) > 0).sum(dim=1).tolist() == [24, 20, 20]


def test_widened_matcher_weights_compute_the_same_scores_and_the_rings_then_count() -> None:
    torch.manual_seed(0)
    plain, _ = matcher.create_model()
    rings, meta = matcher.create_rings()
    rings.load_state_dict(matcher.widen_to_rings(plain.state_dict()))
    volumes, slices, _ = _real_batch("hard", 2)
    with torch.no_grad():
        before = plain.position_scores(volumes, slices)
        torch.testing.assert_close(rings.position_scores(volumes, slices), before, rtol=0, atol=1e-5)
        rings.slice_embedding.mlp[0].weight[:, 64:] = 0.1  # the ring inputs now change the embedding
        assert not torch.allclose(rings.position_scores(volumes, slices), before, atol=1e-3)
    assert meta.n_parameters == count_params(plain) + 64 * 96
    with pytest.raises(ValueError, match="inputs"):
        matcher.widen_to_rings(rings.state_dict())  # already widened


def test_matcher_rings_reads_only_the_volume_and_is_rotation_invariant() -> None:
    torch.manual_seed(0)
    model, _ = matcher.create_rings()
    model.eval()
    volumes, slices, _ = _real_batch("hard", 2)
    blank = model.predict(torch.zeros_like(volumes), slices).low_scores
    assert float((blank.max(dim=1).values - blank.min(dim=1).values).max()) < 1e-4
    with torch.no_grad():
        turned = model.position_scores(volumes, torch.rot90(slices, 1, dims=(-2, -1)).flip(-1))
        torch.testing.assert_close(turned, model.position_scores(volumes, slices), rtol=1e-4, atol=1e-4)


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
