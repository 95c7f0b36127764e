"""Reporting: learning curves, the comparison table and plots, generated from metrics files.

Nothing here is typed by hand: every figure comes from ``metrics/*.json`` written by the
notebooks (one file per architecture and seed). ``write_comparison(results_dir)`` writes

- ``comparison.md``  – the table people read (mean ± std over seeds, published beside ours),
  the samples summary and, with two or more seeds, which differences hold on every seed;
- ``comparison.csv`` – one row per architecture (means, standard deviations, published);
- ``per_seed.csv``   – one row per architecture and seed;
- ``validation_curves.png`` – every model's validation curve (mean, band over seeds);
- ``curves_by_model.png``   – each model's training and validation curves.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .data import DATA_DIR
from .files import save_figure, write_text

PUBLISHED_CSV = DATA_DIR / "published_dino_names.csv"
# The published table's row names, by our architecture names.
PUBLISHED_NAMES = {"scratch": "rnn_from_scratch", "rnn": "vanilla_rnn", "lstm": "lstm", "gru": "gru"}
ORDER = ["scratch", "rnn", "lstm", "gru", "numpy_rnn", "numpy_lstm"]
LOSSES = ("train_loss", "valid_loss", "test_loss")


# ---------------------------------------------------------------------------
# One run's learning curves
# ---------------------------------------------------------------------------


def plot_history(history, title: str = "", ax=None, train_label: str = "training (dropout on)"):
    """Training and validation loss per epoch, the best epoch marked. Returns the figure."""
    import matplotlib.pyplot as plt

    fig, ax = (plt.subplots(figsize=(6.4, 4)) if ax is None else (ax.figure, ax))
    tr = history.train_loss if hasattr(history, "train_loss") else history["train_loss"]
    va = history.valid_loss if hasattr(history, "valid_loss") else history["valid_loss"]
    best = history.best_epoch if hasattr(history, "best_epoch") else history.get("best_epoch", 0)
    epochs = np.arange(1, len(tr) + 1)
    ax.plot(epochs, tr, label=train_label)
    ax.plot(epochs, va, label="validation")
    if best:
        ax.axvline(best, color="grey", ls=":", lw=1)
        ax.annotate(f"best epoch {best}", (best, va[best - 1]), textcoords="offset points", xytext=(5, 8), fontsize=8)
    ax.set(xlabel="epoch", ylabel="cross-entropy (nats / character)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


# ---------------------------------------------------------------------------
# Reading metrics
# ---------------------------------------------------------------------------


def load_metrics(results_dir) -> list[dict]:
    """Every ``metrics/*.json`` under ``results_dir``, in the study's architecture order."""
    files = sorted((Path(results_dir) / "metrics").glob("*.json"))
    runs = [json.loads(f.read_text(encoding="utf-8")) for f in files]
    return sorted(runs, key=lambda m: (_rank(m["architecture"]), m["parameters"]["seed"]))


def _rank(arch: str) -> int:
    return ORDER.index(arch) if arch in ORDER else len(ORDER)


def load_published(path=PUBLISHED_CSV) -> pd.DataFrame:
    """The published table, indexed by our architecture names."""
    df = pd.read_csv(path)
    back = {v: k for k, v in PUBLISHED_NAMES.items()}
    df["architecture"] = df["architecture"].map(back)
    return df.set_index("architecture").astype({"learnable_parameters": int, "epochs": int, "hidden_size": int})


def per_seed_frame(runs: list[dict]) -> pd.DataFrame:
    rows = []
    for m in runs:
        s = m.get("samples") or {}
        rows.append(
            {
                "architecture": m["architecture"],
                "label": m["label"],
                "seed": m["parameters"]["seed"],
                "status": m["status"],
                "learnable_parameters": m["learnable_parameters"],
                "epochs": m["parameters"]["epochs"],
                "best_epoch": m["best_epoch"],
                **{k: m[k] for k in LOSSES},
                "seconds_per_epoch": m["seconds_per_epoch"],
                "greedy_new_share": s.get("greedy_new_share"),
                "sampled_new_share": s.get("sampled_new_share"),
            }
        )
    return pd.DataFrame(rows)


def summary_frame(runs: list[dict], published: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per architecture: mean and standard deviation over the seeds that finished."""
    df = per_seed_frame(runs)
    ok = df[df.status == "ok"]
    rows = []
    for arch in sorted(df.architecture.unique(), key=_rank):
        d, all_d = ok[ok.architecture == arch], df[df.architecture == arch]
        row = {
            "architecture": arch,
            "label": all_d.label.iloc[0],
            "learnable_parameters": int(all_d.learnable_parameters.iloc[0]),
            "seeds": len(d),
            "failed_seeds": len(all_d) - len(d),
        }
        for k in LOSSES + ("best_epoch", "seconds_per_epoch"):
            row[f"{k}_mean"] = d[k].mean() if len(d) else math.nan
            row[f"{k}_std"] = d[k].std(ddof=1) if len(d) > 1 else math.nan
        if published is not None and arch in published.index:
            p = published.loc[arch]
            row["published_parameters"] = int(p.learnable_parameters)
            for k in LOSSES:
                row[f"published_{k}"] = float(p[k.replace("valid_", "validation_")])
        rows.append(row)
    return pd.DataFrame(rows)


def paired_differences(runs: list[dict], loss: str = "test_loss") -> pd.DataFrame:
    """For every pair of architectures, ``loss`` differences paired by seed (the same split).

    A difference "holds on every seed" when one model's loss is lower on all shared seeds
    (at least two).
    """
    df = per_seed_frame(runs)
    df = df[df.status == "ok"].pivot_table(index="seed", columns="architecture", values=loss)
    rows = []
    archs = sorted(df.columns, key=_rank)
    for a, b in itertools.combinations(archs, 2):
        pair = df[[a, b]].dropna()
        if len(pair) < 2:
            continue
        diff = pair[a] - pair[b]
        a_wins = int((diff < 0).sum())
        rows.append(
            {
                "a": a,
                "b": b,
                "seeds": len(pair),
                "mean_difference": diff.mean(),
                "std_difference": diff.std(ddof=1),
                "a_lower_on": a_wins,
                "holds_on_every_seed": a_wins in (0, len(pair)),
                "lower": a if diff.mean() < 0 else b,
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------


def _pm(mean, std, digits=4) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(summary: pd.DataFrame) -> str:
    """The comparison as a Markdown table: ours (mean ± std over seeds) beside the published."""
    rows = []
    for _, r in summary.iterrows():
        pub = lambda k: f"{r[k]:.4f}" if k in r and not pd.isna(r.get(k)) else "—"  # noqa: E731
        params = f"{r.learnable_parameters}"
        if "published_parameters" in r and not pd.isna(r.get("published_parameters")):
            params += f" ({int(r.published_parameters)})"
        rows.append(
            {
                "Model": r.label,
                "Parameters (published)": params,
                "Seeds": f"{r.seeds}" + (f" (+{r.failed_seeds} failed)" if r.failed_seeds else ""),
                "Train loss": _pm(r.train_loss_mean, r.train_loss_std),
                "Validation loss": _pm(r.valid_loss_mean, r.valid_loss_std),
                "Test loss": _pm(r.test_loss_mean, r.test_loss_std),
                "Published train / valid / test": f"{pub('published_train_loss')} / {pub('published_valid_loss')} / {pub('published_test_loss')}",
                "Best epoch": _pm(r.best_epoch_mean, r.best_epoch_std, 1),
                "s / epoch": _pm(r.seconds_per_epoch_mean, None, 2),
            }
        )
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def samples_table(runs: list[dict], real_names: list[str] | None = None) -> pd.DataFrame:
    """Per model, averaged over seeds: share of new names, of duplicates, and mean length."""
    out = []
    for arch in sorted({m["architecture"] for m in runs}, key=_rank):
        ms = [m for m in runs if m["architecture"] == arch and m.get("samples")]
        if not ms:
            continue
        row = {"architecture": arch, "label": ms[0]["label"]}
        for kind in ("greedy", "sampled"):
            names = [[r["name"] for r in m["samples"][kind]] for m in ms]
            row[f"{kind}_new"] = np.mean([m["samples"][f"{kind}_new_share"] for m in ms])
            row[f"{kind}_duplicates"] = np.mean([1 - len(set(n)) / len(n) for n in names])
            row[f"{kind}_mean_length"] = np.mean([np.mean([len(x) for x in n]) for n in names])
        row["real_mean_length"] = ms[0]["data"].get("mean_name_length", math.nan)
        out.append(row)
    return pd.DataFrame(out)


def samples_markdown(table: pd.DataFrame) -> str:
    rows = []
    for _, r in table.iterrows():
        rows.append(
            {
                "Model": r.label,
                "Greedy: new / duplicate": f"{r.greedy_new:.0%} / {r.greedy_duplicates:.0%}",
                "Greedy: mean length": f"{r.greedy_mean_length:.1f}",
                "Sampled: new / duplicate": f"{r.sampled_new:.0%} / {r.sampled_duplicates:.0%}",
                "Sampled: mean length": f"{r.sampled_mean_length:.1f}",
                "Real names: mean length": f"{r.real_mean_length:.1f}",
            }
        )
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def paired_markdown(pairs: pd.DataFrame, labels: dict[str, str]) -> str:
    rows = []
    for _, r in pairs.iterrows():
        winner, loser = (r.a, r.b) if r.lower == r.a else (r.b, r.a)
        wins = r.a_lower_on if r.lower == r.a else r.seeds - r.a_lower_on
        rows.append(
            {
                "Lower test loss": labels[winner],
                "than": labels[loser],
                "by (mean ± std over seeds)": _pm(abs(r.mean_difference), r.std_difference),
                "on seeds": f"{wins} of {r.seeds}",
                "holds on every seed": "yes" if r.holds_on_every_seed else "no",
            }
        )
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


# ---------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------


def _curves(runs: list[dict], arch: str, key: str) -> np.ndarray:
    hs = [m["history"][key] for m in runs if m["architecture"] == arch and m["status"] == "ok"]
    n = min((len(h) for h in hs), default=0)
    return np.array([h[:n] for h in hs])


def plot_overlay(runs: list[dict], published: pd.DataFrame | None = None):
    """Every model's validation curve: the mean over seeds, a band of ± one std."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    archs = sorted({m["architecture"] for m in runs}, key=_rank)
    labels = {m["architecture"]: m["label"] for m in runs}
    for i, arch in enumerate(archs):
        c = _curves(runs, arch, "valid_loss")
        if not c.size:
            continue
        color = f"C{i}"
        x = np.arange(1, c.shape[1] + 1)
        mean = c.mean(0)
        ax.plot(x, mean, color=color, label=f"{labels[arch]} ({len(c)} seed{'s' * (len(c) > 1)})")
        if len(c) > 1:
            sd = c.std(0, ddof=1)
            ax.fill_between(x, mean - sd, mean + sd, color=color, alpha=0.2, lw=0)
        if published is not None and arch in published.index:
            ax.axhline(published.loc[arch, "validation_loss"], color=color, ls=":", lw=1)
    ax.set(xlabel="epoch", ylabel="validation cross-entropy", title="Validation loss per epoch (dotted: published best)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return fig


def plot_by_model(runs: list[dict]):
    """One panel per model: mean training and validation curves with a band over seeds."""
    import matplotlib.pyplot as plt

    archs = sorted({m["architecture"] for m in runs if m["status"] == "ok"}, key=_rank)
    labels = {m["architecture"]: m["label"] for m in runs}
    cols = min(3, max(1, len(archs)))
    rows = math.ceil(len(archs) / cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, sharey=True)
    for ax, arch in zip(axes.flat, archs):
        for key, color in (("train_loss", "C0"), ("valid_loss", "C1")):
            c = _curves(runs, arch, key)
            x = np.arange(1, c.shape[1] + 1)
            ax.plot(x, c.mean(0), color=color, label=key.replace("_loss", "").replace("valid", "validation"))
            if len(c) > 1:
                sd = c.std(0, ddof=1)
                ax.fill_between(x, c.mean(0) - sd, c.mean(0) + sd, color=color, alpha=0.2, lw=0)
        ax.set_title(f"{labels[arch]} ({len(c)} seed{'s' * (len(c) > 1)})", fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(archs) :]:
        ax.set_visible(False)
    axes.flat[0].set_ylabel("cross-entropy")
    if archs:
        axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------
# The comparison, written
# ---------------------------------------------------------------------------


def comparison_markdown(runs: list[dict], failures: dict[str, str] | None = None, extra_sections=(), summary=None) -> str:
    summary = summary_frame(runs, load_published()) if summary is None else summary
    labels = {m["architecture"]: m["label"] for m in runs}
    seeds = sorted({m["parameters"]["seed"] for m in runs})
    epochs = sorted({m["parameters"]["epochs"] for m in runs})
    lines = [
        "# Dino Names: comparison",
        "",
        f"Generated by `dino-rnn study` from {len(runs)} run(s): seeds {', '.join(map(str, seeds))}; "
        f"{', '.join(map(str, epochs))} epochs. Losses are cross-entropy in nats per character at the "
        "best-validation epoch (mean ± standard deviation over seeds); every model of a seed was "
        "trained and tested on the same split. The published figures are one unseeded run per "
        "model, each on its own random split.",
        "",
        markdown_table(summary),
        "",
    ]
    bad = [m for m in runs if m["status"] != "ok"]
    if bad or failures:
        lines += ["## Runs that did not finish", ""]
        for m in bad:
            lines.append(f"- {m['label']}, seed {m['parameters']['seed']}: {m['status']} — {m['message']}")
        for name, why in (failures or {}).items():
            lines.append(f"- {name}: failed — {why}")
        lines.append("")
    pairs = paired_differences(runs)
    if len(pairs):
        lines += [
            "## Which differences hold on every seed",
            "",
            "Test losses paired by seed (each seed is one split shared by all models).",
            "",
            paired_markdown(pairs, labels),
            "",
        ]
    st = samples_table(runs)
    if len(st):
        lines += [
            "## Samples",
            "",
            "One name per start letter a–z; greedy as published, and sampled at the notebooks' "
            "temperature. New = not a training name; duplicate = the same name twice in one list. "
            "Averaged over seeds.",
            "",
            samples_markdown(st),
            "",
        ]
    for section in extra_sections:
        if section:
            lines += [section.rstrip(), ""]
    return "\n".join(lines)


def default_sections(results_dir) -> list[str]:
    """Sections other parts of the study add to the report (the aⁿbⁿ lab, when it has run)."""
    try:
        from .lab import anbn_section
    except ImportError:
        return []
    return [s for s in [anbn_section(results_dir)] if s]


def write_comparison(results_dir, failures: dict[str, str] | None = None, extra_sections=None) -> pd.DataFrame:
    """Write the comparison table, CSVs and plots for every metrics file under ``results_dir``.

    ``failures`` defaults to the failed notebooks recorded by the study runner in
    ``study.json``; ``extra_sections`` to :func:`default_sections`.
    """
    import matplotlib.pyplot as plt

    from .study import failures as study_failures

    results_dir = Path(results_dir)
    runs = load_metrics(results_dir)
    if not runs:
        raise FileNotFoundError(f"no metrics under {results_dir / 'metrics'}; run the model notebooks first")
    failures = study_failures(results_dir) if failures is None else failures
    extra_sections = default_sections(results_dir) if extra_sections is None else extra_sections
    published = load_published()
    summary = summary_frame(runs, published)
    write_text(results_dir / "comparison.md", comparison_markdown(runs, failures, extra_sections, summary))
    write_text(results_dir / "comparison.csv", summary.to_csv(index=False, float_format="%.6g"))
    write_text(results_dir / "per_seed.csv", per_seed_frame(runs).to_csv(index=False, float_format="%.6g"))
    for name, fig in (("validation_curves.png", plot_overlay(runs, published)), ("curves_by_model.png", plot_by_model(runs))):
        save_figure(fig, results_dir / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
    return summary
