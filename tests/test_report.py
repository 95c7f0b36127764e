"""The comparison, computed from hand-made metrics files: means, stds, paired differences."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from dino_rnn.data import DATA_SHA256
from dino_rnn.report.tables import load_metrics, paired_differences, summary_frame, write_comparison

TEST = {  # test losses by architecture and seed
    "rnn": [1.50, 1.60, 1.55],
    "lstm": [1.40, 1.50, 1.45],  # lower than rnn on every seed
    "gru": [1.45, 1.65, 1.52],  # lower than rnn on seeds 0 and 2 only
}
LABELS = {"rnn": "nn.RNN", "lstm": "nn.LSTM", "gru": "nn.GRU"}


def metric(arch, seed, test, status="ok"):
    valid = [2.0, test + 0.1, test + 0.2]
    return {
        "architecture": arch,
        "label": LABELS[arch],
        "learnable_parameters": {"rnn": 7707, "lstm": 25563, "gru": 19611}[arch],
        "status": status,
        "message": "" if status == "ok" else "loss became NaN at epoch 2",
        "parameters": {"seed": seed, "epochs": 3},
        "data": {"mean_name_length": 12.0, "sha256": DATA_SHA256, "path": "dino_names.txt"},
        "history": {"train_loss": [2.5, 2.0, 1.9], "valid_loss": valid, "seconds": [0.5, 0.5, 0.6]},
        "best_epoch": 2,
        "train_loss": 2.0,
        "valid_loss": test + 0.1,
        "test_loss": test,
        "seconds_per_epoch": 0.5,
        "samples": {
            "greedy": [{"start": "a", "name": "abc", "new": True}, {"start": "b", "name": "abc", "new": False}],
            "greedy_new_share": 0.5,
            "sampled": [{"start": "a", "name": "ab", "new": True}, {"start": "b", "name": "bcde", "new": True}],
            "sampled_new_share": 1.0,
        },
    }


@pytest.fixture
def results(tmp_path):
    (tmp_path / "metrics").mkdir()
    for arch, losses in TEST.items():
        for seed, t in enumerate(losses):
            (tmp_path / "metrics" / f"{arch}-seed{seed}.json").write_text(json.dumps(metric(arch, seed, t)))
    return tmp_path


def test_mean_and_std_over_seeds(results):
    s = summary_frame(load_metrics(results)).set_index("architecture")
    assert list(s.index) == ["rnn", "lstm", "gru"]  # the study's order
    assert s.loc["rnn", "test_loss_mean"] == pytest.approx(1.55)
    assert s.loc["rnn", "test_loss_std"] == pytest.approx(0.05)  # sample std, ddof=1
    assert s.loc["gru", "test_loss_std"] == pytest.approx(pd.Series(TEST["gru"]).std())
    assert s.loc["lstm", "seeds"] == 3


def test_paired_differences_by_seed(results):
    p = paired_differences(load_metrics(results)).set_index(["a", "b"])
    rnn_lstm = p.loc[("rnn", "lstm")]
    assert rnn_lstm.mean_difference == pytest.approx(0.10) and rnn_lstm.std_difference == pytest.approx(0.0, abs=1e-12)
    assert rnn_lstm.holds and rnn_lstm.lower == "lstm" and (rnn_lstm.a_lower_on, rnn_lstm.b_lower_on) == (0, 3)
    rnn_gru = p.loc[("rnn", "gru")]  # d = 0.05, -0.05, 0.03: mean 0.01, 95% t-interval (t(0.975, 2) = 4.3027)
    sd = pd.Series([0.05, -0.05, 0.03]).std()
    half = 4.302652729911275 * sd / math.sqrt(3)
    assert (rnn_gru.low, rnn_gru.high) == (pytest.approx(0.01 - half), pytest.approx(0.01 + half))
    assert rnn_gru.a_lower_on == 1 and not rnn_gru.holds


def test_the_study_and_the_sweep_pair_with_one_statistic(results):
    """The study's paired table is the sweep's paired_interval, row for row."""
    from dino_rnn.report.sweepreport import paired_interval

    runs = load_metrics(results)
    p = paired_differences(runs).set_index(["a", "b"])
    for a, b in (("rnn", "lstm"), ("rnn", "gru"), ("lstm", "gru")):
        r = paired_interval(TEST[a], TEST[b])
        row = p.loc[(a, b)]
        assert (row.low, row.high, row.a_lower_on) == (pytest.approx(r["low"]), pytest.approx(r["high"]), r["a_better"])


def test_failed_seed_is_left_out_and_reported(results):
    (results / "metrics" / "rnn-seed1.json").write_text(json.dumps(metric("rnn", 1, math.nan, "diverged")))
    s = summary_frame(load_metrics(results)).set_index("architecture")
    assert s.loc["rnn", "seeds"] == 2 and s.loc["rnn", "failed_seeds"] == 1
    assert s.loc["rnn", "test_loss_mean"] == pytest.approx(1.525)
    write_comparison(results, extra_sections=[])
    md = (results / "comparison.md").read_text()
    assert "nn.RNN, seed 1: diverged — loss became NaN at epoch 2" in md
    assert "| 2 (+1 failed)" in md


def test_written_comparison(results):
    write_comparison(results, extra_sections=["## Extra\n\nadded"], reference=None)
    md = (results / "comparison.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| nn.")]
    assert len(table) == 3 + 3 + 3 + 3  # main table, three pairs, the gains over the count models, samples
    assert "1.5500 ± 0.0500" in md
    assert "1.8576 / 1.6835 / 1.5294" in md  # the published nn.RNN figures beside ours
    assert "## Which differences hold over seeds" in md and "## Extra" in md
    pairs = [[c.strip() for c in line.strip("|").split("|")] for line in md.split("## Which")[1].splitlines()
             if line.startswith("| nn.")]
    assert pairs[0] == ["nn.LSTM", "nn.RNN", "0.1000 [0.1000, 0.1000]", "3 of 3", "yes"]
    assert pairs[2] == ["nn.LSTM", "nn.GRU", "0.0900 [-0.0414, 0.2214]", "3 of 3", "no"]  # lower on every seed, not clear
    csv = pd.read_csv(results / "comparison.csv")
    assert list(csv.architecture) == ["rnn", "lstm", "gru"] and csv.published_test_loss.tolist() == [1.5294, 1.4923, 1.3935]
    assert len(pd.read_csv(results / "per_seed.csv")) == 9
    for png in ("validation_curves.png", "curves_by_model.png"):
        assert (results / png).read_bytes()[:4] == b"\x89PNG"


def test_samples_summary(results):
    from dino_rnn.report.tables import samples_table

    t = samples_table(load_metrics(results)).set_index("architecture")
    assert t.loc["rnn", "greedy_duplicates"] == 0.5 and t.loc["rnn", "sampled_mean_length"] == 3.0
    assert t.loc["rnn", "greedy_new"] == 0.5 and t.loc["rnn", "real_mean_length"] == 12.0


# ---------------------------------------------------------------------------
# Runs of different settings, and the committed reference beside a user's runs
# ---------------------------------------------------------------------------


def write_runs(folder, runs):
    (folder / "metrics").mkdir(parents=True, exist_ok=True)
    for i, m in enumerate(runs):
        (folder / "metrics" / f"{m['architecture']}-{i}.json").write_text(json.dumps(m))


def test_a_row_never_blends_runs_of_different_settings(tmp_path):
    """A student re-ran the LSTM at 2 epochs on seed 0, beside three 3-epoch seeds."""
    from dino_rnn.report.tables import select_runs

    student = {**metric("lstm", 0, 1.79), "parameters": {"seed": 0, "epochs": 2}, "finished": "2026-11-24T10:00:00"}
    runs = [{**metric("lstm", s, t), "finished": "2026-11-20T09:00:00"} for s, t in enumerate(TEST["lstm"])]
    kept, left_out = select_runs(runs + [student, metric("rnn", 0, 1.5)])
    assert [(m["architecture"], m["parameters"]["epochs"]) for m in kept] == [("rnn", 3), ("lstm", 2)]
    assert len(left_out) == 3 and all("epochs 3 (not 2)" in why for why in left_out)
    write_runs(tmp_path, runs + [student])
    write_comparison(tmp_path, reference=None)
    md = (tmp_path / "comparison.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| nn.LSTM"))
    assert "1.7900" in row and "±" not in row  # the 2-epoch run alone, not averaged with the others
    assert "## Runs left out" in md and "nn.LSTM, seed 1: left out — epochs 3 (not 2)" in md


def test_settings_are_every_compared_setting_and_the_names_file():
    """A setting added to COMPARED (clip) tells runs apart, and is named, with no change here."""
    from dino_rnn.report.tables import describe_settings, protocol_note, run_settings
    from dino_rnn.settings import COMPARED

    plain = metric("lstm", 0, 1.4)
    clipped = {**plain, "parameters": {**plain["parameters"], "clip": 1.0}}
    assert set(run_settings(plain)) == {*COMPARED, "data"}
    assert describe_settings(run_settings(clipped), run_settings(plain)) == "clip 1 (not none)"
    assert protocol_note([clipped]) == "epochs 3 (not 40), clip 1 (not none)"
    other = {**plain, "data": {"sha256": "ab" * 32}}
    assert describe_settings(run_settings(other), run_settings(plain)).startswith("another names file (sha256 abab")


def test_runs_beside_the_reference_say_whether_they_match(tmp_path):
    ref, mine = tmp_path / "reference", tmp_path / "mine"
    write_runs(ref, [metric(a, s, t) for a, ts in TEST.items() for s, t in enumerate(ts)])
    same = metric("rnn", 0, TEST["rnn"][0])
    moved = metric("lstm", 0, TEST["lstm"][0] + 0.01)
    write_runs(mine, [same, moved])
    write_comparison(mine, reference=ref)
    md = (mine / "comparison.md").read_text()
    assert "## Beside the committed reference" in md
    assert "1 of 2 run(s) at the reference's settings (seed 0) match the committed reference" in md
    assert "differ: nn.LSTM seed 0 (largest loss difference 0.01)" in md
    assert "seed 0: identical" in md and "seed 0: differ" in md
    # The reference folder itself is only read.
    assert sorted(p.name for p in ref.iterdir()) == ["metrics"]


# ---------------------------------------------------------------------------
# Plots people read: units, legends off the curves, published figures marked, grayscale
# ---------------------------------------------------------------------------

SIX = ["scratch", "rnn", "lstm", "gru", "numpy_rnn", "numpy_lstm"]


@pytest.fixture
def six_models():
    import numpy as np

    rng = np.random.default_rng(0)
    runs = []
    for arch in SIX:
        for seed in range(3):
            m = metric("rnn", seed, 1.5)
            curve = list(2.4 - np.log1p(np.arange(40)) * 0.2 + rng.normal(0, 0.02, 40))
            m.update(architecture=arch, label=f"model {arch}",
                     history={"train_loss": [c + 0.1 for c in curve], "valid_loss": curve, "seconds": [0.1] * 40})
            runs.append(m)
    return runs


def _legend_clear_of_axes(fig, ax, legend):
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    return not legend.get_window_extent(r).overlaps(ax.get_window_extent(r))


def test_overlay_is_readable_with_six_models(six_models):
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    from dino_rnn.report.tables import LOSS_LABEL, load_published, plot_overlay

    fig = plot_overlay(six_models, load_published())
    ax = fig.axes[0]
    assert "nats per character" in ax.get_ylabel() and LOSS_LABEL in ax.get_ylabel()
    curves = [line for line in ax.lines if line.get_label().startswith("model ")]
    assert len(curves) == 6
    # apart in grayscale: every curve has its own line style and its own marker
    assert len({str(line._dash_pattern) for line in curves}) == 6  # the dash pattern as drawn (pinned matplotlib)
    assert len({line.get_marker() for line in curves}) == 6
    # no band per model (six overlapping bands read as one): the spread is an error bar per model
    assert not [c for c in ax.collections if isinstance(c, PolyCollection) and c.get_paths()
                and c.get_paths()[0].vertices[:, 0].min() < 40]
    assert len(ax.containers) == 6  # errorbar containers
    # the published validation losses: marked (4 stars) and labelled in the legend
    stars = [line for line in ax.lines if line.get_marker() == "*" and len(line.get_xdata())]
    assert len(stars) == 4
    legend = fig.legends[0]
    assert any("published" in t.get_text() for t in legend.get_texts())
    assert _legend_clear_of_axes(fig, ax, legend)
    plt.close(fig)


@pytest.mark.slow
def test_each_model_panel_marks_the_published_figures(six_models):
    import matplotlib.pyplot as plt

    from dino_rnn.report.tables import load_published, plot_by_model, plot_model

    fig = plot_model(six_models, "gru", load_published())
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert "published training 1.720" in texts and "published validation 1.508" in texts
    assert "nats per character" in ax.get_ylabel()
    styles = {line.get_label(): line.get_linestyle() for line in ax.lines}
    assert styles["training (mean)"] != styles["validation (mean)"]  # solid against dashed
    assert _legend_clear_of_axes(fig, ax, ax.get_legend())
    plt.close(fig)
    fig = plot_by_model(six_models, load_published())
    assert len([a for a in fig.axes if a.get_visible()]) == 6
    assert all(_legend_clear_of_axes(fig, a, fig.legends[0]) for a in fig.axes if a.get_visible())
    plt.close(fig)


def test_one_run_plot_has_units_and_a_legend_off_the_curves():
    import matplotlib.pyplot as plt

    from dino_rnn.plots import plot_history

    fig = plot_history({"train_loss": [2.5, 2.0, 1.9], "valid_loss": [2.2, 1.8, 1.85], "best_epoch": 2}, title="x")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "cross-entropy (nats per character)"
    assert [line.get_linestyle() for line in ax.lines[:2]] == ["-", "--"]
    assert any("best validation: epoch 2" in t.get_text() for t in ax.get_legend().get_texts())
    assert _legend_clear_of_axes(fig, ax, ax.get_legend())
    plt.close(fig)


def test_progress_bar_is_text_in_the_studys_kernels(monkeypatch):
    """Under `dino-rnn study` (DINO_RNN_PROGRESS=text) the bar is tqdm's text bar even with ipywidgets installed."""
    import importlib.util

    from dino_rnn.train import progress_bar

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "ipywidgets" else real(name, *a))
    monkeypatch.setenv("DINO_RNN_PROGRESS", "text")
    bar = progress_bar(range(3), disable=True)
    assert type(bar).__module__ == "tqdm.std"


