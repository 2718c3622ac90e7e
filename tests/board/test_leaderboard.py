"""Leaderboards: ranks from paired comparisons (interval overlap where records cannot be paired),
test splits ranked and the others not, idempotent and deterministic regeneration (figures
included), stale-file detection, escaping of record fields, the committed leaderboards matching
the committed submissions, and the HTML page (sorting, navigation) in headless Chromium."""

from __future__ import annotations

import csv
import html
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from atom_bench.board import leaderboard as lb
from atom_bench.board.submissions import submit
from atom_bench.cli import main
from atom_bench.eval import predictions as P
from atom_bench.eval.metrics import METRICS
from atom_bench.eval.scoring import Evaluator
from tests.eval.fixtures import make_predictions, make_tables

REPO = Path(__file__).resolve().parents[2]
META = {
    "model_name": "Net", "authors": ["A <b>&</b> B"], "code_url": "https://example.org/x?a=1&b=2",
    "n_parameters": 10, "training_data": "train", "seeds": [0], "hardware": "cpu",
}  # fmt: skip


def _submit_all(subs: Path, tmp: Path) -> None:
    for track, manifest, accuracies in (("easy", "aa" * 32, (0.9, 0.5, 0.52, 0.1)), ("hard", "bb" * 32, (0.3,)), ("easy", "cc" * 32, (0.4,))):
        labels, volumes, counts = make_tables(n=300, n_volumes=3, seed=len(accuracies))
        ev = Evaluator(labels, volumes, counts, track=track, split="test_seen", manifest_sha256=manifest, dataset_revision="1.0")
        for i, acc in enumerate(accuracies):
            frame = make_predictions(labels, seed=i, accuracy=acc, meta=P.make_meta(track, "test_seen", manifest, "1.0"))
            path = P.write_predictions(frame, tmp / f"{track}-{manifest[:2]}-{i}.parquet")
            submit(path, name=f"{track}-{manifest[:2]}-m{i}", meta={**META, "model_name": f"Net {acc}"}, evaluator=ev, submissions_dir=subs)


