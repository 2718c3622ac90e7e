"""Per-sample metrics against hand-computed cases, the paper metrics against a literal
re-implementation of the released code's definitions (original-atom-spec.md section 7), and the
metric registry against the scorer and the leaderboards that read it."""

from __future__ import annotations

import csv
import io
import re

import numpy as np
import pytest

from atom_bench.board import leaderboard as lb
from atom_bench.core import labels as L
from atom_bench.data.benchmark import Benchmark
from atom_bench.data.labels_file import SCORED_COLUMNS
from atom_bench.eval import metrics as M
from atom_bench.eval import predictions as P
from atom_bench.eval.scoring import Evaluator
from tests.eval.fixtures import make_predictions, make_tables


def test_topk_hit_by_hand() -> None:
    true = np.array([3, 4, 5])
    assert M.topk_hit(true, np.array([3, 0, 5])).tolist() == [True, False, True]
    ranked = np.array([[1, 2, 3, 4, 0], [4, 1, 2, 3, 5], [0, 1, 2, 3, 4]])
    assert M.topk_hit(true, ranked).tolist() == [True, True, False]


def test_block_centre_by_hand() -> None:
    # size 9: fine cell f has centre (f + 0.5) * 9 / 9 - 0.5 = f voxels; cell (1, 2, 3):
    # coarse (0, 0, 1) -> high 1, sub-block (1, 2, 0) -> low 27 + 9 + 6 + 0 = 42
    assert L.low_label(np.array([1.0, 2.0, 3.0]), 9) == 42
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [10.0, 0.0, -5.0]
    got = M.block_centers_mm(np.array([42, 0]), np.array([0, 0]), np.array([9]), affine[None])
    np.testing.assert_allclose(got, [[12.0, 4.0, 1.0], [10.0, 0.0, -5.0]])


def test_block_centres_several_volumes_and_sizes() -> None:
    affines = np.stack([np.eye(4), np.eye(4)])
    affines[1, :3, 3] = 100.0
    got = M.block_centers_mm(np.array([728, 728]), np.array([0, 1]), np.array([9, 18]), affines)
    np.testing.assert_allclose(got, [[8.0, 8.0, 8.0], [116.5, 116.5, 116.5]])  # 8.5 * 18 / 9 - 0.5 + 100


def test_distance_by_hand() -> None:
    d = M.center_distance_mm(np.array([[0.0, 0, 0], [1, 1, 1]]), np.array([[3.0, 4, 0], [1, 1, 1]]))
    np.testing.assert_allclose(d, [5.0, 0.0])


def test_plane_angle_by_hand() -> None:
    n = np.array([[0.0, 0, 1]] * 5)
    m = np.array([[0.0, 0, 1], [0, 0, -1], [1, 0, 0], [0, 1, 1], [0, 0, 7]])
    np.testing.assert_allclose(M.plane_angle_deg(n, m), [0.0, 0.0, 90.0, 45.0, 0.0], atol=1e-9)


def test_multihot_contains() -> None:
    for rows in ([[1, 2], [], [26], [0, 5]], [[1, 200], [], [728], [0, 5]]):
        m = M.MultiHot.from_lists(rows)
        q = np.array([[rows[0][1], 0], [1, 2], [rows[2][0], -1], [5, 3]])
        assert m.contains(q).tolist() == [[True, False], [False, False], [True, False], [True, False]]
    empty = M.MultiHot.from_lists([[], []])
    assert not empty.contains(np.array([0, 5])).any()
    # a negative query never aliases the previous row's last label
    m = M.MultiHot.from_lists([[728], [3]])
    assert m.contains(np.array([728, -1])).tolist() == [True, False]


def _case(p5, g, s, low5, high=None, low=None):
    """One sample: coarse top-5, positive coarse blocks, positive (block, sub-block) pairs, fine top-5."""
    high = p5[0] if high is None else high
    low = low5[0] if low is None else low
    ph = M.MultiHot.from_lists([sorted(g)])
    pl = M.MultiHot.from_lists([sorted(27 * a + b for a, b in s)])
    got = M.paper_hits(ph, pl, np.array([high]), np.array([low]), np.array([p5]), np.array([low5]))
    return {k: bool(v[0]) for k, v in got.items()}