# ---------------------------------------------------------------------------
# A sweep's report (dino_rnn/report/sweepreport.py): grid points are the COMPARED settings
# ---------------------------------------------------------------------------


def sweep_run(arch, seed, loss, **p):
    params = {"num_layers": 1, "hidden": 64, "lr": 4e-4, "epochs": 40, "max_names": None, "nonlinearity": None,
              "seed": seed, **p}
    return {"architecture": arch, "parameters": params, "status": "ok", "test_loss": loss, "valid_loss": loss,
            "seconds_per_epoch": 1.0, "learnable_parameters": 1, "gradient": "x"}


def test_a_new_setting_makes_its_own_grid_points_and_labels():
    from dino_rnn.report.sweepreport import group_table, paired_table, parse_pair, point_name
    from dino_rnn.settings import COMPARED

    runs = [sweep_run("lstm", s, 2.0 + 0.01 * s) for s in range(3)]
    runs += [sweep_run("lstm", s, 1.9 + 0.01 * s + 0.001 * (s % 2), clip=1.0) for s in range(3)]
    table = group_table(runs)
    assert list(table.point) == ["lstm L1 H64 lr 0.0004", "lstm L1 H64 lr 0.0004 clip 1"]
    assert set(COMPARED) <= set(table.columns)
    pairs = paired_table(runs, [parse_pair("lstm,clip=1:lstm,clip=none")])
    assert list(pairs.a) == ["lstm L1 H64 lr 0.0004 clip 1"] and pairs.iloc[0]["b_better"] == 0
    assert pairs.iloc[0]["high"] < 0  # clipping lower on every seed, and clearly
    assert point_name({"arch": "scratch", "nonlinearity": "none", "num_layers": 1, "hidden": 64, "lr": 0.01,
                       "epochs": 2, "max_names": 40, "temperature": 1.0}) == "scratch (none) L1 H64 lr 0.01 temperature 1"