@pytest.fixture(scope="module")
def boards(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("lb")
    subs, out = tmp / "submissions", tmp / "leaderboards"
    _submit_all(subs, tmp)
    lb.regenerate(subs, out)
    return subs, out


# -- paired ranks: records whose predictions the tests' own evaluators can pair ---------------------

PAGE_MANIFEST = "ee" * 32


def _paired_arrays(labels, rng: np.random.Generator, accuracy: float) -> dict[str, np.ndarray]:
    """Top-1 predictions only (the pairing needs no more): right with probability ``accuracy``."""
    n = len(labels)
    true = labels["high_label"].to_numpy()
    right = rng.random(n) < accuracy
    high = np.where(right, true, (true + rng.integers(1, 27, n)) % 27)
    low = np.where(right, labels["low_label"].to_numpy(), 27 * high + rng.integers(0, 27, n))
    return {"high": high, "low": low}


def _without_hits(arrays: dict[str, np.ndarray], labels, k: int) -> dict[str, np.ndarray]:
    """The same predictions with ``k`` of their right coarse answers made wrong."""
    out = {key: value.copy() for key, value in arrays.items()}
    rows = np.flatnonzero(out["high"] == labels["high_label"].to_numpy())[:k]
    out["high"][rows] = (out["high"][rows] + 1) % 27
    out["low"][rows] = 27 * out["high"][rows]
    return out


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> dict:
    """One track with test_unseen (6 volumes: volume-level intervals), test_seen (3 volumes) and
    validation. ``A`` is best; ``B`` is ``A`` with 8 hits fewer (paired: worse; intervals overlap);
    ``C`` is ``B`` with 1 hit fewer (not shown to differ); ``D`` is far below."""
    tmp = tmp_path_factory.mktemp("page")
    subs, out = tmp / "submissions", tmp / "leaderboards"
    evaluators = {}
    for split, n_volumes in (("test_unseen", 6), ("test_seen", 3), ("validation", 2)):
        labels, volumes, counts = make_tables(n=400, n_volumes=n_volumes, seed=len(split))
        ev = Evaluator(labels, volumes, counts, track="easy", split=split, manifest_sha256=PAGE_MANIFEST, dataset_revision="1.0")
        evaluators[("easy", split, PAGE_MANIFEST)] = ev
        rng = np.random.default_rng(7)
        a = _paired_arrays(labels, rng, 0.6)
        b = _without_hits(a, labels, 8)
        c = _without_hits(b, labels, 1)
        d = _paired_arrays(labels, rng, 0.1)
        for name, arrays in zip("ABCD", (a, b, c, d)):
            frame = P.to_frame(arrays, labels["sample_id"].to_numpy(), P.make_meta("easy", split, PAGE_MANIFEST, "1.0"))
            path = P.write_predictions(frame, tmp / f"{name}-{split}.parquet")
            meta = {**META, "model_name": f"model {name}", "notes": f"trained 3 epochs\nweights: {name.lower()}-easy.safetensors"}
            if name == "D":
                meta = {**meta, "model_name": "search", "notes": "weights: none"}
            submit(path, name=f"{name.lower()}-{split}", meta=meta, evaluator=ev, submissions_dir=subs)
    evaluator_for = lambda track, split, manifest: evaluators.get((track, split, manifest))
    changed = lb.regenerate(subs, out, evaluator_for=evaluator_for)
    return {"subs": subs, "out": out, "evaluator_for": evaluator_for, "changed": changed, "evaluators": evaluators}


def _csv_rows(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_paired_ranks_tell_apart_what_intervals_cannot(page) -> None:
    rows = _csv_rows(page["out"] / "easy.csv")
    for split in ("test_unseen", "test_seen"):
        table = [r for r in rows if r["split"] == split and r["kind"] == "submission"]
        assert [r["model_name"] for r in table] == ["model A", "model B", "model C", "search"]
        assert [int(r["rank"]) for r in table] == [1, 2, 2, 4], split  # B: 8 hits fewer than A, paired
        assert [r["rank_basis"] for r in table] == ["", "paired", "paired", "paired"]
        b = table[1]
        assert float(b["top1_high_lo"]) < float(table[0]["top1_high"])  # ... though A's and B's intervals overlap
        assert 0 < float(b["above_lo_top1_high"]) <= float(b["above_diff_top1_high"]) == pytest.approx(8 / 400)
        c = table[2]
        assert float(c["above_lo_top1_high"]) <= 0 <= float(c["above_hi_top1_high"])
    md = (page["out"] / "easy.md").read_text()
    assert "paired 95% interval (slice level) of their difference excludes zero" in md and "Ranks: paired comparisons." in md
    html_page = (page["out"] / "index.html").read_text()
    assert "paired 95% interval of their difference excludes zero" in html_page
    assert "differs from the entry above: paired difference +2.0 points" in html_page  # B's rank tooltip


def test_records_that_cannot_be_paired_fall_back_to_interval_overlap(page, tmp_path: Path) -> None:
    out = tmp_path / "o"
    lb.regenerate(page["subs"], out, evaluator_for=lambda *key: None)  # as for a manifest that is not the benchmark's
    rows = [r for r in _csv_rows(out / "easy.csv") if r["split"] == "test_unseen" and r["kind"] == "submission"]
    assert [int(r["rank"]) for r in rows] == [1, 1, 1, 4] and {r["rank_basis"] for r in rows[1:]} == {"overlap"}
    assert "not on the embedded benchmark" in (out / "index.html").read_text()
    assert "Ranks: interval overlap \u2020 (not pairable)." in (out / "easy.md").read_text()
    assert "| 1\u2020 | model B" in (out / "easy.md").read_text()
    # the default evaluators are the embedded benchmark's, whose manifest these records are not on
    assert "easy.csv" in lb.stale(page["subs"], page["out"])
    # a stored prediction file that no longer matches its record is not paired either
    subs = tmp_path / "s"
    shutil.copytree(page["subs"], subs)
    (subs / "easy" / "b-test_unseen" / "predictions.parquet").write_bytes(b"changed")
    lb.regenerate(subs, tmp_path / "o2", evaluator_for=page["evaluator_for"])
    rows = [r for r in _csv_rows(tmp_path / "o2" / "easy.csv") if r["split"] == "test_unseen" and r["kind"] == "submission"]
    assert [r["rank_basis"] for r in rows] == ["", "overlap", "overlap", "paired"]
    assert "\u2020 marks a rank from interval overlap" in (tmp_path / "o2" / "index.html").read_text()


def test_only_test_splits_are_ranked(page) -> None:
    rows = _csv_rows(page["out"] / "easy.csv")
    assert {r["split"]: r["ranked"] for r in rows} == {"test_unseen": "yes", "test_seen": "yes", "validation": "no"}
    assert all(r["rank"] == "" for r in rows if r["split"] == "validation")
    md = (page["out"] / "easy.md").read_text()
    assert "## validation (dataset 1.0, manifest eeeeeeeeeeee), not ranked" in md
    html_page = (page["out"] / "index.html").read_text()
    details = html_page[html_page.index('<details id="easy-unranked">'):html_page.index("</details>")]
    assert 'id="lb-easy-validation"' in details and ">rank</th>" not in details
    assert 'id="lb-easy-validation"' not in html_page.replace(details, "")


def test_models_are_shown_with_their_weights(page) -> None:
    html_page = (page["out"] / "index.html").read_text()
    assert '<small class="w">a-easy.safetensors</small>' in html_page and 'title="entry: a-test_unseen"' in html_page
    assert ">a-test_unseen<" not in html_page  # the entry name is a tooltip, not the label
    md = (page["out"] / "easy.md").read_text()
    assert "| model A (a-easy.safetensors) | a-test_unseen |" in md and "| search | d-test_unseen |" in md
    rows = _csv_rows(page["out"] / "easy.csv")
    assert {r["weights"] for r in rows if r["kind"] == "submission"} == {"a-easy.safetensors", "b-easy.safetensors", "c-easy.safetensors", ""}


def test_sort_directions_come_from_the_specs(page) -> None:
    html_page = (page["out"] / "index.html").read_text()
    table = html_page[html_page.index('id="lb-easy-test_seen"'):]
    heads = re.findall(r"<th([^>]*)>([^<]*)</th>", table[: table.index("</thead>")])
    by_text = {html.unescape(text): attrs for attrs, text in heads}
    for spec in lb.BOARD_METRICS:
        assert f'data-higher-is-better="{int(spec.higher_is_better)}"' in by_text[lb.T.header(spec)], spec.name
    assert 'data-higher-is-better="0"' in by_text["rank"] and "data-higher-is-better" not in by_text["model"]
    assert "volume-swap drop (coarse), points" in by_text and not any(t.startswith("volume-swap") and t.endswith("%") for t in by_text)
    assert "white-space:nowrap" in html_page


def test_volume_level_intervals_beside_the_slice_level_ones(page) -> None:
    html_page = (page["out"] / "index.html").read_text()
    unseen = html_page[html_page.index('id="lb-easy-test_unseen"'):html_page.index('id="lb-easy-test_seen"')]
    assert "volume-level 95% CI</th>" in unseen  # 6 volumes: the scores have cluster-bootstrap intervals
    seen = html_page[html_page.index('id="lb-easy-test_seen"'):]
    assert "volume-level 95% CI</th>" not in seen  # test_seen: slice level is the claim
    rows = [r for r in _csv_rows(page["out"] / "easy.csv") if r["split"] == "test_unseen" and r["kind"] == "submission"]
    assert all(r["n_volumes"] == "6" and float(r["vol_lo_top1_high"]) <= float(r["top1_high"]) <= float(r["vol_hi_top1_high"]) for r in rows)
    md = (page["out"] / "easy.md").read_text()
    assert "volume-level 95% CI" in md
    # below 5 volumes: one note per table, not a cell per entry
    records = lb.load_records(page["subs"])
    for rec in records:
        if rec["metadata"]["split"] == "test_unseen":
            rec["scores"]["volume_level"] = {"n_volumes": 2, "note": "not meaningful with 2 volume(s); needs at least 5"}
    groups = lb._groups(records, evaluator_for=page["evaluator_for"])
    text = lb.render_html(groups)
    unseen = text[text.index('id="easy-test_unseen"'):text.index('id="lb-easy-test_seen"')]
    assert "volume-level 95% CI</th>" not in unseen and unseen.count("n/a (&lt;5 volumes: 2)") == 1


def test_figures_are_written_embedded_and_deterministic(page, tmp_path: Path) -> None:
    from atom_bench.board import figures as F

    out = page["out"]
    assert sorted(p.name for p in out.iterdir()) == ["easy.csv", "easy.md", "easy.png", "index.html"]
    png = (out / "easy.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and b"Software" not in png and b"Matplotlib" not in png
    assert re.findall(r'<img src="([^"]+)"', (out / "index.html").read_text()) == ["easy.png"]
    # twice in one process and in a fresh folder: the same bytes, so --check stays stable
    again = lb.expected_files(page["subs"], evaluator_for=page["evaluator_for"])
    assert again["easy.png"] == png
    assert lb.regenerate(page["subs"], out, evaluator_for=page["evaluator_for"]) == []
    assert lb.stale(page["subs"], out, evaluator_for=page["evaluator_for"]) == []
    assert lb.stale(page["subs"], out, evaluator_for=page["evaluator_for"]) == []
    table = F.figure_table(lb._groups(lb.load_records(page["subs"]), evaluator_for=page["evaluator_for"])["easy"])
    assert table["split"] == "test_unseen" and F.render_figure("easy", table) == png


def test_figures_draw_record_fields_as_plain_text(page) -> None:
    from atom_bench.board import figures as F

    table = F.figure_table(lb._groups(lb.load_records(page["subs"]), evaluator_for=page["evaluator_for"])["easy"])
    for row, text in zip(table["rows"], ("$x$", "$\\frac{", "<script>alert(1)</script>", "a\u202eb\x00" + "x" * 80)):
        row["metadata"] = {**row["metadata"], "model_name": text}
    assert F.render_figure("easy\n$", table).startswith(b"\x89PNG")  # unbalanced mathtext would raise


def test_check_is_stable_when_run_twice(page, tmp_path: Path) -> None:
    """``atom-bench leaderboard`` then ``--check`` twice (figures included): nothing drifts."""
    args = ["--submissions", str(page["subs"]), "--out", str(tmp_path / "o")]
    assert main(["leaderboard", *args]) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "o").iterdir()}
    assert "easy.png" in before
    assert main(["leaderboard", "--check", *args]) == 0 and main(["leaderboard", "--check", *args]) == 0
    assert main(["leaderboard", *args]) == 0 and {p.name: p.read_bytes() for p in (tmp_path / "o").iterdir()} == before


def test_overlap_ranks() -> None:
    """The fallback rule: an entry shares the rank of the one above it while their intervals overlap."""
    assert lb.overlap_ranks([0.9, 0.5], [0.89, 0.4], [0.91, 0.6]) == [1, 2]
    assert lb.overlap_ranks([0.9, 0.8, 0.5, 0.4], [0.85, 0.75, 0.45, 0.2], [0.95, 0.86, 0.55, 0.46]) == [1, 1, 3, 3]
    # neighbours only: a wide interval below does not pull an entry above a gap into its rank
    assert lb.overlap_ranks([0.85, 0.65, 0.62], [0.8, 0.6, 0.3], [0.9, 0.7, 0.95]) == [1, 2, 2]
    assert lb.overlap_ranks([], [], []) == []


def test_chained_ranks() -> None:
    assert lb.chained_ranks([False, True, False, False, True]) == [1, 2, 2, 2, 5]
    assert lb.chained_ranks([False, False, False]) == [1, 1, 1] and lb.chained_ranks([]) == []


def test_files_and_tables(boards) -> None:
    _, out = boards
    assert sorted(p.name for p in out.iterdir()) == ["easy.csv", "easy.md", "hard.csv", "hard.md", "index.html"]
    md = (out / "easy.md").read_text()
    assert md.count("## test_seen") == 2  # two dataset manifests never share a table
    rows = list(csv.DictReader(io.StringIO((out / "easy.csv").read_text())))
    aa = [r for r in rows if r["manifest_sha256"] == "aa" * 32]
    subs_rows = [r for r in aa if r["kind"] == "submission"]
    assert [r["name"] for r in subs_rows] == ["easy-aa-m0", "easy-aa-m2", "easy-aa-m1", "easy-aa-m3"]
    ranks = [int(r["rank"]) for r in subs_rows]
    assert ranks[0] == 1 and ranks[1] == ranks[2] == 2 and ranks[3] == 4  # 0.50 and 0.52 overlap
    assert {r["name"] for r in aa if r["kind"] == "floor"} == {"chance", "prior"}
    for r in subs_rows:
        assert float(r["top1_high_lo"]) <= float(r["top1_high"]) <= float(r["top1_high_hi"])


def test_regeneration_is_idempotent(boards, tmp_path: Path) -> None:
    subs, out = boards
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert lb.regenerate(subs, out) == []
    assert lb.stale(subs, out) == []
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    copy = tmp_path / "lb"
    shutil.copytree(out, copy)
    assert lb.regenerate(subs, copy) == [] and lb.expected_files(subs) == lb.expected_files(subs)


def test_stale_files_are_detected_and_fixed(boards, tmp_path: Path) -> None:
    subs, out = boards
    work_subs, work_out = tmp_path / "s", tmp_path / "o"
    shutil.copytree(subs, work_subs)
    shutil.copytree(out, work_out)
    shutil.rmtree(work_subs / "hard")
    (work_out / "easy.md").write_text("edited by hand\n")
    assert lb.stale(work_subs, work_out) == ["easy.md", "index.html", "hard.csv", "hard.md"]
    assert main(["leaderboard", "--check", "--submissions", str(work_subs), "--out", str(work_out)]) == 2
    assert main(["leaderboard", "--submissions", str(work_subs), "--out", str(work_out)]) == 0
    assert main(["leaderboard", "--check", "--submissions", str(work_subs), "--out", str(work_out)]) == 0
    assert not (work_out / "hard.md").exists()


def test_html_is_self_contained(boards) -> None:
    html = (boards[1] / "index.html").read_text()
    assert "<table" in html and "<script>" in html
    assert not re.search(r"<(link|img|iframe)\b|\bsrc=|@import|url\(", html)
    assert "A <b>" not in html  # metadata is escaped


def test_committed_leaderboards_match_committed_submissions() -> None:
    bad = lb.stale(REPO / "submissions", REPO / "leaderboards")
    assert bad == [], f"run `atom-bench leaderboard` and commit leaderboards/ (stale: {bad})"


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def browser():
    found = _chromium()
    if found is None:
        pytest.skip("chromium and chromedriver not installed (Debian: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install selenium)")
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1400,1000"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=found[1]), options=options)
    yield driver
    driver.quit()


def _column(table, index: int) -> list[str]:
    from selenium.webdriver.common.by import By

    return [r.find_elements(By.TAG_NAME, "td")[index].get_attribute("data-v") for r in table.find_elements(By.CSS_SELECTOR, "tbody:first-of-type tr")]


def test_html_opens_in_headless_chromium(boards, browser) -> None:
    from selenium.webdriver.common.by import By

    browser.get((boards[1] / "index.html").as_uri())
    tables = browser.find_elements(By.CSS_SELECTOR, "table.lb")
    assert len(tables) == 3
    first = tables[0]
    models = [r.find_elements(By.TAG_NAME, "td")[1].text for r in first.find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert "Net 0.9" in models and "floor: uniform chance" in models and "floor: training prior" in models
    entries = [r.find_elements(By.TAG_NAME, "td")[1].get_attribute("title") for r in first.find_elements(By.CSS_SELECTOR, "tbody tr.submission")]
    assert "entry: easy-aa-m0" in entries  # the entry's name, as a tooltip
    first.find_elements(By.TAG_NAME, "th")[1].click()  # sort by model: text, ascending
    after = _column(first, 1)
    assert after == sorted(after) and len(after) == 4
    floors = [r.find_elements(By.TAG_NAME, "td")[1].text for r in first.find_elements(By.CSS_SELECTOR, "tbody.floors tr")]
    assert sorted(floors) == ["floor: training prior", "floor: uniform chance"]  # floors stay at the bottom


def test_html_sorts_best_first_and_navigates(page, browser) -> None:
    from selenium.webdriver.common.by import By

    browser.get((page["out"] / "index.html").as_uri())
    table = browser.find_element(By.ID, "lb-easy-test_unseen")
    heads = table.find_elements(By.CSS_SELECTOR, "thead th")
    texts = [h.text.replace("\n", " ") for h in heads]

    def values(i: int) -> list[float]:
        return [float(v) for v in _column(table, i) if v != ""]

    top1 = texts.index(lb.T.header(METRICS["top1_high"]))
    heads[top1].click()  # higher is better: first click best first, descending
    assert values(top1) == sorted(values(top1), reverse=True) and heads[top1].get_attribute("aria-sort") == "descending"
    heads[top1].click()
    assert values(top1) == sorted(values(top1)) and heads[top1].get_attribute("aria-sort") == "ascending"
    error = texts.index(lb.T.header(METRICS["dist_mm_median"]))
    heads[error].click()  # lower is better: first click ascending
    assert values(error) == sorted(values(error)) and len(values(error)) == 4
    assert heads[top1].get_attribute("aria-sort") is None
    heads[0].click()  # rank: ascending
    assert values(0) == sorted(values(0))
    # navigation: every contents link points at an element of the page, and following one scrolls to it
    links = browser.find_elements(By.CSS_SELECTOR, "nav.toc a")
    targets = [a.get_attribute("href").split("#", 1)[1] for a in links]
    assert {"easy", "easy-figure", "easy-test_unseen", "easy-test_seen", "easy-unranked", "legend"} <= set(targets)
    assert all(browser.execute_script("return document.getElementById(arguments[0]) !== null", t) for t in targets)
    where = "return document.getElementById('easy-test_seen').getBoundingClientRect().top"
    browser.execute_script("window.scrollTo(0, 0)")
    before, height = browser.execute_script(where), browser.execute_script("return window.innerHeight")
    assert before > height  # below the fold: the link has to scroll
    next(a for a in links if a.get_attribute("href").endswith("#easy-test_seen")).click()
    top = browser.execute_script(where)
    assert browser.execute_script("return location.hash") == "#easy-test_seen" and 0 <= top < height - 40  # in view (the page may end before it reaches the top)
    # validation is collapsed, without ranks, until opened
    details = browser.find_element(By.ID, "easy-unranked")
    hidden = details.find_element(By.CSS_SELECTOR, "table.lb")
    assert not hidden.is_displayed()
    details.find_element(By.TAG_NAME, "summary").click()
    assert hidden.is_displayed() and hidden.find_elements(By.TAG_NAME, "th")[0].text == "model"
    image = browser.find_element(By.CSS_SELECTOR, "figure img")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) == 1100


# -- hostile records ---------------------------------------------------------------------------

NASTY = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "| injected | cells |",
    "`code` *bold* _em_ ~strike~ $x$",
    "[click](javascript:alert(1))",
    "# heading",
    "![img](https://evil.example/x.png)",
    '=HYPERLINK("https://evil.example","click")',
    "+1+1",
    "-2+3",
    "@SUM(1;2)",
    "&lt;b&gt; &amp; back\\slash",
]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[Path, Path]:
    """Records with every kind of markup in their metadata, plus hand-edited ones with control
    characters and bad links (``submit`` refuses those; a pull request could still add them)."""
    import json

    tmp = tmp_path_factory.mktemp("hostile")
    subs, out = tmp / "submissions", tmp / "leaderboards"
    labels, volumes, counts = make_tables(n=120, n_volumes=3, seed=9)
    ev = Evaluator(labels, volumes, counts, track="easy", split="test_seen", manifest_sha256="dd" * 32, dataset_revision="1.0")
    frame = make_predictions(labels, seed=1, accuracy=0.5, meta=P.make_meta("easy", "test_seen", "dd" * 32, "1.0"))
    path = P.write_predictions(frame, tmp / "p.parquet")
    for i, text in enumerate(NASTY):
        meta = {**META, "model_name": text, "authors": [text], "training_data": text, "hardware": text, "seeds": [-1, i]}
        submit(path, name=f"m{i}", meta=meta, evaluator=ev, submissions_dir=subs)
    for name, extra in (("evil\n| x | y |", {"model_name": "two\n# lines\r\n<b>x</b>", "code_url": "javascript:alert(1)"}),
                        ("quote", {"code_url": 'https://x.example/"onmouseover="alert(1)\'<x>', "date": "\u2028<i>"})):  # fmt: skip
        folder = subs / "easy" / name
        shutil.copytree(subs / "easy" / "m0", folder)
        record = json.loads((folder / "metadata.json").read_text())
        (folder / "metadata.json").write_text(json.dumps({**record, "name": name, **extra}))
    lb.regenerate(subs, out)
    return subs, out