def test_paper_metrics_by_hand() -> None:
    # P5 = 3,5,7,1,2; G = {5, 7}; S_5 = {2}: the released metric picks block 5 (first of P5 in G)
    hit = _case([3, 5, 7, 1, 2], {5, 7}, {(5, 2)}, [3 * 27, 5 * 27 + 2, 1, 2, 4])
    assert hit == {"paper_acc1": True, "paper_acc": True, "paper_acc_noleak": False, "paper_acck1": False}
    # the fine hit is in block 7, but the released metric looks only at block 5 (first in G)
    miss = _case([3, 5, 7, 1, 2], {5, 7}, {(7, 4)}, [3 * 27, 7 * 27 + 4, 1, 2, 4])
    assert miss["paper_acc1"] and not miss["paper_acc"]
    # top-1 right at both levels
    top1 = _case([5, 0, 1, 2, 3], {5}, {(5, 0)}, [5 * 27, 1, 2, 3, 4])
    assert top1 == {"paper_acc1": True, "paper_acc": True, "paper_acc_noleak": True, "paper_acck1": True}
    # top-1 block right, top-1 sub-block wrong, second fine guess right
    second = _case([5, 0, 1, 2, 3], {5}, {(5, 9)}, [5 * 27, 5 * 27 + 9, 2, 3, 4])
    assert second == {"paper_acc1": True, "paper_acc": True, "paper_acc_noleak": True, "paper_acck1": False}
    # empty labels (a corner outside the cube): every metric misses
    empty = _case([5, 0, 1, 2, 3], set(), set(), [5 * 27, 1, 2, 3, 4])
    assert not any(empty.values())


