"""Baselines: shapes, the released model's volume independence, training steps (the search: test_search.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atom_bench.core import labels
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


def test_regismcan_similarity_term_compares_slice_and_blocks() -> None:
    from baselines.regismcan import create_model as create_regismcan

    torch.manual_seed(0)
    plain, _ = create_regismcan(20, (4, 4))
    model, meta = create_regismcan(20, (4, 4), similarity=True)
    assert not plain.similarity and "similarity" in meta.notes
    extra = {"slice_query.weight", "slice_query.bias", "coarse_key.weight", "coarse_key.bias", "fine_key.weight", "fine_key.bias", "similarity_scale"}
    assert set(model.state_dict()) - set(plain.state_dict()) == extra
    volumes, slices = torch.rand(2, 1, 20, 20, 20), torch.rand(2, 1, 4, 4)
    logits = model(volumes, slices)
    assert logits.high.shape == (2, 27) and logits.low.shape == (2, 729)
    model.similarity_scale.data += 1.0  # the term's weight moves every block's logit differently
    moved = model(volumes, slices)
    assert not torch.allclose(moved.high - moved.high.mean(1, keepdim=True), logits.high - logits.high.mean(1, keepdim=True))


def test_regismcan_match_adds_the_matchers_block_logits() -> None:
    from baselines.matcher import create_model as create_matcher
    from baselines.regismcan import create_match

    torch.manual_seed(0)
    model, meta = create_match(64, (16, 16))
    assert "matching term" in meta.notes and meta.name == "regismcan-match"
    matcher, _ = create_matcher()
    assert set(model.matcher.state_dict()) == set(matcher.state_dict())
    volumes, slices = _batch(2, 64, (16, 16), seed=4)
    model.eval()
    with torch.no_grad():
        both = model(volumes, slices)
        term = model.matcher(volumes, slices)
        model.matcher = None  # the co-attention alone
        alone = model(volumes, slices)
    shift = term.high.mean(dim=1, keepdim=True)
    torch.testing.assert_close(both.high, alone.high + term.high - shift)
    torch.testing.assert_close(both.low, alone.low + term.low - shift)
    # one shift per slice for both levels: each level's ranking is the sum's, not the co-attention's
    assert not torch.equal(both.high.argsort(dim=1), alone.high.argsort(dim=1))


def test_the_regismcan_match_warm_start_holds_the_matchers_weights_and_record(tmp_path) -> None:
    import subprocess
    import sys
    from pathlib import Path

    from atom_bench.models.weights import describe_training, read_metadata, read_safetensors

    repo = Path(__file__).resolve().parents[2]
    matcher = repo / "baselines" / "weights" / "matcher-hard.safetensors"
    out = tmp_path / "init.safetensors"
    subprocess.run([sys.executable, str(repo / "scripts" / "warm_start_regismcan_match.py"), "--matcher", str(matcher), "--out", str(out)],
                   check=True, capture_output=True, cwd=repo)  # fmt: skip
    start, source = read_safetensors(out), read_safetensors(matcher)
    assert all(torch.equal(start[f"matcher.{k}"], v.to(start[f"matcher.{k}"].dtype)) for k, v in source.items())
    resolve_model("regismcan-match", weights=out)  # loads strictly: every key of the model, nothing else
    assert describe_training(read_metadata(out)) == describe_training(read_metadata(matcher))
    assert "the rest at seed 0" in read_metadata(out)["composed"]
