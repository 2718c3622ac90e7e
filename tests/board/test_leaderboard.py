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
    assert len(lines) == 5 + 2 + len(table)  # no line was added by a field
    assert not re.search(r"(?<!\\)\]\(", md)  # no link or image: every bracket is escaped
    for bad in ("<script", "<img", "<b>", "<i>", "`code`", "*bold*", " _em_", "~strike~", "$x$", "\u2028", "\r"):
        assert bad not in md, bad
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md and "&amp;lt;b&amp;gt;" in md and "back\\\\slash" in md
    assert "evil\ufffd\\| x \\| y \\|" in md  # a newline in a name is shown, not obeyed


def test_html_fields_are_inert(hostile) -> None:
    page = (hostile[1] / "index.html").read_text()
    assert page.count("<script") == 1 and "<img" not in page and "<b>" not in page and "<i>" not in page
    hrefs = re.findall(r"<a ([^>]*)>", page)
    assert hrefs and all(re.fullmatch(r'href="https://[^"<>\s]+"', h) for h in hrefs), hrefs
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