def test_selectors_name_any_compared_setting_by_its_one_name():
    from dino_rnn.report.sweepreport import parse_selector

    assert parse_selector("lstm,num_layers=2,hidden=128,lr=1e-3,max_names=all,clip=0.5,temperature=1") == {
        "arch": "lstm", "num_layers": 2, "hidden": 128, "lr": 1e-3, "max_names": None, "clip": 0.5, "temperature": 1.0}
    assert parse_selector("scratch,nonlinearity=none") == {"arch": "scratch", "nonlinearity": "none"}  # a text
    with pytest.raises(ValueError, match="unknown setting 'layers'"):  # one name per setting: no aliases
        parse_selector("lstm,layers=2")
    with pytest.raises(ValueError, match="unknown setting 'hidden_size'; use arch, epochs"):
        parse_selector("lstm,hidden_size=3")
    with pytest.raises(ValueError, match="clip='x' is not a valid value"):
        parse_selector("lstm,clip=x")


@pytest.mark.parametrize("df, q", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423)])
def test_the_t_quantile_matches_the_published_table(df, q):
    from dino_rnn.report.sweepreport import t_quantile

    assert t_quantile(0.975, df) == pytest.approx(q, abs=5e-5) and t_quantile(0.025, df) == pytest.approx(-q, abs=5e-5)