def _released(p5, p1, q_ranked, g, s_pairs):
    """Literal reading of spec section 7 for one sample (an independent implementation)."""
    chosen, correct = p1, False
    for a in p5:  # first element of P5 that is in G
        if a in g:
            chosen, correct = a, True
            break
    sub_preds = [q % 27 for q in q_ranked if q // 27 == chosen]  # model3's ranking on block `chosen`
    s = {b for (a, b) in s_pairs if a == chosen} if correct else {-1}
    acc1 = any(a in g for a in p5)
    acc = acc1 and any(b in s for b in sub_preds[:5])
    s1 = {b for (a, b) in s_pairs if a == p1}
    p1_subs = [q % 27 for q in q_ranked if q // 27 == p1]
    acck1 = p1 in g and bool(p1_subs) and p1_subs[0] in s1
    noleak = p1 in g and any(b in s1 for b in p1_subs)
    return {"paper_acc1": acc1, "paper_acc": acc, "paper_acck1": acck1, "paper_acc_noleak": noleak}


@pytest.mark.parametrize("seed", range(3))
def test_paper_metrics_match_independent_implementation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 3000
    p5 = np.stack([rng.permutation(27)[:5] for _ in range(n)])
    # bias towards hits so that every branch is exercised
    g = [set(rng.choice(27, size=rng.integers(0, 5), replace=False).tolist()) | ({int(p5[i, rng.integers(5)])} if rng.random() < 0.5 else set()) for i in range(n)]
    s = [{(a, int(b)) for a in gi for b in rng.choice(27, size=rng.integers(0, 6), replace=False)} for gi in g]
    low5 = np.empty((n, 5), dtype=np.int64)
    for i in range(n):
        blocks = rng.choice(p5[i], size=5)  # fine guesses in (mostly) predicted coarse blocks
        blocks[0] = p5[i, 0]
        row = 27 * blocks + rng.integers(0, 27, 5)
        while len(set(row.tolist())) < 5:
            row[1:] = 27 * blocks[1:] + rng.integers(0, 27, 4)
        low5[i] = row
    ph = M.MultiHot.from_lists([sorted(x) for x in g])
    pl = M.MultiHot.from_lists([sorted(27 * a + b for a, b in x) for x in s])
    got = M.paper_hits(ph, pl, p5[:, 0], low5[:, 0], p5, low5)
    want = [_released(p5[i].tolist(), int(p5[i, 0]), low5[i].tolist(), g[i], s[i]) for i in range(n)]
    for key in ("paper_acc1", "paper_acc", "paper_acck1", "paper_acc_noleak"):
        expected = np.array([w[key] for w in want])
        assert (got[key] == expected).all(), key
        assert 0 < expected.sum() < n, key  # the random cases hit and miss


def test_paper_metrics_without_top5() -> None:
    ph = M.MultiHot.from_lists([[5], [5]])
    pl = M.MultiHot.from_lists([[5 * 27 + 1], [5 * 27 + 1]])
    got = M.paper_hits(ph, pl, np.array([5, 5]), np.array([5 * 27 + 1, 5 * 27 + 2]))
    assert set(got) == {"paper_acck1"}
    assert got["paper_acck1"].tolist() == [True, False]


# -- the registry -----------------------------------------------------------------------------

RELIANCE_SCORES = {"volume_reliance": {mode: {"drop_high": {"value": 0.1, "ci": [0.0, 0.2], "n": 9}} for mode in ("swapped", "blank")}}


@pytest.fixture(scope="module")
def registry_tables():
    return make_tables(n=240, n_volumes=3, seed=7)


def test_every_requirement_names_a_column_its_source_provides() -> None:
    provided = {
        "pred": set(P.COLUMNS),
        "labels": set(SCORED_COLUMNS),
        "volumes": set(Benchmark.open().volumes_table("easy").columns),
        "diagnostic": set(RELIANCE_SCORES),
    }
    assert set(provided) == set(M.REQUIREMENT_SOURCES)
    for spec in M.METRICS.values():
        assert spec.requires, spec.name
        for source, column in spec.columns:
            assert column in provided[source], f"{spec.name}: {source}:{column}"


def test_specs_without_compute_are_the_diagnostic_metrics() -> None:
    from atom_bench.models.run import reliance_metrics

    external = {name for name, spec in M.METRICS.items() if spec.compute is None}
    assert external == set(reliance_metrics(RELIANCE_SCORES))
    assert all(source == "diagnostic" for name in external for source, _ in M.METRICS[name].columns)
    assert set(M.COMPUTED_METRICS) == set(M.METRICS) - external


def test_full_evaluation_computes_every_computed_spec(registry_tables) -> None:
    labels, volumes, counts = registry_tables
    result = Evaluator(labels, volumes, counts).evaluate(make_predictions(labels, pose=True), floors=False)
    assert list(result["metrics"]) == list(M.COMPUTED_METRICS)
    assert result["skipped"] == {}
    for name, spec in M.COMPUTED_METRICS.items():
        if spec.unit == "fraction":
            assert 0.0 <= result["metrics"][name]["value"] <= 1.0, name


def test_missing_high_top5_skips_exactly_the_specs_that_require_it(registry_tables) -> None:
    labels, volumes, counts = registry_tables
    pred = make_predictions(labels, pose=True).drop(columns=["high_top5"])
    result = Evaluator(labels, volumes, counts).evaluate(pred, floors=False)
    needs = {name for name, spec in M.COMPUTED_METRICS.items() if "pred:high_top5" in spec.requires}
    assert {"top5_high", "paper_acc1", "paper_acc"} <= needs
    assert result["skipped"] == dict.fromkeys(needs, "no high_top5 in the predictions")
    assert set(result["metrics"]) == set(M.COMPUTED_METRICS) - needs


def test_skip_reasons_are_derived_from_unmet_requirements() -> None:
    have = {"pred:high", "pred:low", "labels:high_label", "labels:low_label", "labels:center_mm", "labels:normal_mm"}
    reasons = {name: spec.skip_reason(have) for name, spec in M.COMPUTED_METRICS.items()}
    assert reasons["top1_high"] is None and reasons["top1_low"] is None
    assert reasons["top5_low"] == "no low_top5 in the predictions"
    assert reasons["paper_acck1"] == "no paper_high/paper_low in the labels"  # unmet columns of one source together
    assert reasons["paper_acc"] == "no high_top5/low_top5 in the predictions"  # the first unmet source decides
    assert reasons["angle_deg_mean"] == "no normal_mm in the predictions"
    assert reasons["dist_mm_median"] == "neither center_mm in the predictions nor affine in the volumes table"
    assert M.METRICS["dist_mm_median"].skip_reason(have | {"volumes:affine"}) is None
    assert M.METRICS["dist_mm_median"].skip_reason(have | {"pred:center_mm"}) is None
    with pytest.raises(ValueError, match="not 'source:column'"):
        M.MetricSpec("x", None, ("somewhere:else",), "mean", True, "x", "mm")


def test_leaderboard_columns_come_from_the_specs() -> None:
    names = [name for name, spec in M.METRICS.items() if spec.leaderboard_header is not None]
    assert [spec.name for spec in lb.BOARD_METRICS] == names and "volume_swap_drop_high" in names
    headers = [spec.leaderboard_header for spec in lb.BOARD_METRICS]
    assert "volume-swap drop (coarse), points" in headers  # a difference of two percentages
    table = {"split": "test_seen", "manifest": "ab" * 32, "revision": "1.0", "rows": []}
    md = lb.render_markdown("easy", [table])
    assert f"| rank | model | entry | {' | '.join(headers)} | params | date |" in md.splitlines()
    assert f"Ranked by {M.METRICS[lb.RANK_METRIC].leaderboard_header};" in md
    head = next(csv.reader(io.StringIO(lb.render_csv("easy", [table]))))
    assert [c for c in head if c.endswith("_lo")] == [f"{name}_lo" for name in names]
    html = lb.render_html({"easy": [table]})
    ths = re.findall(r'<th data-higher-is-better="([01])"[^>]*>(.*?)</th>', html)
    assert ths[1:] == [(str(int(spec.higher_is_better)), h.replace("<", "&lt;")) for spec, h in zip(lb.BOARD_METRICS, headers)]


def test_shared_intermediates_are_computed_once_per_evaluation(registry_tables, monkeypatch) -> None:
    labels, volumes, counts = registry_tables
    calls = {"paper_hits": 0, "center_distance_mm": 0}
    for name in calls:
        real = getattr(M, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(M, name, counted)
    values = Evaluator(labels, volumes, counts).per_sample(P.frame_arrays(make_predictions(labels, pose=True)))
    assert calls == {"paper_hits": 1, "center_distance_mm": 1}
    assert values["dist_mm_mean"] is values["dist_mm_median"]