def _unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def test_markdown_fields_are_inert(hostile) -> None:
    md = (hostile[1] / "easy.md").read_text()
    lines = md.splitlines()
    head = next(line for line in lines if line.startswith("| rank"))
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 2 + len(NASTY) + 2 + 2  # header, rule, submissions, hand-edited records, floors
    assert all(_unescaped_pipes(line) == _unescaped_pipes(head) for line in table)
    assert all(line.endswith(" |") for line in table if not line.startswith("|---"))
    assert [line for line in lines if line.startswith("#")] == ["# ATOM-Bench leaderboard: easy", f"## test_seen (dataset 1.0, manifest {'dd' * 6})"]
    records = lb.load_records(hostile[0])  # the same records with tame fields give as many lines
    own = ("track", "split", "name", "manifest_sha256", "dataset_revision", "predictions_file", "predictions_sha256")
    for rec in records:
        rec["metadata"] = {k: v if k in own or not isinstance(v, (str, list)) else "x" for k, v in rec["metadata"].items()}
    tame = lb.render_markdown("easy", lb._groups(records)["easy"]).splitlines()
    assert len(lines) == len(tame) and sum(line.startswith("|") for line in tame) == len(table)  # no line was added by a field
    assert not re.search(r"(?<!\\)\]\(", md)  # no link or image: every bracket is escaped
    for bad in ("<script", "<img", "<b>", "<i>", "`code`", "*bold*", " _em_", "~strike~", "$x$", "\u2028", "\r"):
        assert bad not in md, bad
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md and "&amp;lt;b&amp;gt;" in md and "back\\\\slash" in md
    assert "evil\ufffd\\| x \\| y \\|" in md  # a newline in a name is shown, not obeyed


