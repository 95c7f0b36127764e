"""html/explore.html (the trained models in the browser) and the report wherever it is read: at a
phone's width, printed, in dark mode. The browser tests run headless Chromium through Selenium."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from bs4 import BeautifulSoup

from dino_rnn import Experiment
from dino_rnn.experiment import load_checkpoint
from dino_rnn.lab import NumpyExperiment, TorchView, load_numpy_checkpoint
from dino_rnn.report import explore as X
from dino_rnn.report import site as S
from dino_rnn.report.tables import write_comparison
from dino_rnn.sample import generate

ARCHS = ("scratch", "rnn", "lstm", "gru", "numpy_rnn", "numpy_lstm")
PREFIXES = ("a", "ty", "stego", "q")


def train(folder: Path, dino_file, arch: str, **settings) -> dict:
    kind = NumpyExperiment if arch.startswith("numpy_") else Experiment
    settings = {"epochs": 1, "max_names": 50, **settings}
    return kind(arch, results_dir=folder, data=dino_file, progress=False, **settings).run()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, dino_file):
    """A results folder with the six models of seed 0 (one epoch on 50 names), its tables and its html/."""
    folder = tmp_path_factory.mktemp("explore") / "results"
    for arch in ARCHS:
        train(folder, dino_file, arch)
    write_comparison(folder, reference=None)
    S.build_site(folder)
    return folder


@pytest.fixture(scope="module")
def variants(tmp_path_factory, dino_file):
    """The cells' other forms: the published linear from-scratch cell, and two-layer nn.RNN, nn.LSTM, nn.GRU."""
    folder = tmp_path_factory.mktemp("variants") / "results"
    train(folder, dino_file, "scratch", nonlinearity="none", seed=3)
    for arch in ("rnn", "lstm", "gru"):
        train(folder, dino_file, arch, num_layers=2, seed=3, autograd=True)
    page = X.explore_page(folder)
    (folder / "explore.html").write_text(page, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def browser():
    from dino_rnn.report.browser import Browser, BrowserUnavailable

    try:
        b = Browser()
    except BrowserUnavailable as e:
        pytest.skip(f"no browser for the browser tests: {e}")
    yield b
    b.close()


def python_model(folder: Path, arch: str, seed: int = 0):
    """The model as Python runs it (eval mode), behind the torch interface, and its vocabulary."""
    path = folder / "checkpoints" / f"{arch}-seed{seed}{'.npz' if arch.startswith('numpy_') else '.pt'}"
    if arch.startswith("numpy_"):
        net, vocab = load_numpy_checkpoint(path)
        return TorchView(net), vocab
    return load_checkpoint(path)


@torch.no_grad()
def next_probabilities(model, vocab, prefix: str) -> np.ndarray:
    logits, _ = model(vocab.one_hot(vocab.encode(prefix)))
    return torch.softmax(logits[-1].double(), dim=0).numpy()


# ---------------------------------------------------------------------------
# Built from the files (no browser)
# ---------------------------------------------------------------------------


def test_weights_are_written_with_the_digits_that_give_them_back(trained):
    a = np.random.default_rng(0).standard_normal(1000)
    for dtype in (np.float32, np.float64):
        back = np.array(json.loads(X._numbers(a.astype(dtype))), dtype=dtype)
        assert np.array_equal(back, a.astype(dtype))
    seed, models, left_out = X.explore_models(trained)
    assert seed == 0 and [m["arch"] for m in models] == list(ARCHS) and left_out == []
    assert all(m["parameters"] <= 26_000 for m in models)
    assert [m["float32"] for m in models] == [True] * 4 + [False] * 2  # the NumPy nets' float64, exactly
    recorded = json.loads((trained / "metrics" / "lstm-seed0.json").read_text())["samples"]["greedy"]
    assert models[2]["greedy"] == [{"start": r["start"], "name": r["name"]} for r in recorded]


def test_the_index_links_the_explore_page_and_the_tables_files(trained):
    index = BeautifulSoup((trained / "html" / "index.html").read_text(encoding="utf-8"), "html.parser")
    assert (trained / "html" / X.EXPLORE).is_file()
    assert index.find("a", href=X.EXPLORE) is not None and index.find("script") is None
    downloads = [a["href"] for a in index.select("p.downloads a")]
    assert downloads == ["../comparison.csv", "../per_seed.csv", "../comparison.md"]
    assert all((trained / "html" / href).resolve().is_file() for href in downloads)


def test_without_checkpoints_there_is_no_page_and_the_index_says_why(trained, tmp_path):
    folder = tmp_path / "results"
    shutil.copytree(trained, folder, ignore=shutil.ignore_patterns("html", "checkpoints", "comparison.md"))
    S.build_site(folder)
    assert not (folder / "html" / X.EXPLORE).exists()
    index = BeautifulSoup((folder / "html" / "index.html").read_text(encoding="utf-8"), "html.parser")
    assert index.find("a", href=X.EXPLORE) is None
    line = index.select_one("p.explore-link").get_text(" ", strip=True)
    assert line.startswith("No page to play with the models: this folder has no checkpoints") and "\n" not in line
    assert [a["href"] for a in index.select("p.downloads a")] == ["../comparison.csv", "../per_seed.csv"]


def test_the_comparison_puts_the_losses_beside_the_model_and_times_read_as_people_say_them():
    import pandas as pd

    frame = pd.DataFrame(columns=["Model", "Parameters (published)", "Seeds", "Train loss", "Validation loss",
                                  "Test loss", "Test bits / char", "Test perplexity", "Published train / valid / test",
                                  "Best epoch", "s / epoch"])
    assert list(S.losses_first(frame).columns[:4]) == ["Model", "Test loss", "Validation loss", "Train loss"]
    assert sorted(S.losses_first(frame).columns) == sorted(frame.columns)
    table = S._timings({"jobs": [{"notebook": "03_lstm.ipynb", "seed": 0, "seconds": 167.3, "status": "ok"},
                                 {"notebook": "03_lstm.ipynb", "seed": 1, "seconds": 41.6, "status": "ok"}]})
    assert table.iloc[0]["mean"] == "1 min 44 s" and table.iloc[0]["longest"] == "2 min 47 s"


def test_learning_curves_tick_whole_epochs(trained):
    import matplotlib.pyplot as plt

    from dino_rnn.plots import plot_history
    from dino_rnn.report.tables import load_metrics, plot_model, plot_overlay, select_runs

    runs, _ = select_runs(load_metrics(trained))
    two = [{**m, "history": {k: v * 2 for k, v in m["history"].items()}} for m in runs]  # two epochs
    for fig in (plot_overlay(two), plot_model(two, "lstm"), plot_history(two[0]["history"])):
        fig.canvas.draw()
        ax = fig.axes[0]
        lo, hi = ax.get_xlim()
        assert [t for t in ax.get_xticks() if lo <= t <= hi] == [1, 2]
        plt.close(fig)


# ---------------------------------------------------------------------------
# In the browser
# ---------------------------------------------------------------------------


def offline(page, path: Path) -> bool:
    """The page loaded with no console error and asked for nothing but itself."""
    return page.console_errors == [] and page.failed == [] and page.requests == [path.resolve().as_uri()]


def greedy_names(browser) -> dict[str, dict[str, str]]:
    cells = browser.driver.execute_script(
        "return [...document.querySelectorAll('#greedy-table td')].map(td => [td.dataset.model, td.dataset.start, td.textContent])")
    out: dict[str, dict[str, str]] = {}
    for arch, start, name in cells:
        out.setdefault(arch, {})[start] = name
    return out


def bars(browser, arch: str, prefix: str) -> dict[str, float]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d = browser.driver
    Select(d.find_element(By.ID, "model")).select_by_value(arch)
    box = d.find_element(By.ID, "prefix")
    box.clear()
    box.send_keys(prefix)
    shown = d.execute_script("const b = document.getElementById('bars'); return [b.dataset.model, b.dataset.prefix, "
                             "[...b.querySelectorAll('.bar')].map(e => [e.dataset.char, e.dataset.p])]")
    assert shown[:2] == [arch, prefix]
    return {c: float(p) for c, p in shown[2]}


def check_models(browser, folder: Path, archs, seed: int) -> None:
    """Greedy names and next-character probabilities: the page's against Python's, for every model."""
    page_names = greedy_names(browser)
    for arch in archs:
        model, vocab = python_model(folder, arch, seed)
        recorded = json.loads((folder / "metrics" / f"{arch}-seed{seed}.json").read_text())["samples"]["greedy"]
        python = {c: generate(model, vocab, c) for c in "abcdefghijklmnopqrstuvwxyz" if c in vocab.stoi}
        assert page_names[arch] == python == {r["start"]: r["name"] for r in recorded}, arch
        for prefix in PREFIXES:
            want = next_probabilities(model, vocab, prefix)
            got = bars(browser, arch, prefix)
            assert sorted(got) == sorted(vocab.itos)
            assert max(abs(got[c] - want[i]) for i, c in enumerate(vocab.itos)) < 1e-5, (arch, prefix)


@pytest.mark.slow
def test_the_explore_page_runs_every_model_as_python_does_and_fetches_nothing(browser, trained):
    path = trained / "html" / X.EXPLORE
    page = browser.open(path, 1280)
    assert offline(page, path), (page.console_errors, page.requests)
    assert browser.driver.execute_script("return document.body.dataset.ready") == "yes"
    assert page.probe["scripts"] == 2  # the weights (JSON) and the forward passes, both inline
    assert "All 156 are the names the runs recorded" in browser.driver.find_element("id", "check").text
    check_models(browser, trained, ARCHS, 0)


@pytest.mark.slow
def test_the_explore_page_runs_the_other_cells_too(browser, variants):
    """The linear from-scratch cell and two-layer PyTorch cells."""
    path = variants / "explore.html"
    page = browser.open(path, 390, mobile=True)
    assert offline(page, path), (page.console_errors, page.requests)
    assert page.probe["scrollWidth"] <= 390 and page.probe["tooWide"] == []
    check_models(browser, variants, ("scratch", "rnn", "lstm", "gru"), 3)


@pytest.mark.slow
def test_the_offline_check_sees_a_page_that_fetches(browser, trained, tmp_path):
    """The check above fails on a page that asks for anything: a fetch, or an image from the network."""
    page = (trained / "html" / X.EXPLORE).read_text(encoding="utf-8")
    for extra in ('<script>fetch("weights.json")</script>', '<img src="http://192.0.2.1/x.png" alt="remote">'):
        bad = tmp_path / "bad.html"
        bad.write_text(page.replace("</body>", extra + "</body>"), encoding="utf-8")
        assert not offline(browser.open(bad, 1280), bad)


@pytest.mark.slow
def test_the_explore_page_controls(browser, trained):
    """Temperature and top-k change the bars; a sampled name starts with the prefix."""
    from selenium.webdriver.common.by import By

    path = trained / "html" / X.EXPLORE
    browser.open(path, 1280)
    d = browser.driver
    d.execute_script("const t = document.getElementById('topk'); t.value = 3; t.dispatchEvent(new Event('input'));")
    p = bars(browser, "gru", "ta")
    assert sum(v > 0 for v in p.values()) == 3 and abs(sum(p.values()) - 1) < 1e-12
    d.find_element(By.ID, "sample").click()
    assert d.find_element(By.ID, "sampled").text.startswith("ta")
    box = d.find_element(By.ID, "prefix")
    box.clear()
    box.send_keys("t4")
    assert d.find_elements(By.CSS_SELECTOR, "#bars .bar") == []
    assert "Not among the model's symbols" in d.find_element(By.ID, "message").text


# ---------------------------------------------------------------------------
# The index at a phone's width, printed, in dark mode
# ---------------------------------------------------------------------------

LAYOUT = """return (() => {
  const th = [...document.querySelectorAll('#table + p + .scroll th')];
  const box = document.querySelector('#table + p + .scroll');
  const s = getComputedStyle(box);
  return {headers: th.map(h => [h.textContent, h.getBoundingClientRect().right]), overflow: s.overflowX,
          cue: s.backgroundImage.includes('gradient') && s.backgroundAttachment.includes('local'),
          wide: box.scrollWidth > box.clientWidth + 1, background: getComputedStyle(document.body).backgroundColor};
})()"""


def media(browser, **features) -> None:
    browser.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "media": features.pop("media", ""), "features": [{"name": k.replace("_", "-"), "value": v} for k, v in features.items()]})