def test_settings_of_reads_each_setting_by_its_one_name_and_older_metrics_too():
    from dino_rnn.settings import DEFAULTS, settings_of

    now = {"architecture": "lstm", "parameters": {"hidden": 32, "clip": 0.5, "lr": 1e-3, "nonlinearity": "tanh"}}
    assert settings_of(now) == {**{k: DEFAULTS[k] for k in ("epochs", "num_layers", "max_names", "temperature")},
                                "arch": "lstm", "hidden": 32, "clip": 0.5, "lr": 1e-3, "nonlinearity": None}
    # metrics written before the rename say hidden_size, and nothing of clipping (which they did not do)
    before = {"architecture": "gru", "parameters": {"hidden_size": 128, "num_layers": 2}}
    assert settings_of(before)["hidden"] == 128 and settings_of(before)["clip"] is None


# ---------------------------------------------------------------------------
# How good is good: units, the count models, another names file
# ---------------------------------------------------------------------------


def _cells(md: str, first: str) -> dict[str, str]:
    """The first Markdown table row whose first cell is ``first``, as {column: cell}."""
    lines = md.splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == first:
            header = next(lines[j] for j in range(i, -1, -1) if lines[j + 1].startswith("|:") or lines[j + 1].startswith("|-"))
            return dict(zip([c.strip() for c in header.strip("|").split("|")], cells))
    raise AssertionError(f"no row {first!r}")