def test_html_fields_are_inert(hostile) -> None:
    page = (hostile[1] / "index.html").read_text()
    assert page.count("<script") == 1 and "<img" not in page and "<b>" not in page and "<i>" not in page
    hrefs = re.findall(r"<a ([^>]*)>", page)
    outside = [h for h in hrefs if not re.fullmatch(r'href="#[A-Za-z0-9_.-]+"', h)]  # the page's own anchors
    assert outside and all(re.fullmatch(r'href="https://[^"<>\s]+"', h) for h in outside), outside
    assert "javascript:" not in "".join(hrefs) and "onmouseover=&quot;" in page  # quoted, not an attribute
    assert "\n| x" not in page and "\u2028" not in page


def test_csv_cells_are_not_formulas(hostile) -> None:
    text = (hostile[1] / "easy.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(NASTY) + 2 + 2
    cells = [v for r in rows for k, v in r.items() if k in ("name", "model_name", "authors", "training_data", "hardware", "seeds", "code_url")]
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))]
    by_name = {r["name"]: r for r in rows}
    assert by_name["m7"]["model_name"] == "'" + NASTY[7] and by_name["m9"]["hardware"] == "'-2+3" and by_name["m0"]["seeds"] == "'-1;0"
    assert by_name["m0"]["n_parameters"] == "10" and float(by_name["m0"]["top1_high"]) > 0
    assert lb._csv(-0.25) == -0.25 and lb._csv(-3) == -3 and lb._csv("-0.25") == "'-0.25" and lb._csv("ok") == "ok"


