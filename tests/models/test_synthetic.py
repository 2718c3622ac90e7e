"""Synthetic training subjects: seeded, resumable, label-consistent, drawn from train volumes only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from scipy import ndimage

from atom_bench.core import geometry as geo
from atom_bench.core import labels
from atom_bench.core.tracks import TRACKS, pixel_offsets, render_samples
from atom_bench.data.benchmark import Benchmark
from atom_bench.errors import ModelError
from atom_bench.models.synthetic import (
    SyntheticSource,
    SynthSettings,
    _deform,
    generation_labels,
    synthesize,
    synthetic_batches,
)
from atom_bench.models.train import check_settings, train

# two subjects of four slices per batch: every property below, at a quarter of a training batch's cost
SMALL = {"batch_size": 8, "volumes_per_batch": 2}


def _train_ids(track: str) -> set[str]:
    bench = Benchmark.open()
    return {v for v, g in bench.volume_groups.items() if g == "train" and v in bench.volumes(track)}


@pytest.fixture(scope="module")
def hard() -> SyntheticSource:
    return SyntheticSource("hard", seed=11, **SMALL)


def _same(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_generation_labels_are_ordered_intensity_classes_inside_the_mask(hard):
    for source_id, volume in hard.volumes.items():
        lab = generation_labels(volume, 7)
        assert np.array_equal(lab, hard.labels[source_id])  # deterministic: computed again, same classes
        assert not lab[~volume.mask].any() and lab[volume.mask].min() >= 1 and lab.max() == 7
        smooth = ndimage.gaussian_filter(volume.data.astype(np.float64), 1.0)  # what the classes are clustered on
        means = [smooth[lab == k].mean() for k in range(1, 8) if (lab == k).any()]
        assert means == sorted(means)


def test_same_seed_same_batches_other_seed_other_batches(hard):
    twin = SyntheticSource("hard", seed=11, **SMALL)
    other = SyntheticSource("hard", seed=12, **SMALL)
    first = hard.batch(0)
    assert _same(first, twin.batch(0)) and _same(hard.batch(1), twin.batch(1))
    assert not torch.equal(first[0], other.batch(0)[0]) and not torch.equal(first[1], other.batch(0)[1])
    assert not torch.equal(first[0], hard.batch(1)[0])  # each batch is new subjects


def test_batch_n_drawn_directly_equals_batch_n_of_an_unbroken_stream(hard):
    stream = hard.batches()
    unbroken = [next(stream) for _ in range(3)]
    assert _same(unbroken[2], hard.batch(2))
    resumed = synthetic_batches("hard", None, SMALL["batch_size"], 11, volumes_per_batch=SMALL["volumes_per_batch"], start=2)
    assert _same(unbroken[2], next(resumed))


def test_the_callers_torch_generator_is_left_alone(hard):
    torch.manual_seed(5)
    before = torch.get_rng_state()
    hard.batch(0)
    assert torch.equal(before, torch.get_rng_state())


@settings(max_examples=4)
@given(index=st.integers(0, 10_000))
def test_slices_are_cut_from_the_given_volume_and_labelled_by_their_pose_centre(hard, index):
    draw = hard.draw(index)
    volumes, slices, high, low = draw.batch
    spec, start = hard.spec, 0
    rows, cols = pixel_offsets(spec)
    for subject in draw.subjects:
        count = len(subject.poses)
        group = slice(start, start + count)
        start += count
        assert subject.source_id in hard.volumes
        assert subject.slice_volume is subject.volume or np.array_equal(subject.slice_volume.data, subject.volume.data)
        assert torch.equal(volumes[group], torch.from_numpy(subject.volume.data)[None, None].expand(count, 1, -1, -1, -1))
        points = geo.slice_points(subject.poses.centers, subject.poses.u, subject.poses.v, rows, cols)
        cut = geo.sample_points(subject.volume.data, points, spec.sampling).astype(np.float32)
        np.testing.assert_array_equal(slices[group, 0].numpy(), cut)
        centers = subject.poses.centers  # cube voxels of the deformed, symmetry-moved subject
        assert torch.equal(high[group], torch.as_tensor(labels.high_label(centers, spec.size)))
        assert torch.equal(low[group], torch.as_tensor(labels.low_label(centers, spec.size)))
        inside = geo.sample_points(subject.volume.mask.astype(np.float32), centers, "nearest") > 0.5
        assert inside.all()  # the hard track's tissue rule holds on the deformed mask
    assert start == len(high)


def test_the_deformation_moves_the_anatomy_but_keeps_it():
    source = SyntheticSource("hard", seed=3, augment=False, **SMALL)
    for subject in source.draw(0).subjects:
        real = source.volumes[subject.source_id].mask
        moved = subject.volume.mask
        overlap = (real & moved).sum() / (real | moved).sum()
        assert 0.5 < overlap < 0.97, overlap  # moved, yet the same head
        assert np.mean(np.abs(subject.volume.data - source.volumes[subject.source_id].data)) > 0.02


def test_the_fast_warp_matches_torchio_resampling(hard):
    lab = hard.labels[min(hard.labels)]
    warped = []
    for exact in (True, False):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(7)
            warped.append(_deform(lab, SynthSettings(), exact=exact))
    assert (warped[0] != lab).mean() > 0.05  # the draw really warps
    assert (warped[0] == warped[1]).mean() > 0.98
    images, mask = synthesize(lab, 7)
    assert np.array_equal(mask, warped[1] > 0) and images[0].min() == 0.0 and images[0].max() == 1.0


def test_only_train_volumes_are_read(monkeypatch):
    groups: list[str] = []
    original = Benchmark.volumes_of_group

    def recording(self, track, group):
        groups.append(group)
        return original(self, track, group)

    monkeypatch.setattr(Benchmark, "volumes_of_group", recording)
    source = SyntheticSource("easy", seed=0, batch_size=12, volumes_per_batch=6)
    drawn = {s.source_id for i in range(2) for s in source.draw(i).subjects}
    assert groups == ["train"]
    assert set(source.volumes) == _train_ids("easy") and drawn <= _train_ids("easy")


def test_histology_slices_are_cut_from_an_independent_contrast():
    source = SyntheticSource("histology", seed=2, **SMALL)
    for subject in source.draw(0).subjects:
        given, stained = subject.volume, subject.slice_volume
        assert np.array_equal(given.mask, stained.mask)  # the same deformed anatomy
        tissue = given.mask
        assert abs(np.corrcoef(given.data[tissue], stained.data[tissue])[0, 1]) < 0.98
        seeds = np.asarray(subject.columns["seed"])
        again = render_samples(source.spec, stained, subject.poses, seeds)["slice"]
        from_given = render_samples(source.spec, given, subject.poses, seeds)["slice"]
        np.testing.assert_array_equal(np.stack(again), np.stack(subject.columns["slice"]))
        assert not np.array_equal(np.stack(from_given), np.stack(subject.columns["slice"]))


def test_histology_slices_of_the_same_contrast_differ_only_by_the_track_degradations():
    source = SyntheticSource("histology", seed=2, settings=SynthSettings(slice_contrast="same"), **SMALL)
    for subject in source.draw(0).subjects:
        np.testing.assert_array_equal(subject.slice_volume.data, subject.volume.data)
        seeds = np.asarray(subject.columns["seed"])
        np.testing.assert_array_equal(np.stack(render_samples(source.spec, subject.volume, subject.poses, seeds)["slice"]),
                                      np.stack(subject.columns["slice"]))  # fmt: skip
    with pytest.raises(ModelError, match="slice_contrast must be one of independent, same"):
        SynthSettings(slice_contrast="stain")


COMMON = {"source": "synthetic", "steps_per_epoch": 1, "batch_size": 8, "seed": 0}


def _meta(path) -> dict[str, str]:
    with safe_open(str(path), "pt") as fh:
        return dict(fh.metadata() or {})


def test_train_on_synthetic_subjects_records_the_source(tmp_path):
    assert check_settings("cnn", "synthetic") == "cnn"
    with pytest.raises(ModelError, match="synthetic"):
        check_settings("cnn", "synth")
    summary = train("cnn", "paper", out=tmp_path, epochs=1, **COMMON)
    assert summary["steps_done"] == 1 and (tmp_path / "best.safetensors").is_file()
    meta = _meta(tmp_path / "best.safetensors")
    assert meta["source"] == "synthetic" and json.loads(meta["synthetic"]) == SynthSettings().describe()


@pytest.mark.slow
def test_a_resumed_synthetic_run_equals_an_unbroken_one(tmp_path):
    train("cnn", "paper", out=tmp_path / "a", epochs=1, **COMMON)
    resumed = train("cnn", "paper", out=tmp_path / "a", epochs=2, **COMMON)  # draws batch 1 directly
    unbroken = train("cnn", "paper", out=tmp_path / "b", epochs=2, **COMMON)
    assert resumed["steps_done"] == unbroken["steps_done"] == 2
    with safe_open(str(tmp_path / "a" / "last.safetensors"), "pt") as a, safe_open(str(tmp_path / "b" / "last.safetensors"), "pt") as b:
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())  # noqa: SIM118 - safe_open has no iterator


def test_the_picture_draws_subjects_beside_their_source(tmp_path):
    from PIL import Image

    from atom_bench.errors import DataError
    from atom_bench.viz import render_synthetic_subjects

    path = render_synthetic_subjects(tmp_path / "s.png", "paper", count=1)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[1] > image.size[0] / 2  # two rows of four cuts
    with pytest.raises(DataError, match="not a training volume"):
        render_synthetic_subjects(tmp_path / "t.png", "paper", source_id="no_such_volume", count=1)


def test_a_severity_ramp_starts_with_clean_cuts_and_reaches_the_track_degradations():
    settings = SynthSettings(slice_contrast="same", severity_ramp=4)
    assert [settings.severity(i) for i in (0, 2, 4, 9)] == [0.0, 0.5, 1.0, 1.0]
    ramped = SyntheticSource("histology", seed=2, settings=settings, **SMALL)
    full = SyntheticSource("histology", seed=2, settings=SynthSettings(slice_contrast="same"), **SMALL)
    for subject in ramped.draw(0).subjects:  # severity 0: the clean linear cut of the volume
        assert set(subject.columns["deg_warp"]) == {0.0}
        clean = render_samples(TRACKS["hard"], subject.volume, subject.poses, np.asarray(subject.columns["seed"]))["slice"]
        np.testing.assert_allclose(np.stack(subject.columns["slice"]), np.stack(clean), atol=1e-6)
    for a, b in zip(ramped.draw(5).subjects, full.draw(5).subjects, strict=True):  # past the ramp: the same stream
        np.testing.assert_array_equal(np.stack(a.columns["slice"]), np.stack(b.columns["slice"]))
    with pytest.raises(ModelError, match="severity_ramp must be a whole number"):
        SynthSettings(severity_ramp=-1)


def test_a_severity_mix_softens_each_subject_by_its_own_recorded_draw():
    mixed = SyntheticSource("histology", seed=3, settings=SynthSettings(slice_contrast="same", severity_mix=True), **SMALL)
    again = SyntheticSource("histology", seed=3, settings=SynthSettings(slice_contrast="same", severity_mix=True), **SMALL)
    shrinks = []
    for subject, twin in zip(mixed.draw(1).subjects, again.draw(1).subjects, strict=True):
        np.testing.assert_array_equal(np.stack(subject.columns["slice"]), np.stack(twin.columns["slice"]))  # seeded
        warp, shrink = np.asarray(subject.columns["deg_warp"]), np.asarray(subject.columns["deg_shrink"])
        assert ((0.0 <= warp) & (warp <= 1.5)).all() and ((0.85 <= shrink) & (shrink <= 1.0)).all()
        shrinks.append(float(np.mean(1.0 - shrink)))
    assert len(set(shrinks)) == len(shrinks)  # one severity per subject, not one per batch
    full = SyntheticSource("histology", seed=3, settings=SynthSettings(slice_contrast="same"), **SMALL)
    full_shrink = np.concatenate([1.0 - np.asarray(s.columns["deg_shrink"]) for s in full.draw(1).subjects])
    assert np.mean(shrinks) < full_shrink.mean()  # softened on average (full strength: U(0, 0.15))
