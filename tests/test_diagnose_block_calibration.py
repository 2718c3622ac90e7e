"""scripts/diagnose_block_calibration.py: every aggregation finds a block that stands out, and the
calibrated ones remove a block's advantage that every slice shares."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from diagnose_block_calibration import aggregations


def test_a_block_that_stands_out_for_its_slice_wins_every_aggregation() -> None:
    rng = np.random.default_rng(0)
    block = rng.normal(0.3, 0.02, size=(12, 729))
    truth = rng.permutation(27)[:12]  # one slice per block: the others are its null
    for i, label in enumerate(truth):
        block[i, label * 27 : (label + 1) * 27] += 0.2  # every fine block of the true coarse block
    for name, scores in aggregations(block).items():
        assert scores.shape == (12, 27)
        assert (scores.argmax(axis=1) == truth).all(), name


def test_calibration_removes_an_advantage_shared_by_every_slice() -> None:
    rng = np.random.default_rng(1)
    block = rng.normal(0.3, 0.02, size=(12, 729))
    block[:, 5 * 27 : 6 * 27] += 0.5  # coarse block 5 scores high for every slice: a layout bias
    truth = (np.arange(12) % 26) + (np.arange(12) % 26 >= 5)  # never block 5
    for i, label in enumerate(truth):
        block[i, label * 27 : (label + 1) * 27] += 0.1
    scores = aggregations(block)
    assert (scores["max"].argmax(axis=1) == 5).all()
    assert (scores["z, mean"].argmax(axis=1) == truth).all()
    assert (scores["rank, mean"].argmax(axis=1) == truth).all()


def test_blocks_without_a_candidate_are_ignored() -> None:
    block = np.full((4, 729), -1.0)
    block[:, :27] = np.linspace(0.1, 0.4, 4)[:, None]  # only coarse block 0 has candidates
    for name, scores in aggregations(block).items():
        assert (scores.argmax(axis=1) == 0).all(), name