def test_regenerate_reads_the_records_once_under_the_submit_lock(boards, tmp_path: Path, monkeypatch) -> None:
    subs, _ = boards
    events: list[str] = []

    class FakeLock:
        def __init__(self, path) -> None:
            events.append(f"lock {Path(path).name}")

        def __enter__(self) -> None:
            events.append("acquire")

        def __exit__(self, *exc) -> None:
            events.append("release")

    real = lb.load_records
    monkeypatch.setattr(lb, "submissions_lock", FakeLock)
    monkeypatch.setattr(lb, "load_records", lambda d: events.append("read") or real(d))
    assert lb.regenerate(subs, tmp_path / "out")
    assert events == [f"lock {subs.name}", "acquire", "read", "release"]
    events.clear()
    assert lb.regenerate(subs, tmp_path / "out", lock=False) == [] and events == ["read"]


def test_regenerate_waits_for_a_submit_in_progress(boards, tmp_path: Path) -> None:
    import threading
    import time

    from atom_bench.board.submissions import submissions_lock

    work = tmp_path / "s"
    shutil.copytree(boards[0], work)
    done: list[float] = []
    with submissions_lock(work):
        worker = threading.Thread(target=lambda: done.append(len(lb.regenerate(work, tmp_path / "out"))))
        worker.start()
        time.sleep(0.5)
        assert not done  # blocked on the lock
    worker.join(60)
    assert done and done[0] > 0


