"""The HTML: the index page built from the committed results, the notebook reports, `dino-rnn report`,
and both seen in a real browser (headless Chromium) at a desktop and a phone width."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from bs4 import BeautifulSoup
from conftest import ROOT

from dino_rnn.runner import folders as R

from dino_rnn import files as F
from dino_rnn.report import site as S
from dino_rnn.report.tables import seconds_text
from dino_rnn.cli import main

REFERENCE = ROOT / "results" / "reference"
SECTIONS = ["table", "seeds", "good", "curves", "samples", "anbn", "reports", "settings"]
PNG = b"\x89PNG\r\n\x1a\n"


def copy_reference(dest: Path) -> Path:
    """The committed reference's files (not a local build's html/, checkpoints or other seeds)."""
    listed = R.read_manifest(REFERENCE)
    assert listed, "results/reference has no manifest"
    for rel in listed + [F.MANIFEST]:
        if (REFERENCE / rel).is_file() and not rel.startswith("html/"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REFERENCE / rel, dest / rel)
    # a clone has exactly what git tracks: files the manifest lists but git ignores are not there
    for extra in ("checkpoints", "executed/seed1", "executed/seed2", "executed/seed3", "executed/seed4"):
        shutil.rmtree(dest / extra, ignore_errors=True)
    return dest


@pytest.fixture(scope="module")
def reference_site(tmp_path_factory):
    """`dino-rnn report` on a copy of the committed reference; returns (folder, files before)."""
    folder = copy_reference(tmp_path_factory.mktemp("clone") / "reference")
    before = {f: (folder / f).read_bytes() for f in R.files_in(folder)}
    assert main(["report", str(folder)]) == 0
    return folder, before


def soup(path: Path) -> BeautifulSoup:
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def machine_paths(*extra) -> list[str]:
    return [str(ROOT), str(Path.home()), "staging-", *map(str, extra)]


# ---------------------------------------------------------------------------
# The index, from the committed results
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_report_of_the_committed_reference_writes_only_html(reference_site):
    folder, before = reference_site
    after = {f: (folder / f).read_bytes() for f in R.files_in(folder)}
    assert {f: b for f, b in after.items() if not f.startswith("html/")} == before  # the manifest included
    written = sorted(f for f in after if f.startswith("html/"))
    assert "html/index.html" in written
    # the committed manifest already lists what the report writes from the committed files
    assert set(written) <= set(R.read_manifest(folder))
    assert R.ResultsFolder(folder).foreign_files() == []


def test_the_index_gathers_the_whole_study(reference_site):
    folder, _ = reference_site
    page = soup(folder / "html" / "index.html")
    ids = [h2.get("id") for h2 in page.find_all("h2")]
    assert ids == SECTIONS
    comparison = page.find(id="table").find_next("table")
    rows = comparison.tbody.find_all("tr")
    assert len(rows) == 6
    import pandas as pd

    csv = pd.read_csv(folder / "comparison.csv").set_index("architecture")
    gru = next(r for r in rows if r.td.get_text() == "nn.GRU").get_text(" ")
    assert f"{csv.loc['gru', 'test_loss_mean']:.4f} ± {csv.loc['gru', 'test_loss_std']:.4f}" in gru
    assert "1.7202 / 1.5082 / 1.3935" in gru  # the published figures beside ours
    pairs = page.find(id="seeds").find_next("table")
    holds = [r for r in pairs.tbody.find_all("tr") if "holds" in (r.get("class") or [])]
    assert holds and all(r.find_all("td")[-1].get_text() == "yes" for r in holds)
    samples = page.find(id="samples").find_next("table")
    assert len(samples.tbody.find_all("tr")) == 6
    greedy = samples.find_next("table")
    assert len(greedy.tbody.find_all("tr")) == 26  # one name per letter
    anbn = page.find(id="anbn").find_next("table")
    assert "PyTorch LSTM" in anbn.get_text()
    settings = page.find(id="settings").find_next("table").get_text(" ")
    assert "dino_names.txt" in settings and "sha256" in settings and "0, 1, 2, 3, 4" in settings
    from dino_rnn.settings import COMPARED

    rows = {r.td.get_text(): r.find_all("td")[1].get_text() for r in page.find(id="settings").find_next("table").tbody.find_all("tr")}
    assert [k for k in rows if k in COMPARED] == list(COMPARED[1:])  # every compared setting, by its one name
    assert (rows["hidden"], rows["max_names"], rows["nonlinearity"], rows["clip"]) == ("64", "all", "tanh", "none")
    software = page.find(id="settings").find_next("table").find_next("table").get_text(" ")
    assert "torch" in software and "python" in software
    facts = page.find("ul", class_="facts").get_text(" ")
    study = json.loads((folder / "study.json").read_text())
    n = len(study["jobs"])
    assert f"{n} of {n} notebooks ran" in facts and seconds_text(study["seconds"]) in facts
    assert "What failed" not in page.get_text()


def test_the_index_is_self_contained(reference_site):
    folder, _ = reference_site
    text = (folder / "html" / "index.html").read_text(encoding="utf-8")
    page = BeautifulSoup(text, "html.parser")
    assert not page.find_all(["script", "link", "iframe", "object", "embed"])
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text) and "@import" not in text
    images = page.find_all("img")
    assert len(images) == 1 + 6 + 1 + 1  # the overlay, each model, the aⁿbⁿ curves, the loss by position
    for img in images:
        assert img["src"].startswith("data:image/png;base64,") and img.get("alt")
        assert base64.b64decode(img["src"].split(",", 1)[1])[:8] == PNG
    for a in page.find_all("a"):  # every link stays inside the folder and goes somewhere
        href = a["href"]
        assert not href.startswith(("/", "file:", "http")), href
        assert href.startswith("#") and page.find(id=href[1:]) or (folder / "html" / href).is_file(), href
    for p in machine_paths(folder):
        assert p not in text, p


def test_the_index_links_both_reports_of_every_committed_notebook(reference_site):
    folder, _ = reference_site
    page = soup(folder / "html" / "index.html")
    hrefs = {a["href"] for a in page.find(id="reports").find_next("table").find_all("a")}
    executed = sorted((folder / "executed").rglob("*.ipynb"))
    assert executed, "the committed reference keeps one seed's executed notebooks"
    for nb in executed:
        rel = nb.relative_to(folder / "executed").with_suffix("")
        assert {f"{rel}.html", f"{rel}.code.html"} <= hrefs, rel
        assert (folder / "html" / f"{rel}.html").is_file() and (folder / "html" / f"{rel}.code.html").is_file()
    assert "seeds 1, 2, 3, 4 are not in this folder" in page.find(id="reports").find_next("p", class_="small").get_text()


def test_notebook_reports_have_two_versions_no_script_and_link_to_html(reference_site):
    folder, _ = reference_site
    html = folder / "html"
    reader, learner = soup(html / "seed0" / "01_rnn_from_scratch.html"), soup(html / "seed0" / "01_rnn_from_scratch.code.html")
    assert not reader.select(".jp-CodeCell .jp-InputArea-editor") and learner.select(".jp-CodeCell .jp-InputArea-editor")
    assert "Experiment(" in learner.get_text() and "Experiment(" not in reader.get_text()
    for page in (reader, learner):
        assert not page.find_all("script") and page.find_all("math")  # math as MathML, no MathJax
        assert page.find("a", href="../index.html")
    comparison = soup(html / "comparison.html")
    links = {a["href"] for a in comparison.find_all("a") if a["href"].endswith((".html", ".ipynb"))}
    assert "seed0/03_lstm.html" in links and not [h for h in links if h.endswith(".ipynb")]
    code_links = {a["href"] for a in soup(html / "comparison.code.html").find_all("a")}
    assert "seed0/03_lstm.code.html" in code_links
    for f in html.rglob("*.html"):
        text = f.read_text(encoding="utf-8")
        for p in machine_paths(folder):
            assert p not in text, (f, p)


def test_report_refuses_what_a_study_did_not_write(tmp_path, capsys):
    notebooks = tmp_path / "notebooks-results"  # what notebooks run by hand leave: no manifest
    (notebooks / "metrics").mkdir(parents=True)
    shutil.copy(REFERENCE / "metrics" / "gru-seed0.json", notebooks / "metrics")
    assert main(["report", str(notebooks)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was not written by dino-rnn study" in err
    assert not (notebooks / "html").exists() and not R.ResultsFolder(notebooks).work.exists()
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    owned = copy_reference(tmp_path / "owned")
    (owned / "html").mkdir()
    (owned / "html" / "my-notes.txt").write_text("mine")  # a file of the user's: never swapped away
    assert main(["report", str(owned)]) == 2
    assert "'html/my-notes.txt'" in capsys.readouterr().err
    assert (owned / "html" / "my-notes.txt").read_text() == "mine" and not (owned / "html" / "index.html").exists()


@pytest.mark.slow
def test_a_rebuild_replaces_the_old_html_and_lists_new_files(tmp_path):
    folder = copy_reference(tmp_path / "ref")
    shutil.rmtree(folder / "executed")  # the index only: quicker
    manifest = json.loads((folder / F.MANIFEST).read_text())
    manifest["files"] = [f for f in manifest["files"] if not f.startswith("executed/")]
    (folder / F.MANIFEST).write_text(json.dumps(manifest))
    manifest = json.loads((folder / F.MANIFEST).read_text())
    manifest["files"] = [f for f in manifest["files"] if not f.startswith("html/")]
    (folder / F.MANIFEST).write_text(json.dumps(manifest))  # a folder whose manifest predates the HTML
    (folder / "html").mkdir()
    (folder / "html" / "old.html").write_text("stale")
    manifest["files"].append("html/old.html")
    (folder / F.MANIFEST).write_text(json.dumps(manifest))
    assert main(["report", str(folder)]) == 0
    listed = R.read_manifest(folder)
    assert "html/index.html" in listed and R.ResultsFolder(folder).foreign_files() == []
    assert not (folder / "html" / "old.html").exists()
    assert sorted(p.name for p in R.ResultsFolder(folder).work.iterdir()) == [R.LOCK]  # staging gone


def test_failures_are_shown_first(tmp_path):
    from test_report import metric

    (tmp_path / "metrics").mkdir()
    for arch, seed, test, status in [("rnn", 0, 1.5, "ok"), ("rnn", 1, math_nan(), "diverged"), ("lstm", 0, 1.4, "ok"),
                                     ("lstm", 1, 1.45, "ok")]:
        (tmp_path / "metrics" / f"{arch}-seed{seed}.json").write_text(json.dumps(metric(arch, seed, test, status)))
    (tmp_path / "study.json").write_text(json.dumps({"seconds": 75.0, "jobs": [
        {"notebook": "02_rnn.ipynb", "seed": 0, "status": "ok", "message": "", "seconds": 30},
        {"notebook": "04_gru.ipynb", "seed": 0, "status": "failed", "message": "RuntimeError: boom", "seconds": 3},
    ]}))
    page = BeautifulSoup(S.index_page(tmp_path), "html.parser")
    box = page.find(id="failed")
    assert box is not None and box.find_next("h2").get("id") == "table"  # above the table
    text = box.get_text(" ")
    assert "04_gru.ipynb seed 0: RuntimeError: boom" in text and "nn.RNN seed 1: diverged" in text
    assert "1 of 2 notebooks ran" in page.find("ul", class_="facts").get_text(" ")
    assert "1 min 15 s" in page.find("ul", class_="facts").get_text(" ")


def math_nan():
    return float("nan")


# ---------------------------------------------------------------------------
# Notebook reports from a hand-made executed notebook (no kernel)
# ---------------------------------------------------------------------------


def test_export_drops_widgets_and_machine_paths(tmp_path):
    staging = tmp_path / ".results.dino-rnn" / "staging-20260101-000000-42"
    results = tmp_path / "results"
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nb.metadata["papermill"] = {"parameters": {"RESULTS_DIR": str(staging)}, "input_path": str(S.NOTEBOOK_DIR / "x.ipynb")}
    md = nbformat.v4.new_markdown_cell("See [the LSTM](03_lstm.ipynb) and $h_t = \\tanh(W x_t)$.\n\n$$o_t = W h_t$$")
    code = nbformat.v4.new_code_cell(f'RESULTS_DIR = "{staging}"\nprint(RESULTS_DIR)')
    code.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text=f"{staging}/metrics/lstm-seed0.json\n{Path.home()}/x\n"),
        nbformat.v4.new_output("display_data", data={S.WIDGET_VIEW: {"model_id": "abc"}, "text/plain": "HBox()"}),
        nbformat.v4.new_output("error", ename="E", evalue="e", traceback=[f"File {ROOT}/dino_rnn/train.py:1"]),
    ]
    nb.cells = [md, code]
    executed = tmp_path / "x.ipynb"
    nbformat.write(nb, executed)
    subs = S.path_substitutions(results, staging)
    S.export_notebook(executed, tmp_path / "out", "x", {False: {"03_lstm.ipynb": "03_lstm.html"},
                                                       True: {"03_lstm.ipynb": "03_lstm.code.html"}},
                      "../index.html", subs, "X")
    for name, target in (("x.html", "03_lstm.html"), ("x.code.html", "03_lstm.code.html")):
        text = (tmp_path / "out" / name).read_text(encoding="utf-8")
        page = BeautifulSoup(text, "html.parser")
        assert not page.find_all("script") and "widget" not in text.lower()
        assert page.find("a", string="the LSTM")["href"] == target
        assert len(page.find_all("math")) == 2 and page.find("math", display="block")
        for p in machine_paths(tmp_path):
            assert p not in text, (name, p)
    code_page = (tmp_path / "out" / "x.code.html").read_text(encoding="utf-8")
    assert "…/results/metrics/lstm-seed0.json" in code_page and "~/x" in code_page
    assert "../dino_rnn/train.py" in code_page


def test_each_export_gets_its_own_links(tmp_path):
    # The two exporters are made once per process (their templates compile once); the links of
    # a notebook's reports come with each export, so the second export must not keep the first's.
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("See [the LSTM](03_lstm.ipynb).")])
    executed = tmp_path / "x.ipynb"
    nbformat.write(nb, executed)
    for target in ("first/03_lstm", "second/03_lstm"):
        S.export_notebook(executed, tmp_path / target, "x", {False: {"03_lstm.ipynb": f"{target}.html"},
                                                            True: {"03_lstm.ipynb": f"{target}.code.html"}},
                          "../index.html", [], "X")
        for name, href in (("x.html", f"{target}.html"), ("x.code.html", f"{target}.code.html")):
            page = BeautifulSoup((tmp_path / target / name).read_text(encoding="utf-8"), "html.parser")
            assert page.find("a", string="the LSTM")["href"] == href


@pytest.mark.slow
def test_figures_drawn_ahead_are_the_ones_the_index_draws_and_are_used():
    # A study draws the index page's figures while the comparison notebook runs and hands them over.
    figures = S.index_figures(F.REFERENCE)
    assert [len(figures[k]) for k in ("overlay", "models", "anbn")] == [1, 6, 1]
    page = S.index_page(F.REFERENCE, figures=figures)
    assert page == S.index_page(F.REFERENCE)  # the same page, byte for byte
    figures["models"][0] = {**figures["models"][0], "alt": "drawn ahead"}
    assert 'alt="drawn ahead"' in S.index_page(F.REFERENCE, figures=figures)  # used, not drawn again

def test_display_path():
    assert S.display_path(ROOT / "results" / "study") == "../results/study"
    assert S.display_path(Path.home() / "runs" / "a") == "~/runs/a" or str(ROOT).startswith(str(Path.home()))
    assert S.display_path("/opt/elsewhere/results") == "…/results"


# ---------------------------------------------------------------------------
# In a real browser
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    from dino_rnn.report.browser import Browser, BrowserUnavailable

    try:
        b = Browser()
    except BrowserUnavailable as e:
        pytest.skip(f"no browser for the browser tests: {e}")
    yield b
    b.close()


WIDTHS = {"desktop": (1280, False), "phone": (390, True)}


@pytest.mark.slow
@pytest.mark.parametrize("screen", WIDTHS)
def test_the_index_in_a_real_browser(browser, reference_site, screen, tmp_path):
    folder, _ = reference_site
    width, mobile = WIDTHS[screen]
    page = browser.open(folder / "html" / "index.html", width, mobile=mobile)
    shot = tmp_path / f"index-{screen}.png"
    shot.write_bytes(page.png)
    print(f"screenshot: {shot}")
    p = page.probe
    assert page.console_errors == [] and page.failed == [] and page.remote_requests == []
    assert p["images"] == 9 and p["broken"] == []  # the overlay, 6 models, aⁿbⁿ, the loss by position
    assert p["font"].endswith("sans-serif")  # the page's own stylesheet applies
    assert p["tables"] >= 9 and p["rows"] >= 80 and p["scripts"] == 0
    assert p["scrollWidth"] <= width and p["tooWide"] == []  # nothing makes the page scroll sideways
    if screen == "desktop":
        assert p["boxScrolls"][0] is False  # the comparison table fits a desktop window whole
    assert [h for h in p["headings"][1:]] == [
        "The comparison", "Which differences hold over seeds", "How good is good", "Learning curves", "Samples",
        "aⁿbⁿ: the NumPy lab", "Notebook reports", "Settings and software"]
    assert page.png[:8] == PNG and int.from_bytes(page.png[16:20], "big") == width
    assert int.from_bytes(page.png[20:24], "big") == p["height"] > 3000


@pytest.mark.parametrize("name", ["comparison.html", "seed0/05_anbn_lab.code.html"])
def test_notebook_reports_in_a_real_browser(browser, reference_site, name):
    folder, _ = reference_site
    page = browser.open(folder / "html" / name, 390, mobile=True)
    p = page.probe
    assert page.console_errors == [] and page.failed == [] and page.remote_requests == []
    assert p["images"] >= 1 and p["broken"] == [] and p["scripts"] == 0
    assert p["scrollWidth"] <= 390 and p["tooWide"] == []
    if name.startswith("seed0/"):
        assert p["math"] > 10


def test_the_browser_check_sees_a_broken_page(browser, tmp_path):
    """The checks above can fail: a missing image, a script error, a request to the network, a wide block."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><meta name="viewport" content="width=device-width"></head><body>'
                    '<img src="missing.png" alt="gone"><img src="http://192.0.2.1/x.png" alt="remote">'
                    '<div style="width:2000px">wide</div><script>undefinedFunction()</script></body></html>')
    seen = browser.open(page, 390, mobile=True)
    assert seen.probe["broken"] == ["gone", "remote"]
    assert any("undefinedFunction" in e for e in seen.console_errors)
    assert seen.remote_requests == ["http://192.0.2.1/x.png"]
    assert seen.probe["scrollWidth"] > 390 and seen.probe["tooWide"] == ["DIV"]