@pytest.mark.slow
def test_every_loss_table_has_bits_and_perplexity(results):
    """bits = nats / ln 2 and perplexity = e^nats: per_seed.csv, comparison.csv, baselines.csv,
    the comparison table and the count models' table of comparison.md."""
    write_comparison(results, reference=None)
    per_seed = pd.read_csv(results / "per_seed.csv")
    summary = pd.read_csv(results / "comparison.csv")
    ladder = pd.read_csv(results / "baselines.csv")
    for frame, suffix, perp in ((per_seed, "", ""), (summary, "_mean", ""), (ladder, "", "")):
        for k in ("train_loss", "valid_loss", "test_loss"):
            nats = frame[f"{k}{suffix}"]
            assert (frame[f"{k}_bits{suffix}"] - nats / math.log(2)).abs().max() < 1e-4
            assert ((frame[f"{k}_perplexity"] - nats.map(math.exp)) / frame[f"{k}_perplexity"]).abs().max() < 1e-4
    md = (results / "comparison.md").read_text()
    row = _cells(md, "nn.RNN")
    assert row["Test loss"] == "1.5500 ± 0.0500"
    assert row["Test bits / char"] == f"{1.55 / math.log(2):.3f}" and row["Test perplexity"] == f"{math.exp(1.55):.2f}"
    assert row["Best epoch"] == "2 ± 0.0 of 3" and row["Time per epoch"] == "500 ms" and row["Parameters (published)"] == "7707 (7707)"
    uniform = _cells(md, "uniform")
    assert uniform["Test loss"] == f"{math.log(27):.4f} ± 0.0000" and uniform["Test perplexity"] == "27.00"
    assert uniform["Test bits / char"] == f"{math.log2(27):.3f}"


