"""Leaderboards: ranks that respect intervals, idempotent regeneration, stale-file detection,
the committed leaderboards matching the committed submissions, and the HTML page in Chromium."""

from __future__ import annotations

import csv
import io
import re
import shutil
from pathlib import Path

import pytest

from atom_bench.board import leaderboard as lb
from atom_bench.eval import predictions as P
from atom_bench.cli import main
from atom_bench.eval.scoring import Evaluator
from atom_bench.board.submissions import submit
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


def test_overlap_ranks() -> None:
    assert lb.overlap_ranks([0.9, 0.5], [0.89, 0.4], [0.91, 0.6]) == [1, 2]
    assert lb.overlap_ranks([0.9, 0.8, 0.5, 0.4], [0.85, 0.75, 0.45, 0.2], [0.95, 0.86, 0.55, 0.46]) == [1, 1, 3, 3]
    # a wide interval joins every entry it overlaps, even across a gap
    assert lb.overlap_ranks([0.85, 0.65, 0.62], [0.8, 0.6, 0.3], [0.9, 0.7, 0.95]) == [1, 1, 1]
    assert lb.overlap_ranks([], [], []) == []


def test_files_and_tables(boards) -> None:
    subs, out = boards
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


def test_html_opens_in_headless_chromium(boards) -> None:
    found = _chromium()
    if found is None:
        pytest.skip("chromium and chromedriver not installed (Debian: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install selenium)")
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=found[1]), options=options)
    try:
        driver.get((boards[1] / "index.html").as_uri())
        tables = driver.find_elements(By.CSS_SELECTOR, "table.lb")
        assert len(tables) == 3
        first = tables[0]
        names = [r.find_elements(By.TAG_NAME, "td")[1].text for r in first.find_elements(By.CSS_SELECTOR, "tbody tr")]
        assert "easy-aa-m0" in names and "chance" in names and "prior" in names
        first.find_elements(By.TAG_NAME, "th")[1].click()  # sort by name
        after = [r.find_elements(By.TAG_NAME, "td")[1].text for r in first.find_elements(By.CSS_SELECTOR, "tbody tr")]
        assert after == sorted(names)
    finally:
        driver.quit()
