"""The model interface: Prediction, registry (resolve_model), safetensors weights, diagnostic."""

from __future__ import annotations

import textwrap

import pytest
import torch

from atom_bench.errors import ModelError
from atom_bench.models.diagnostics import volume_swap_diagnostic
from atom_bench.models.protocol import ModelMeta, Prediction, SliceLocator
from atom_bench.models.registry import list_models, resolve_model
from atom_bench.models.weights import load_weights, save_weights

BASELINES = tuple(entry.name for entry in list_models())




def _batch(b: int = 2, size: int = 20, hw: tuple[int, int] = (4, 4), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 1, size, size, size, generator=g), torch.rand(b, 1, *hw, generator=g)


def test_prediction_checks_shapes() -> None:
    Prediction(torch.zeros(3, 27), torch.zeros(3, 729), torch.zeros(3, 3), torch.zeros(3, 3))
    with pytest.raises(ModelError, match="high_scores"):
        Prediction(torch.zeros(3, 26), torch.zeros(3, 729))
    with pytest.raises(ModelError, match="low_scores"):
        Prediction(torch.zeros(3, 27), torch.zeros(2, 729))
    with pytest.raises(ModelError, match="normal"):
        Prediction(torch.zeros(3, 27), torch.zeros(3, 729), normal=torch.zeros(3, 2))
    p = Prediction(torch.eye(27)[[4, 5]], torch.eye(729)[[100, 200]])
    assert p.high_label.tolist() == [4, 5] and p.low_label.tolist() == [100, 200]


@pytest.mark.parametrize("name", BASELINES)
def test_every_baseline_resolves_by_short_name(name: str) -> None:
    model, meta = resolve_model(name)
    assert isinstance(model, SliceLocator)
    assert isinstance(meta, ModelMeta) and meta.name == name
    if isinstance(model, torch.nn.Module):
        assert meta.n_parameters == sum(p.numel() for p in model.parameters())


def test_module_path_and_attribute_forms() -> None:
    _, meta = resolve_model("baselines.cnn")
    assert meta.name == "cnn"
    _, meta = resolve_model("baselines.vit:create_model", dim=32, depth=1)
    assert meta.name == "vit"


def test_user_module_file_and_bare_factory(tmp_path, monkeypatch) -> None:
    code = textwrap.dedent(
        """
        import torch
        from atom_bench.models.registry import Prediction

        class Constant:
            def predict(self, volumes, slices):
                b = slices.shape[0]
                return Prediction(torch.zeros(b, 27), torch.zeros(b, 729))

        def build():
            return Constant()
        """
    )
    (tmp_path / "my_locator.py").write_text(code)
    model, meta = resolve_model(f"{tmp_path / 'my_locator.py'}:build")
    assert meta.name == "build" and meta.n_parameters == 0
    monkeypatch.syspath_prepend(str(tmp_path))
    model, _ = resolve_model("my_locator:build")
    volumes, slices = _batch()
    assert model.predict(volumes, slices).high_scores.shape == (2, 27)
    with pytest.raises(ModelError, match="Did you mean 'build'"):
        resolve_model("my_locator:buidl")
    with pytest.raises(ModelError, match="create_model"):
        resolve_model("my_locator")


@pytest.mark.parametrize(
    ("spec", "suggestion"),
    [("regismcn", "regismcan"), ("baselines.chanse", "baselines.chance"), ("serach", "search"), ("baselines.cnn:create_modle", "create_model")],
)
def test_typos_get_did_you_mean(spec: str, suggestion: str) -> None:
    with pytest.raises(ModelError, match=f"Did you mean '{suggestion}'"):
        resolve_model(spec)


def test_unknown_name_and_bad_arguments_are_one_line_errors() -> None:
    with pytest.raises(ModelError, match="Known baselines") as info:
        resolve_model("zzz_no_such_model_qq")
    assert "\n" not in str(info.value)
    with pytest.raises(ModelError, match="does not accept"):
        resolve_model("cnn", no_such_option=3)
    with pytest.raises(ModelError, match="divisible by 4"):
        resolve_model("released", volume_size=22)


def test_safetensors_round_trip(tmp_path) -> None:
    model, _ = resolve_model("cnn", dim=16)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = save_weights(model, tmp_path / "cnn.safetensors", metadata={"model": "cnn"})
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    assert path.read_bytes()[8:9] == b"{" and header_len > 0  # a safetensors header, not a pickle
    loaded, meta = resolve_model("cnn", weights=path, dim=16)
    assert meta.weights_file == str(path)
    volumes, slices = _batch(size=20, hw=(8, 8))
    assert torch.equal(model.predict(volumes, slices).low_scores, loaded.predict(volumes, slices).low_scores)


def test_mismatched_or_broken_weights_name_the_problem(tmp_path) -> None:
    other, _ = resolve_model("vit", dim=16, depth=1)
    path = save_weights(other, tmp_path / "vit.safetensors")
    with pytest.raises(ModelError, match="missing keys: .*unexpected keys"):
        resolve_model("cnn", weights=path, dim=16)
    small, _ = resolve_model("cnn", dim=16)
    path = save_weights(small, tmp_path / "cnn16.safetensors")
    with pytest.raises(ModelError, match="wrong shapes"):
        resolve_model("cnn", weights=path, dim=32)
    (tmp_path / "junk.safetensors").write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(ModelError, match="not a readable safetensors"):
        resolve_model("cnn", weights=tmp_path / "junk.safetensors")
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model("cnn", weights=tmp_path / "absent.safetensors")


def test_prior_counts_load_from_safetensors(tmp_path) -> None:
    from baselines.prior import save_counts

    high = torch.zeros(27)
    high[13] = 50
    low = torch.zeros(729)
    low[13 * 27 + 4] = 50
    path = save_counts(tmp_path / "counts.safetensors", high, low)
    model, _ = resolve_model("prior", weights=path)
    pred = model.predict(*_batch(b=3))
    assert pred.high_label.tolist() == [13] * 3 and pred.low_label.tolist() == [13 * 27 + 4] * 3
    with pytest.raises(ModelError):
        load_weights(model, save_weights(resolve_model("cnn", dim=8)[0], tmp_path / "x.safetensors"))


def test_volume_swap_diagnostic_on_floors() -> None:
    volumes, slices = _batch(b=4)
    model, _ = resolve_model("prior")
    out = volume_swap_diagnostic(model, volumes, slices, torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long))
    assert out["max_abs_diff_high"] == 0.0 and out["high_drop"] == 0.0


def test_loaded_weights_describe_their_training_data(tmp_path):
    import doctest

    from atom_bench.models import weights as weights_module
    from atom_bench.models.registry import get_model, resolve_model
    from atom_bench.models.weights import save_weights

    assert doctest.testmod(weights_module).failed == 0
    model, meta = resolve_model("cnn")
    assert meta.training_data == "untrained"  # the factory's own record: nothing loaded
    path = save_weights(model, tmp_path / "w.safetensors", {"model": "cnn", "track": "easy", "source": "split", "step": "12", "seed": "3"})
    assert resolve_model("cnn", path)[1].training_data == "easy train volumes, split source, 12 steps, seed 3"
    save_weights(model, tmp_path / "bare.safetensors")  # no record of a run: the factory's text stays
    assert resolve_model("cnn", tmp_path / "bare.safetensors")[1].training_data == "untrained"
    assert get_model("cnn").name == "cnn"