def test_without_chromedriver_the_browser_says_what_to_install(monkeypatch, tmp_path):
    """One line that names the package, before any browser starts; Selenium Manager is never asked."""
    from dino_rnn.report import browser as B

    monkeypatch.setattr(B, "DRIVERS", ("chromedriver",))
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on it
    monkeypatch.delenv("DINO_RNN_CHROMEDRIVER", raising=False)
    with pytest.raises(B.BrowserUnavailable, match="install Debian's chromium-driver") as e:
        B.Browser(executable="/bin/true")
    assert "\n" not in str(e.value)
    monkeypatch.setenv("DINO_RNN_CHROMEDRIVER", str(tmp_path / "nowhere"))
    with pytest.raises(B.BrowserUnavailable, match="DINO_RNN_CHROMEDRIVER"):
        B.find_chromedriver()


def test_report_screenshot_through_the_cli(reference_site, tmp_path, browser, monkeypatch, capsys):
    folder, _ = reference_site
    monkeypatch.setattr(R, "rebuild", lambda results, command, reference: folder / "html" / "index.html")  # built above
    shot = tmp_path / "report.png"
    assert main(["report", str(folder), "--screenshot", str(shot)]) == 0
    data = shot.read_bytes()
    assert data[:8] == PNG and int.from_bytes(data[16:20], "big") == 1280  # the top of the page, 1280 × 1000
    assert int.from_bytes(data[20:24], "big") == 1000
    assert f"screenshot: {shot}" in capsys.readouterr().out


def test_the_index_gives_every_test_loss_in_nats_bits_and_perplexity(reference_site):
    """The comparison table and the count models' table: bits = nats / ln 2, perplexity = e^nats
    (of the mean over seeds); the gains table says its gains in nats and bits."""
    import math

    folder, _ = reference_site
    page = soup(folder / "html" / "index.html")
    seen = 0
    for table in page.find_all("table"):
        head = [th.get_text(strip=True) for th in table.find_all("th")]
        if "Test bits / char" not in head:
            continue
        for tr in table.find("tbody").find_all("tr"):
            cells = dict(zip(head, [td.get_text(strip=True) for td in tr.find_all("td")]))
            nats = float(cells["Test loss"].split(" ± ")[0])
            assert abs(float(cells["Test bits / char"]) - nats / math.log(2)) <= 0.0006 + 0.00005 / math.log(2)
            assert abs(float(cells["Test perplexity"]) - math.exp(nats)) <= 0.006 + math.exp(nats) * 0.00006
            seen += 1
    assert seen == 6 + 8  # six models, eight count models
    good = page.find("h2", id="good").find_next("table").find_next("table")
    assert "Gain (bits / char)" in good.get_text() and "Gain over the best count model (nats / char)" in good.get_text()