def test_the_gain_is_the_best_count_model_minus_the_model_paired_by_seed(results):
    from dino_rnn.report import goodness
    from dino_rnn.report.sweepreport import paired_interval

    runs = load_metrics(results)
    rows = goodness.ladder_rows(runs)
    assert {r["seed"] for r in rows} == {0, 1, 2}
    best = {s: min((r for r in rows if r["seed"] == s), key=lambda r: r["valid_loss"]) for s in (0, 1, 2)}
    gains = {g["architecture"]: g for g in goodness.gains(runs, rows)}
    for arch, losses in TEST.items():
        d = [best[s]["test_loss"] - t for s, t in enumerate(losses)]
        assert gains[arch]["gain"] == pytest.approx(sum(d) / 3)
        r = paired_interval([best[s]["test_loss"] for s in range(3)], losses)
        assert (gains[arch]["low"], gains[arch]["high"]) == (pytest.approx(r["low"]), pytest.approx(r["high"]))
        assert gains[arch]["model_lower_on"] == sum(x > 0 for x in d)


def test_runs_without_the_loss_by_position_are_left_out_of_its_plot_and_said(results):
    from dino_rnn.report import goodness

    runs = load_metrics(results)
    pos = {"mean": [2.0, 1.0, 3.0], "count": [3, 2, 1], "share": [0.1, 0.1, 0.1]}
    runs[0]["test_loss_by_position"] = pos
    curves = goodness.position_curves(runs, goodness.ladder_rows(runs))
    assert list(curves)[0] == "nn.RNN" and len(curves) == 2  # the one run that has it, and the best count model
    assert curves["nn.RNN"][0] == 2.0 and curves["nn.RNN"][-1] == pytest.approx(np.nan, nan_ok=True)
    caption = goodness.position_caption(runs, goodness.ladder_rows(runs))
    assert "Not in the position plot" in caption and "nn.LSTM seeds 0, 1, 2" in caption
    assert "nn.RNN seeds 1, 2" in caption and "nn.RNN seeds 0" not in caption


def test_pooling_the_tail_weighs_positions_by_their_counts():
    from dino_rnn.report.goodness import pooled

    p = pooled({"mean": [1.0, 2.0, 3.0, 5.0], "count": [4, 4, 3, 1]}, pool=3)
    assert list(p) == [1.0, 2.0, pytest.approx((3.0 * 3 + 5.0) / 4)]


@pytest.fixture
def other_names(tmp_path):
    """A names file that is not Dino Names, and the same hand-made runs on it."""
    import random

    from dino_rnn.data import sha256_of

    rng = random.Random(3)
    f = tmp_path / "pokemon.txt"
    f.write_text("\n".join("".join(rng.choice("bcdklmpr") + rng.choice("aeiou") for _ in range(rng.randint(2, 4)))
                           for _ in range(120)) + "\n")
    results = tmp_path / "results"
    (results / "metrics").mkdir(parents=True)
    for arch, losses in TEST.items():
        for seed, t in enumerate(losses):
            m = metric(arch, seed, t)
            m["data"] = {"mean_name_length": 6.0, "sha256": sha256_of(f), "path": str(f), "names": 120}
            (results / "metrics" / f"{arch}-seed{seed}.json").write_text(json.dumps(m))
    return results


PUBLISHED_FIGURES = ("1.8576", "1.6835", "1.5294", "1.7426", "1.4923", "1.3935")  # published nn.RNN, nn.LSTM, nn.GRU


@pytest.mark.slow
def test_another_names_file_shows_no_published_figures_and_no_dino_title(other_names):
    from dino_rnn.report.site import index_page

    write_comparison(other_names, reference=None)
    md = (other_names / "comparison.md").read_text()
    csv = (other_names / "comparison.csv").read_text()
    page = index_page(other_names)
    for text in (md, csv, page):
        assert "Dino Names" not in text and not any(v in text for v in PUBLISHED_FIGURES)
        assert "published_" not in text and "Published train" not in text
    assert md.startswith("# pokemon.txt: comparison") and "<h1>pokemon.txt: " in page
    assert "## How good is good" in md and "How good is good" in page
    assert _cells(md, "uniform")["Test loss"] == f"{math.log(len(set('bcdklmpraeiou.'))):.4f} ± 0.0000"
