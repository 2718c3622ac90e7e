"""The registry's records: every entry builds and loads its shipped weights, capabilities (not names)
drive training and evaluation, user modules register too, and `atom-bench models` lists them."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from atom_bench.cli import main
from atom_bench.core.tracks import TRACK_NAMES
from atom_bench.data.benchmark import Benchmark
from atom_bench.errors import ModelError
from atom_bench.models import registry
from atom_bench.models.protocol import Prediction
from atom_bench.models.registry import Capabilities, ModelEntry, get_model, list_models, register_model, resolve_model
from atom_bench.models.run import build_model, evaluate_model, load_inputs, submit_evaluation
from atom_bench.models.train import train

REPO = Path(__file__).resolve().parents[2]
ENTRIES = list_models()
TRACK_PAIRS = [(e.name, t) for e in ENTRIES for t in TRACK_NAMES if e.capabilities.fits(Benchmark.open().spec(t).size)]


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made by a test vanish after it (a copy of the registry is patched in)."""
    monkeypatch.setattr(registry, "_ENTRIES", dict(registry._ENTRIES))


@pytest.mark.parametrize(("name", "track"), TRACK_PAIRS)
def test_every_entry_builds_at_the_track_sizes_with_its_shipped_weights(name, track):
    entry = get_model(name)
    model, meta = build_model(name, track, None)
    shipped = entry.weights_for(track)
    assert meta.name == name and meta.uses_volume == entry.capabilities.uses_volume and meta.licence == entry.licence
    assert meta.weights_file == (str(shipped.path) if shipped else None)
    if track == "paper":  # the smallest cube: one batch through the model, even for the search
        inputs = load_inputs(track, "validation")
        prediction = model.predict(torch.stack([inputs.volumes[v] for v in inputs.volume_ids[:2]])[:, None], inputs.slices[:2])
        assert isinstance(prediction, Prediction) and prediction.low_scores.shape == (2, 729)


def test_shipped_weights_are_declared_by_their_entries_with_cards():
    declared = {w.path.resolve(): w for e in ENTRIES for w in e.weights}
    on_disk = {p.resolve() for p in (REPO / "baselines" / "weights").glob("*.safetensors")}
    assert set(declared) == on_disk  # no orphan file, no declared file missing
    for weights in declared.values():
        high, low = weights.validation_top1
        assert weights.metadata["track"] == weights.track
        card = weights.card_text()
        assert card.startswith(f"## {weights.path.name}\n") and f"{high:.4f}" in card and f"{low:.4f}" in card


def test_records_are_frozen_and_take_no_unknown_fields(scratch_registry):
    entry = get_model("cnn")
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        ModelEntry(name="x", factory=entry.factory, description="", capabilities=entry.capabilities, colour="red")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        register_model("x", description="", capabilities=Capabilities(trainable=False), colour="red")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Capabilities(trainable=True, gpu=True)  # type: ignore[call-arg]
    with pytest.raises(ModelError, match="not both"):
        Capabilities(trainable=True, needs_train_counts=True)
    with pytest.raises(ModelError, match="invalid model name"):
        register_model("a/b", description="", capabilities=Capabilities(trainable=False))(lambda: None)
    with pytest.raises(ModelError, match="already registered"):
        register_model("cnn", description="", capabilities=Capabilities(trainable=False))(lambda: None)


def test_get_model_suggests_a_close_name():
    with pytest.raises(ModelError, match="Did you mean 'regismcan'"):
        get_model("regismcn")


def test_a_model_too_large_for_the_cube_is_refused_before_it_is_built():
    with pytest.raises(ModelError, match="at most 40 voxels a side; track 'easy' has 64"):
        build_model("released", "easy", None)


USER_MODULE = '''
import torch
from atom_bench.models.protocol import Prediction
from atom_bench.models.registry import Capabilities, register_model


class Counted(torch.nn.Module):
    """Scores every slice by the training label counts it was built from."""

    def __init__(self, high_counts=None, low_counts=None):
        super().__init__()
        self.register_buffer("high_counts", torch.zeros(27) if high_counts is None else torch.as_tensor(high_counts).float())
        self.register_buffer("low_counts", torch.zeros(729) if low_counts is None else torch.as_tensor(low_counts).float())

    def predict(self, volumes, slices):
        b = slices.shape[0]
        return Prediction(self.high_counts.expand(b, -1).clone(), self.low_counts.expand(b, -1).clone())


@register_model(
    "user-counted", description="[bold red]counts[/] of a user", capabilities=Capabilities(trainable=False, needs_train_counts=True, uses_volume=False),
)
def build(volume_size=None, slice_shape=None, high_counts=None, low_counts=None):
    return Counted(high_counts, low_counts)


@register_model("user-fixed", description="a fixed answer", capabilities=Capabilities(trainable=False, uses_volume=False))
def fixed(volume_size=None, slice_shape=None):
    return Counted()
'''