def luminance(css_colour: str) -> float:
    r, g, b = (float(v) for v in re.findall(r"[\d.]+", css_colour)[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


@pytest.mark.slow
def test_the_index_on_a_phone_printed_and_in_dark_mode(browser, trained):
    path = trained / "html" / "index.html"
    try:
        browser.open(path, 390, mobile=True)
        phone = browser.driver.execute_script(LAYOUT)
        headers = dict(phone["headers"])
        assert headers["Test loss"] <= 390 and headers["Validation loss"] <= 390  # seen before any swipe
        assert phone["overflow"] == "auto" and phone["cue"]  # the rest scrolls, with a shadow at the edge
        media(browser, media="print")
        printed = browser.driver.execute_script(LAYOUT)
        assert printed["overflow"] == "visible" and not printed["cue"]  # no scrollbar on paper
        media(browser, prefers_color_scheme="dark")
        browser.driver.refresh()
        assert luminance(browser.driver.execute_script(LAYOUT)["background"]) < 0.2
        browser.open(trained / "html" / X.EXPLORE, 390, mobile=True)
        assert luminance(browser.driver.execute_script("return getComputedStyle(document.body).backgroundColor")) < 0.2
    finally:
        media(browser)


@pytest.mark.slow
def test_the_printed_index_keeps_every_column_on_the_page(browser, trained):
    """For print (at about an A4 page's width), the comparison table fits the page and the six small
    plots share two rows; at 390 px on screen it would not."""
    browser.open(trained / "html" / "index.html", 700)
    media(browser, media="print")
    try:
        layout = browser.driver.execute_script(LAYOUT)
        assert not layout["wide"] and max(r for _, r in layout["headers"]) <= 700
        rows = browser.driver.execute_script(
            "return new Set([...document.querySelectorAll('.grid img')].map(i => Math.round(i.getBoundingClientRect().top))).size")
        assert rows == 2  # six plots, three to a row
    finally:
        media(browser)
