"""The similarity diagnostic rests on re-rendering stored histology slices from their draws."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from atom_bench.core import geometry
from atom_bench.core.degrade import draw_histology
from atom_bench.data.dataset import load_split, load_volumes

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "diagnose_similarity.py"


def _script():
    spec = importlib.util.spec_from_file_location("diagnose_similarity", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_step_on_reproduces_the_stored_slice_and_leave_one_out_rows_differ():
    script = _script()
    data = load_split("histology", "test_unseen").with_format("numpy")
    volumes = load_volumes("histology")
    for index in (0, 7, 200):
        sample = data[index]
        volume = volumes[sample["volume_id"]]
        offsets = geometry.centered_offsets(sample["slice"].shape[0], 1.0)
        points = geometry.slice_points(sample["center_vox"][None], sample["u"][None], sample["v"][None], offsets, offsets)[0]
        draw = draw_histology(np.random.default_rng([int(sample["seed"]), 1]), int(sample["seed"]))
        normal = np.cross(sample["u"], sample["v"])
        track = script.render_with_steps(volume.data, points, normal, draw, script.STEPS[script.TRACK_ROW])
        np.testing.assert_allclose(track, sample["slice"], atol=1e-5)
        without_warp = script.render_with_steps(volume.data, points, normal, draw, script.STEPS["all but the warp"])
        assert draw.warp == 0 or not np.allclose(without_warp, track)
    assert "warp" not in script.STEPS["all but the warp"] and len(script.STEPS["all but the warp"]) == len(script.OFF) - 1
