from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from atom_bench.cli import main
from atom_bench.models.run import consistent_top5, evaluate_model


def test_consistent_top5_keeps_fine_inside_coarse():
    rng = torch.Generator().manual_seed(0)
    high, low = torch.randn(50, 27, generator=rng), torch.randn(50, 729, generator=rng)
    out = consistent_top5(high, low)
    assert np.all(out["low_top5"][:, 0] // 27 == out["high_top5"][:, 0])
    assert all(len(set(row)) == 5 for row in out["low_top5"])


def test_a_model_that_uses_the_volume_drops_when_the_volume_is_swapped(small_bench, tmp_path):
    scores, path = evaluate_model("tests.models.matcher", "easy", "test_seen", root=small_bench, out=tmp_path / "p.parquet")
    assert path.is_file()
    assert scores["metrics"]["top1_low"]["value"] == 1.0  # exact on clean axis-aligned slices
    swapped = scores["volume_reliance"]["swapped"]
    assert swapped["drop_high"]["value"] > 0.3 and swapped["changed_low"] >= 0.3  # two volumes are mirror copies
    assert scores["volume_reliance"]["blank"]["drop_high"]["value"] > 0.3


def test_the_released_architecture_shows_no_drop(small_bench, tmp_path):
    scores, _ = evaluate_model("released", "paper", "test_unseen", root=small_bench, out=tmp_path / "r.csv")
    for mode in ("swapped", "blank"):
        entry = scores["volume_reliance"][mode]
        assert entry["changed_high"] == 0.0 and entry["changed_low"] == 0.0
        assert entry["drop_high"]["value"] == 0.0


def test_shipped_cnn_weights_read_the_volume_and_beat_the_prior(tmp_path):
    """The shipped cnn-easy weights (atom-mini, 7 CPU minutes) on the held-out validation volume:
    above the training prior, and clearly worse when each slice gets another volume."""
    scores, _ = evaluate_model("cnn", "easy", "validation", out=tmp_path / "cnn.parquet")
    top1 = scores["metrics"]["top1_high"]["value"]
    assert top1 > scores["floors"]["prior"]["metrics"]["top1_high"]["value"] + 0.05
    swapped = scores["volume_reliance"]["swapped"]
    assert swapped["drop_high"]["value"] > 0.15 and swapped["changed_high"] > 0.3


def test_cli_evaluate_submit_and_leaderboard(small_bench, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["evaluate", "--model", "tests.models.matcher", "--track", "easy", "--split", "test_unseen",
            "--root", str(small_bench), "--submit", "--name", "matcher"]
    assert main(args) == 2  # whose model is it? not ours by default
    assert "--submit needs --meta" in capsys.readouterr().err and not (tmp_path / "submissions").exists()
    (tmp_path / "META.yaml").write_text("authors: [A. Person]\ncode_url: https://example.org/matcher\n")
    code = main([*args, "--meta", str(tmp_path / "META.yaml")])
    assert code == 0, capsys.readouterr().err
    stored = json.loads((tmp_path / "submissions" / "easy" / "matcher" / "metadata.json").read_text())
    assert stored["authors"] == ["A. Person"] and stored["code_url"] == "https://example.org/matcher"
    record = json.loads((tmp_path / "submissions" / "easy" / "matcher" / "scores.json").read_text())
    assert record["metrics"]["volume_swap_drop_high"]["value"] > 0
    board = (tmp_path / "leaderboards" / "easy.md").read_text()
    assert "matcher" in board and "volume-swap drop" in board and "floor" in board


def test_unknown_model_is_a_one_line_error(capsys):
    assert main(["evaluate", "--model", "regismcna"]) == 2
    err = capsys.readouterr().err
    assert "regismcan" in err.lower() and "Traceback" not in err


BAD_MODELS = {
    "nan": "high_scores holds 864 NaN or infinite value(s)",
    "short": "high_scores has 1 rows for a batch of 32 slices",
    "tuple": "predict returned a tuple",
    "numpy": "high_scores is a ndarray; return torch tensors",
}


@pytest.mark.parametrize("kind", sorted(BAD_MODELS))
def test_bad_model_outputs_are_one_line_errors_naming_model_and_batch(kind, tmp_path, capsys):
    body = {
        "nan": "return Prediction(torch.full((b, 27), float('nan')), torch.zeros(b, 729))",
        "short": "return Prediction(torch.zeros(1, 27), torch.zeros(1, 729))",
        "tuple": "return torch.zeros(b, 27), torch.zeros(b, 729)",
        "numpy": "return Prediction(np.zeros((b, 27)), np.zeros((b, 729)))",
    }[kind]
    source = tmp_path / f"bad_{kind}.py"
    source.write_text(
        "import numpy as np\nimport torch\nfrom atom_bench.models.protocol import Prediction\n\n"
        "class Bad:\n    def predict(self, volumes, slices):\n        b = slices.shape[0]\n        " + body + "\n\n"
        "def create_model(volume_size=None, slice_shape=None):\n    return Bad()\n"
    )
    out = tmp_path / "p.parquet"
    assert main(["evaluate", "--model", str(source), "--track", "easy", "--split", "test_seen", "--no-diagnostic", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: model 'bad_{kind}', batch 0 (slices 0-31): ") and BAD_MODELS[kind] in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_default_outputs_of_two_benchmarks_do_not_collide(small_bench):
    from atom_bench.data.benchmark import Benchmark
    from atom_bench.models.run import default_output

    assert Benchmark.open().hash != Benchmark.open(small_bench).hash
    a = default_output("cnn", "easy", "test_unseen")
    b = default_output("cnn", "easy", "test_unseen", small_bench)
    assert a != b and a.name == b.name == "cnn-easy-test_unseen.parquet" and a.parent.name.startswith("atom-mini-")


def test_a_model_file_in_the_working_directory_is_suggested(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_model.py").write_text("def create_model(volume_size=None, slice_shape=None):\n    return None\n")
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--model", "my_model", "--track", "easy"]) == 2
    assert "pass it as a file: --model ./my_model.py" in capsys.readouterr().err


def test_shipped_matcher_weights_lose_accuracy_when_the_volume_is_swapped(small_bench, tmp_path):
    """The matcher's shipped weights (trained on atom-mini's synthetic stream) on another, small
    real build (nibabel's scans): each slice scored against another volume loses accuracy."""
    from atom_bench.models.registry import get_model

    weights = get_model("matcher").weights_for("hard").path
    # test_seen: two volumes, so each slice can be given the other one (test_unseen holds one)
    scores, _ = evaluate_model("matcher", "hard", "test_seen", weights=weights, root=small_bench, out=tmp_path / "m.parquet")
    swapped = scores["volume_reliance"]["swapped"]
    assert swapped["drop_high"]["value"] > 0 and swapped["changed_high"] > 0.3
    assert scores["volume_reliance"]["blank"]["drop_high"]["value"] > 0