def test_a_full_disk_changes_no_leaderboard_file(boards, tmp_path: Path, monkeypatch) -> None:
    import builtins
    import errno

    subs, out = boards
    work_subs, work_out = tmp_path / "s", tmp_path / "o"
    shutil.copytree(subs, work_subs)
    shutil.copytree(out, work_out)
    shutil.rmtree(work_subs / "hard")
    (work_out / "easy.md").write_text("edited by hand\n")
    before = {p.name: p.read_bytes() for p in work_out.iterdir()}
    real_open = builtins.open

    def full_disk(file, mode="r", *args, **kwargs):
        if "w" in mode and Path(file).name == "index.html":
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full_disk)
    with pytest.raises(OSError, match="No space left"):
        lb.regenerate(work_subs, work_out)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in work_out.iterdir()} == before  # no file changed, nothing left over
    assert lb.regenerate(work_subs, work_out) == ["easy.md", "index.html", "hard.csv", "hard.md"]
    assert sorted(p.name for p in work_out.iterdir()) == ["easy.csv", "easy.md", "index.html"]


def test_leftover_staging_folders_of_killed_runs_are_removed(boards, tmp_path: Path) -> None:
    subs, _ = boards
    out = tmp_path / "o"
    out.mkdir()
    (out / ".leaderboard.999999999.abc.tmp").mkdir()  # a process id that does not run
    lb.regenerate(subs, out)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_leaderboards_honour_the_umask(boards, tmp_path: Path, umask: int, mode: int) -> None:
    import os

    old = os.umask(umask)
    try:
        lb.regenerate(boards[0], tmp_path / "o")
    finally:
        os.umask(old)
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "o").iterdir()} == {mode}