@pytest.fixture
def user_module(tmp_path, scratch_registry) -> Path:
    path = tmp_path / "user_models.py"
    path.write_text(textwrap.dedent(USER_MODULE))
    return path


def test_a_user_module_registers_and_its_capabilities_drive_train_and_evaluate(user_module, small_bench, tmp_path):
    with pytest.raises(ModelError, match="create_model"):  # two models registered: which one is ambiguous
        resolve_model(str(user_module))
    _, meta = resolve_model(f"{user_module}:build")
    assert meta.name == "user-counted" and meta.uses_volume is False and meta.n_parameters == 0
    assert get_model("user-counted").factory.__module__.startswith("_atom_bench_user_")  # and by name, once imported
    counts = Benchmark.open(small_bench).train_counts("easy")
    model, meta = build_model("user-counted", "easy", None, small_bench)  # needs_train_counts: built from the counts
    assert model.high_counts.tolist() == counts["high"].tolist() and meta.weights_file is None
    summary = train(f"{user_module}:build", "easy", root=small_bench, out=tmp_path / "counted")  # "trained" by counting
    assert summary["epoch"] == 0 and (tmp_path / "counted" / "best.safetensors").is_file()
    with pytest.raises(ModelError, match="nothing to train"):
        train("user-fixed", "easy", root=small_bench, out=tmp_path / "fixed")


def test_models_command_lists_the_registry_as_plain_text(user_module, capsys):
    resolve_model(f"{user_module}:build")  # registers the user's models
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for entry in list_models():
        assert entry.name in out
    assert "[bold red]counts[/] of a user" in out  # a registered string is printed as written, never as markup
    prior_row = next(line for line in out.splitlines() if line.strip().startswith("prior "))
    assert f"{get_model('prior').weights_for('easy').validation_top1[0]:.3f}" in prior_row


def test_a_broken_plugin_warns_and_the_others_stay(monkeypatch, scratch_registry):
    from importlib.metadata import EntryPoint

    monkeypatch.setattr(registry, "_discovered", False)
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: [EntryPoint("broken", "no_such_module_qq", group)])
    with pytest.warns(RuntimeWarning, match="'broken'"):
        names = [e.name for e in list_models()]
    assert "cnn" in names  # registered before


def test_the_toolkit_never_imports_the_baselines():
    for path in (REPO / "atom_bench").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] == "baselines" for a in node.names), path
            elif isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] != "baselines", path
    code = (
        "import sys, atom_bench.cli, atom_bench.models.run, atom_bench.models.train, atom_bench.models.listing\n"
        "from atom_bench.models.registry import resolve_model\n"
        "resolve_model('tests/models/matcher.py')\n"
        "assert 'baselines' not in sys.modules, 'imported baselines'\n"
        "from atom_bench.models.registry import list_models\n"
        "assert 'cnn' in [e.name for e in list_models()] and 'baselines' in sys.modules  # found by its entry point\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_submit_reuses_the_evaluation_scores(small_bench, tmp_path, monkeypatch):
    from atom_bench.board.submissions import SubmissionError
    from atom_bench.eval.scoring import Evaluator

    scores, path = evaluate_model("tests.models.matcher", "easy", "test_unseen", root=small_bench, out=tmp_path / "m.parquet")
    rescored = Evaluator.from_benchmark("easy", "test_unseen", root=small_bench).evaluate_file(path)  # what scoring again gives
    calls = []
    plain = Evaluator.evaluate_file
    monkeypatch.setattr(Evaluator, "evaluate_file", lambda self, *a, **k: calls.append(1) or plain(self, *a, **k))
    who = {"authors": ["A. Person"], "code_url": "https://example.org/matcher"}
    with pytest.raises(SubmissionError, match="meta needs authors and code_url"):
        submit_evaluation(scores, path, "matcher", root=small_bench, submissions_dir=tmp_path / "subs")
    target = submit_evaluation(scores, path, "matcher", root=small_bench, submissions_dir=tmp_path / "subs", meta=who)
    assert calls == []  # the file was not scored a second time
    stored = json.loads((target / "scores.json").read_text())
    drops = {k: v for k, v in stored["metrics"].items() if k.startswith("volume_")}
    assert drops and stored.pop("volume_reliance") == json.loads(json.dumps(scores["volume_reliance"]))
    expected = {**rescored, "metrics": {**rescored["metrics"], **drops}}
    assert json.dumps(stored, sort_keys=True) == json.dumps(expected, sort_keys=True)  # the same record as before
    _, other = evaluate_model("tests.models.matcher", "easy", "test_unseen", root=small_bench, out=tmp_path / "m.csv", diagnostic=False)
    with pytest.raises(SubmissionError, match="not the file"):  # the same answers, but not the file that was scored
        submit_evaluation(scores, other, "matcher2", root=small_bench, submissions_dir=tmp_path / "subs", meta=who)
