"""Reporting: learning curves, the comparison table and plots, generated from metrics files.

Nothing here is typed by hand: every figure comes from ``metrics/*.json`` written by the
notebooks (one file per architecture and seed). ``write_comparison(results_dir)`` writes

- ``comparison.md``  – the table people read (mean ± std over seeds, published beside ours),
  the samples summary and, with two or more seeds, which differences hold over seeds;
- ``comparison.csv`` – one row per architecture (means, standard deviations, published);
- ``per_seed.csv``   – one row per architecture and seed;
- ``baselines.csv``  – the count models' ladder, one row per seed and rung (:mod:`dino_rnn.report.goodness`);
- ``loss_by_position.png`` – the test loss by position in the name, every model and the best count model;
- ``validation_curves.png`` – every model's validation curve (mean, band over seeds);
- ``curves_by_model.png``   – each model's training and validation curves.

A row never blends runs of different settings: where a folder holds runs of one model at
several settings (a student tried ``EPOCHS=2``, say), the row takes the settings of the
newest run and the report lists the others as left out, and why. Beside a user's runs the
report shows the committed reference (``results/reference``) and says, seed by seed,
whether the runs both have at the same settings give the same losses.

Every loss is in nats per character, and beside it in bits per character (nats / ln 2) and
as a perplexity (e^nats). The published figures are shown only beside runs on the Dino Names
file (recognised by its sha256); on another names file the titles name that file.

A run's settings are :func:`dino_rnn.settings.settings_of` (the :data:`~dino_rnn.settings.COMPARED`
ones) and its names file's sha256 (:func:`run_settings`); the paired differences are
:func:`dino_rnn.report.sweepreport.paired_interval`'s t-interval, as in a sweep's report.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from dino_rnn.baselines import bits, perplexity
from dino_rnn.plots import ANBN_ORDER, LOSS_LABEL, STYLES, TRAIN_COLOR, VALID_COLOR, whole_epochs
from dino_rnn.files import ANBN_DIR, REFERENCE, STUDY_JSON, save_figure, write_text
from dino_rnn.report import goodness
from dino_rnn.report.sweepreport import paired_interval
from dino_rnn.settings import COMPARED, DEFAULTS, ParameterError, settings_of

PUBLISHED_CSV = Path(__file__).resolve().parent / "published_dino_names.csv"  # package data: installed with it
# The published table's row names, by our architecture names.
PUBLISHED_NAMES = {"scratch": "rnn_from_scratch", "rnn": "vanilla_rnn", "lstm": "lstm", "gru": "gru"}
ORDER = ["scratch", "rnn", "lstm", "gru", "numpy_rnn", "numpy_lstm"]
LOSSES = ("train_loss", "valid_loss", "test_loss")
# The settings that name the model (nonlinearity: which from-scratch cell); every other compared
# setting is the protocol, which models must share to be paired and which the published one fixes.
MODEL = ("arch", "nonlinearity")
# Seed-by-seed agreement with the reference: losses within this are "the same".
MATCH_TOLERANCE = 1e-6


# ---------------------------------------------------------------------------
# Reading metrics
# ---------------------------------------------------------------------------


def read_run(f: Path, *keys: str) -> dict:
    """One run's JSON file, which must hold ``keys``; a damaged one is one line (ParameterError)."""
    try:
        run = json.loads(f.read_text(encoding="utf-8"))
        seed = run["parameters"]["seed"]
        if not isinstance(seed, int) or any(k not in run for k in keys):
            raise KeyError(keys)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        why = e.strerror if isinstance(e, OSError) else "not a complete run's JSON (truncated or edited?)"
        raise ParameterError(f"{f} cannot be read ({why}); run that notebook again, or remove the folder's results") from None
    return run


def load_metrics(results_dir) -> list[dict]:
    """Every ``metrics/*.json`` under ``results_dir``, in the study's architecture order."""
    files = sorted((Path(results_dir) / "metrics").glob("*.json"))
    runs = [read_run(f, "architecture") for f in files]
    return sorted(runs, key=lambda m: (_rank(m["architecture"]), m["parameters"]["seed"]))


def _rank(arch: str) -> int:
    return ORDER.index(arch) if arch in ORDER else len(ORDER)


def load_published(path=PUBLISHED_CSV) -> pd.DataFrame:
    """The published table, indexed by our architecture names."""
    df = pd.read_csv(path)
    back = {v: k for k, v in PUBLISHED_NAMES.items()}
    df["architecture"] = df["architecture"].map(back)
    return df.set_index("architecture").astype({"learnable_parameters": int, "epochs": int, "hidden_size": int})


def published_for(runs: list[dict]) -> pd.DataFrame | None:
    """The published table for runs on the Dino Names file (by its sha256); None for any other names file."""
    return load_published() if goodness.is_dino_names(runs) else None


def with_units(row: dict, keys=LOSSES, suffix: str = "") -> dict:
    """``row`` with ``{k}_bits{suffix}`` and ``{k}_perplexity`` beside each loss ``{k}{suffix}`` in nats."""
    for k in keys:
        v = row[f"{k}{suffix}"]
        row[f"{k}_bits{suffix}"] = bits(v) if v is not None else math.nan
        row[f"{k}_perplexity"] = perplexity(v) if v is not None else math.nan
    return row


def run_settings(m: dict) -> dict:
    """What makes two runs the same experiment, seeds apart: :func:`~dino_rnn.settings.settings_of`
    and the names file (``data``: its sha256)."""
    return {**settings_of(m), "data": m.get("data", {}).get("sha256")}


def _protocol(settings: dict) -> tuple:
    """``settings`` without the ones that name the model (:data:`MODEL`), as a hashable tuple."""
    return tuple((k, v) for k, v in settings.items() if k not in MODEL)


def describe_settings(mine: dict, theirs: dict) -> str:
    """How ``mine`` differs from ``theirs``: ``"epochs 2 (not 40), lr 0.01 (not 0.0004)"``."""
    parts = []
    for k, v in mine.items():
        if v != theirs.get(k):
            if k == "data":
                parts.append(f"another names file (sha256 {str(v)[:12]}…)")
            else:
                parts.append(f"{k} {show_setting(k, v)} (not {show_setting(k, theirs.get(k))})")
    return ", ".join(parts) or "the same settings"


def show_setting(key: str, value) -> str:
    """A setting's value as the report writes it (``max_names`` None: all the names; ``clip`` None: none)."""
    if value is None:
        return "all" if key == "max_names" else "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def select_runs(runs: list[dict]) -> tuple[list[dict], list[str]]:
    """Per model, the runs that share the newest run's settings; and why each other run was left out.

    Runs without a ``finished`` time (older files) count as oldest; among those, the most
    common settings win.
    """
    kept, left_out = [], []
    for arch in sorted({m["architecture"] for m in runs}, key=_rank):
        rs = [m for m in runs if m["architecture"] == arch]
        key = lambda m: tuple(run_settings(m).items())  # noqa: E731
        counts: dict[tuple, int] = {}
        for m in rs:
            counts[key(m)] = counts.get(key(m), 0) + 1
        newest = max(rs, key=lambda m: (m.get("finished") or "", counts[key(m)]))
        chosen = run_settings(newest)
        for m in rs:
            if run_settings(m) == chosen:
                kept.append(m)
            else:
                left_out.append(
                    f"{m['label']}, seed {m['parameters']['seed']}: left out — "
                    f"{describe_settings(run_settings(m), chosen)}; the row holds the newest run's settings"
                )
    return kept, left_out


def protocol_note(runs: list[dict]) -> str:
    """How the runs' settings differ from the published protocol ("" when they do not).

    The published protocol is every :data:`~dino_rnn.settings.COMPARED` setting's default, the
    model's own (:data:`MODEL`) aside.
    """
    published = _protocol({k: DEFAULTS[k] for k in COMPARED})
    mine = {_protocol(settings_of(m)) for m in runs} - {published}
    return "; ".join(sorted(describe_settings(dict(p), dict(published)) for p in mine))


def study_failures(results_dir) -> dict[str, str]:
    """Failed notebooks of the study that wrote ``results_dir`` (from its ``study.json``)."""
    f = Path(results_dir) / STUDY_JSON
    if not f.exists():
        return {}
    s = json.loads(f.read_text(encoding="utf-8"))
    return {f"{j['notebook']} seed {j['seed']}": j["message"] for j in s["jobs"] if j["status"] == "failed"}


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
                **with_units({k: m[k] for k in LOSSES}),
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
        with_units(row, suffix="_mean")  # the perplexity of the mean: e^(mean nats)
        row["epochs"] = int(all_d.epochs.max())
        if published is not None and arch in published.index:
            p = published.loc[arch]
            row["published_parameters"] = int(p.learnable_parameters)
            for k in LOSSES:
                row[f"published_{k}"] = float(p[k.replace("valid_", "validation_")])
        rows.append(row)
    return pd.DataFrame(rows)


def paired_differences(runs: list[dict], loss: str = "test_loss", level: float = 0.95) -> pd.DataFrame:
    """For every pair of architectures, ``loss`` differences paired by seed (the same split).

    Models are paired only under one protocol (:func:`run_settings` but the model's own,
    :data:`MODEL`) and over at least two shared seeds. Each row is
    :func:`~dino_rnn.report.sweepreport.paired_interval` of ``a - b``: the mean, the ``level``
    t-interval (``low``, ``high``), and on how many seeds each side is lower; a difference
    ``holds`` when its interval excludes zero.
    """
    df = per_seed_frame(runs)
    df = df[df.status == "ok"].pivot_table(index="seed", columns="architecture", values=loss)
    shared = {m["architecture"]: _protocol(run_settings(m)) for m in runs}
    rows = []
    for a, b in itertools.combinations(sorted(df.columns, key=_rank), 2):
        pair = df[[a, b]].dropna()
        if shared[a] != shared[b] or len(pair) < 2:
            continue
        r = paired_interval(pair[a].tolist(), pair[b].tolist(), level)
        rows.append({
            "a": a, "b": b, "seeds": r["n"], "mean_difference": r["mean"], "std_difference": r["sd"],
            "low": r["low"], "high": r["high"], "a_lower_on": r["a_better"], "b_lower_on": r["b_better"],
            "holds": r["high"] < 0 or r["low"] > 0, "lower": a if r["mean"] < 0 else b,
        })
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------
# Beside the committed reference
# ---------------------------------------------------------------------------


def reference_check(runs: list[dict], reference: list[dict]) -> list[dict]:
    """For every run that the reference has too (same model and seed): same settings? same losses?

    Returns one dict per such run: ``label``, ``seed``, ``status`` ("identical", "match" within
    :data:`MATCH_TOLERANCE`, "differ", or "settings differ"), ``largest_difference`` and
    ``detail``.
    """
    ref = {(m["architecture"], m["parameters"]["seed"]): m for m in reference}
    out = []
    for m in runs:
        r = ref.get((m["architecture"], m["parameters"]["seed"]))
        if r is None:
            continue
        row = {"architecture": m["architecture"], "label": m["label"], "seed": m["parameters"]["seed"]}
        if run_settings(m) != run_settings(r):
            row.update(status="settings differ", largest_difference=math.nan,
                       detail=describe_settings(run_settings(m), run_settings(r)))
        elif m["status"] != "ok" or r["status"] != "ok":
            row.update(status="differ", largest_difference=math.nan, detail=f"status {m['status']} (reference {r['status']})")
        else:
            d = max(abs(m[k] - r[k]) for k in LOSSES)
            status = "identical" if d == 0 else "match" if d <= MATCH_TOLERANCE else "differ"
            row.update(status=status, largest_difference=d, detail=f"largest loss difference {d:.2g}")
        out.append(row)
    return out


def reference_summary(check: list[dict]) -> str:
    """One line: how many runs the reference has too, and whether their losses match."""
    if not check:
        return "no run here has a seed and model the committed reference has"
    same = [c for c in check if c["status"] != "settings differ"]
    seeds = sorted({c["seed"] for c in check})
    where = f"seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}"
    if not same:
        return f"{len(check)} run(s) share a seed with the committed reference ({where}) but not its settings ({check[0]['detail']}): nothing to compare"
    ok = [c for c in same if c["status"] in ("identical", "match")]
    worst = max((c["largest_difference"] for c in same if not math.isnan(c["largest_difference"])), default=math.nan)
    line = f"{len(ok)} of {len(same)} run(s) at the reference's settings ({where}) match the committed reference"
    line += f" (largest loss difference {worst:.2g})" if not math.isnan(worst) else ""
    bad = [c for c in same if c["status"] not in ("identical", "match")]
    if bad:
        line += "; differ: " + ", ".join(f"{c['label']} seed {c['seed']} ({c['detail']})" for c in bad)
    return line


def reference_markdown(runs: list[dict], reference: list[dict], reference_dir) -> str:
    """The section that puts a folder's runs beside the committed reference."""
    ref_kept, _ = select_runs(reference)
    ref_summary = summary_frame(ref_kept).set_index("architecture")
    check = reference_check(runs, ref_kept)
    rows = []
    for arch in sorted({m["architecture"] for m in runs}, key=_rank):
        mine = [m for m in runs if m["architecture"] == arch]
        ok = [m for m in mine if m["status"] == "ok"]
        tl = [m["test_loss"] for m in ok]
        theirs = ref_summary.loc[arch] if arch in ref_summary.index else None
        ref_run = next((m for m in ref_kept if m["architecture"] == arch), None)
        checks = [c for c in check if c["architecture"] == arch]
        rows.append({
            "Model": mine[0]["label"],
            "Here: seeds": ", ".join(str(m["parameters"]["seed"]) for m in mine),
            "Here: settings": describe_settings(run_settings(mine[0]), run_settings(ref_run)) if ref_run else "—",
            "Here: test loss": _pm(np.mean(tl) if tl else math.nan, np.std(tl, ddof=1) if len(tl) > 1 else math.nan),
            "Reference: seeds": f"{int(theirs.seeds)}" if theirs is not None else "—",
            "Reference: test loss": _pm(theirs.test_loss_mean, theirs.test_loss_std) if theirs is not None else "—",
            "Same seed and settings": ", ".join(f"seed {c['seed']}: {c['status']}" for c in checks if c["status"] != "settings differ") or "—",
        })
    return "\n".join([
        "## Beside the committed reference",
        "",
        f"The committed reference is `{Path(reference_dir).name}/` ({len(ref_kept)} runs). "
        + reference_summary(check) + ".",
        "",
        pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True),
        "",
    ])


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------


def _pm(mean, std, digits=4) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


TEST_BITS, TEST_PERPLEXITY = "Test bits / char", "Test perplexity"


def comparison_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """The comparison table as text cells: ours (mean ± std over seeds) beside the published (when
    the summary has them: runs on the Dino Names file), the test loss also in bits and perplexity."""
    rows = []
    published = "published_test_loss" in summary.columns
    for _, r in summary.iterrows():
        pub = lambda k: f"{r[k]:.4f}" if k in r and not pd.isna(r.get(k)) else "—"  # noqa: E731
        params = f"{int(r.learnable_parameters)}"
        if "published_parameters" in r and not pd.isna(r.get("published_parameters")):
            params += f" ({int(r.published_parameters)})"
        row = {
            "Model": r.label,
            "Parameters (published)" if published else "Parameters": params,
            "Seeds": f"{int(r.seeds)}" + (f" (+{int(r.failed_seeds)} failed)" if r.failed_seeds else ""),
            "Train loss": _pm(r.train_loss_mean, r.train_loss_std),
            "Validation loss": _pm(r.valid_loss_mean, r.valid_loss_std),
            "Test loss": _pm(r.test_loss_mean, r.test_loss_std),
            TEST_BITS: _pm(r.test_loss_bits_mean, None, 3),
            TEST_PERPLEXITY: _pm(r.test_loss_perplexity, None, 2),
            "Published train / valid / test": f"{pub('published_train_loss')} / {pub('published_valid_loss')} / {pub('published_test_loss')}",
            "Best epoch": best_epoch_text(r.best_epoch_mean, r.best_epoch_std, r.get("epochs")),
            "Time per epoch": seconds_text(r.seconds_per_epoch_mean),
        }
        if not published:
            del row["Published train / valid / test"]
        rows.append(row)
    return pd.DataFrame(rows)


def _number(x: float, digits: int = 1) -> str:
    """``38`` for 38.0, ``39.4`` for 39.4: a whole number without its decimals."""
    return f"{int(round(x))}" if float(x).is_integer() else f"{x:.{digits}f}"


def best_epoch_text(mean, std, epochs=None) -> str:
    """``"38 of 40"``, ``"39.4 ± 0.5 of 40"``: the best epoch (mean ± std over seeds) of how many."""
    if mean is None or pd.isna(mean):
        return "—"
    text = _number(mean) + ("" if std is None or pd.isna(std) else f" ± {std:.1f}")
    return text + (f" of {int(epochs)}" if epochs is not None and not pd.isna(epochs) else "")


def seconds_text(seconds) -> str:
    """A time as people read it: ``"150 ms"``, ``"2.3 s"``, ``"4 min 10 s"``, ``"1 h 2 min"``."""
    if seconds is None or pd.isna(seconds):
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    s = int(round(seconds))
    return f"{s // 3600} h {s % 3600 // 60} min" if s >= 3600 else f"{s // 60} min {s % 60} s"


def markdown_table(summary: pd.DataFrame) -> str:
    """The comparison as a Markdown table (see :func:`comparison_frame`)."""
    return to_markdown(comparison_frame(summary))


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


def samples_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The samples summary (:func:`samples_table`) as text cells."""
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
    return pd.DataFrame(rows)


def samples_markdown(table: pd.DataFrame) -> str:
    return to_markdown(samples_frame(table))


PAIRED_BY = "by (mean, 95% interval)"
PAIRED_ON = "lower on seeds"


def paired_frame(pairs: pd.DataFrame, labels: dict[str, str]) -> pd.DataFrame:
    """Which model's test loss is lower than which, paired by seed, as text cells (see
    :func:`paired_differences`): by how much, with the interval, and whether it holds."""
    rows = []
    for _, r in pairs.iterrows():
        a_lower = r.lower == r.a
        sign = -1 if a_lower else 1  # shown as the lower model's lead: positive
        low, high = sorted((sign * r.low, sign * r.high))
        rows.append({
            "Lower test loss": labels[r.a if a_lower else r.b],
            "than": labels[r.b if a_lower else r.a],
            PAIRED_BY: f"{sign * r.mean_difference:.4f} [{low:.4f}, {high:.4f}]",
            PAIRED_ON: f"{r.a_lower_on if a_lower else r.b_lower_on} of {r.seeds}",
            "holds": "yes" if r.holds else "no",
        })
    return pd.DataFrame(rows)


def paired_markdown(pairs: pd.DataFrame, labels: dict[str, str]) -> str:
    return to_markdown(paired_frame(pairs, labels))


def greedy_frame(runs: list[dict]) -> pd.DataFrame:
    """The greedy names of the first seed, one row per start letter, one column per model.

    A name that is in the training list is marked "(known)".
    """
    seeds = [m["parameters"]["seed"] for m in runs if m.get("samples")]
    if not seeds:
        return pd.DataFrame()
    first = min(seeds)
    cols = {
        m["label"]: {r["start"]: r["name"] + ("" if r["new"] else " (known)") for r in m["samples"]["greedy"]}
        for m in runs
        if m["parameters"]["seed"] == first and m.get("samples")
    }
    return pd.DataFrame(cols).rename_axis(f"start (seed {first})")


def to_markdown(frame: pd.DataFrame) -> str:
    """A frame of text cells as a Markdown table (as written to comparison.md)."""
    return frame.to_markdown(index=False, disable_numparse=True)


# ---------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------


def _curves(runs: list[dict], arch: str, key: str) -> np.ndarray:
    hs = [m["history"][key] for m in runs if m["architecture"] == arch and m["status"] == "ok"]
    n = min((len(h) for h in hs), default=0)
    return np.array([h[:n] for h in hs])


def model_style(arch: str) -> dict:
    """A model's colour, line style and marker: the same in every plot, and apart in grayscale."""
    i = _rank(arch)
    color, ls, marker = STYLES[i % len(STYLES)]
    return {"color": color, "ls": ls, "marker": marker}


def _seeds(n: int) -> str:
    return f"{n} seed{'s' * (n != 1)}"


def _zoom(ax, curves, published_values=()) -> None:
    """y-limits that show where the models differ: from the lowest point to the second epoch's level."""
    values = np.concatenate([c[:, 1:].ravel() if c.shape[1] > 1 else c.ravel() for c in curves if c.size] or [np.array([])])
    values = np.concatenate([values, np.asarray(list(published_values), dtype=float)])
    values = values[np.isfinite(values)]
    if values.size:
        lo, hi = values.min(), values.max()
        pad = 0.06 * max(hi - lo, 0.05)
        ax.set_ylim(lo - pad, hi + pad)


def plot_overlay(runs: list[dict], published: pd.DataFrame | None = None):
    """Every model's validation curve (mean over seeds), the spread at the last epoch, the published figures.

    Bands of six models overlap into one; here each model is one line (its own colour, line
    style and marker), its spread over seeds is an error bar (± one standard deviation at the
    last epoch) right of the curves, and the published validation losses are hollow stars,
    labelled. The legend sits below the axes.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 6.2), layout="constrained")
    archs = [a for a in sorted({m["architecture"] for m in runs}, key=_rank) if _curves(runs, a, "valid_loss").size]
    labels = {m["architecture"]: m["label"] for m in runs}
    all_curves, pub_values = [], []
    last = 0
    for arch in archs:
        c = _curves(runs, arch, "valid_loss")
        all_curves.append(c)
        last = max(last, c.shape[1])
    for i, arch in enumerate(archs):
        c = all_curves[i]
        st = model_style(arch)
        x = np.arange(1, c.shape[1] + 1)
        mean = c.mean(0)
        every = max(1, c.shape[1] // 8)
        ax.plot(x, mean, color=st["color"], ls=st["ls"], lw=1.8, marker=st["marker"], ms=5,
                markevery=(i % every, every), label=f"{labels[arch]} ({_seeds(len(c))})")
        if len(c) > 1:
            xe = last + 1.2 + 0.9 * i
            ax.errorbar([xe], [mean[-1]], yerr=[c[:, -1].std(ddof=1)], color=st["color"], marker=st["marker"],
                        ms=5, capsize=3, lw=1.4)
        if published is not None and arch in published.index:
            v = float(published.loc[arch, "validation_loss"])
            pub_values.append(v)
            ax.plot([c.shape[1]], [v], ls="none", marker="*", ms=13, mfc="white", mec=st["color"], mew=1.6)
    if pub_values:
        ax.plot([], [], ls="none", marker="*", ms=13, mfc="white", mec="black", mew=1.4,
                label="published validation loss (one run each)")
    if archs and max(len(c) for c in all_curves) > 1:
        ax.axvspan(last + 0.6, last + 1.8 + 0.9 * (len(archs) - 1), color="0.93", zorder=0)
        ax.text(last + 1.2 + 0.45 * (len(archs) - 1), 1.0, "spread at\nepoch %d\n(± 1 std)" % last,
                transform=ax.get_xaxis_transform(), ha="center", va="top", fontsize=8.5, color="0.3")
    _zoom(ax, all_curves, pub_values)
    ax.set(xlabel="epoch", ylabel=f"validation {LOSS_LABEL}")
    ax.set_title("Validation loss per epoch (mean over seeds)", fontsize=11)
    ax.grid(alpha=0.3)
    whole_epochs(ax, last)
    if ax.get_legend_handles_labels()[0]:  # one column, large enough to read when a phone scales the figure down
        fig.legend(loc="outside lower center", ncol=1, fontsize=10, frameon=False)
    return fig


def plot_model(runs: list[dict], arch: str, published: pd.DataFrame | None = None, ax=None, legend: bool = True):
    """One model: mean training and validation curves over seeds, a band of ± one std, the published figures.

    Returns the figure. Training is solid, validation dashed; the published training and
    validation losses are labelled horizontal lines.
    """
    import matplotlib.pyplot as plt

    fig, ax = (plt.subplots(figsize=(4.6, 3.9), layout="constrained") if ax is None else (ax.figure, ax))
    label = next(m["label"] for m in runs if m["architecture"] == arch)
    pub = published.loc[arch] if published is not None and arch in published.index else None
    n = 0
    for key, color, ls, what in (("train_loss", TRAIN_COLOR, "-", "training"), ("valid_loss", VALID_COLOR, "--", "validation")):
        c = _curves(runs, arch, key)
        if not c.size:
            continue
        n = len(c)
        x = np.arange(1, c.shape[1] + 1)
        mean = c.mean(0)
        ax.plot(x, mean, color=color, ls=ls, lw=1.8, label=f"{what} (mean)")
        if len(c) > 1:
            sd = c.std(0, ddof=1)
            ax.fill_between(x, mean - sd, mean + sd, color=color, alpha=0.18, lw=0,
                            hatch="...." if key == "valid_loss" else None, label=f"{what} ± 1 std")
        if pub is not None:
            v = float(pub["train_loss" if key == "train_loss" else "validation_loss"])
            ax.axhline(v, color=color, ls=":", lw=1.2)
            ax.annotate(f"published {what} {v:.3f}", (0.97, v), xycoords=("axes fraction", "data"),
                        xytext=(0, -3 if key == "valid_loss" else 3), textcoords="offset points",
                        ha="right", va="top" if key == "valid_loss" else "bottom", fontsize=8.5, color=color,
                        bbox={"fc": "white", "ec": "none", "alpha": 0.85, "pad": 1})
    ax.set_title(f"{label} ({_seeds(n)})", fontsize=10)
    ax.set(xlabel="epoch", ylabel=LOSS_LABEL)
    ax.grid(alpha=0.3)
    whole_epochs(ax)
    if legend:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=2, fontsize=9, frameon=False)
    return fig


def plot_by_model(runs: list[dict], published: pd.DataFrame | None = None):
    """One panel per model (see :func:`plot_model`), sharing the y-axis; one legend below."""
    import matplotlib.pyplot as plt

    archs = sorted({m["architecture"] for m in runs if m["status"] == "ok"}, key=_rank)
    cols = min(3, max(1, len(archs)))
    rows = math.ceil(len(archs) / cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.5 * rows + 0.5), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, arch in zip(axes.flat, archs):
        plot_model(runs, arch, published, ax=ax, legend=False)
        ax.label_outer()
    for ax in list(axes.flat)[len(archs):]:
        ax.set_visible(False)
    if archs:
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=8.5, frameon=False)
    return fig


# ---------------------------------------------------------------------------
# The comparison, written
# ---------------------------------------------------------------------------


def comparison_markdown(runs: list[dict], failures: dict[str, str] | None = None, extra_sections=(), summary=None,
                        left_out=()) -> str:
    """The report as Markdown; ``runs`` are the selected runs (see :func:`select_runs`)."""
    summary = summary_frame(runs, published_for(runs)) if summary is None else summary
    seeds = sorted({m["parameters"]["seed"] for m in runs})
    epochs = sorted({m["parameters"]["epochs"] for m in runs})
    lines = [
        f"# {goodness.data_title(runs)}: comparison",
        "",
        f"Generated by `dino-rnn study` from {len(runs)} run(s): seeds {', '.join(map(str, seeds))}; "
        f"{', '.join(map(str, epochs))} epochs. Losses are cross-entropy in nats per character at the "
        "best-validation epoch (mean ± standard deviation over seeds); every model of a seed was "
        "trained and tested on the same split. The test loss is also in bits per character (nats / ln 2) "
        "and as a perplexity (e^nats, of the mean over seeds)."
        + (" The published figures are one unseeded run per model, each on its own random split."
           if "published_test_loss" in summary.columns else ""),
        "",
        markdown_table(summary),
        "",
    ]
    note = protocol_note(runs)
    if note:
        lines += [f"**Not the published protocol** ({note}): these numbers check that everything runs; "
                  "they are not comparable with the published ones.", ""]
    if left_out:
        lines += ["## Runs left out", "", "Each row holds runs of one setting only.", ""]
        lines += [f"- {why}" for why in left_out] + [""]
    lines += _unfinished_section(runs, failures) + _paired_section(runs) + [goodness.goodness_markdown(runs)]
    lines += _samples_section(runs)
    lines += [line for section in extra_sections if section for line in (section.rstrip(), "")]
    return "\n".join(lines)


def _unfinished_section(runs: list[dict], failures: dict[str, str] | None) -> list[str]:
    """``## Runs that did not finish`` (diverged runs and failed notebooks), as lines; none if none."""
    bad = [m for m in runs if m["status"] != "ok"]
    if not (bad or failures):
        return []
    lines = ["## Runs that did not finish", ""]
    lines += [f"- {m['label']}, seed {m['parameters']['seed']}: {m['status']} — {m['message']}" for m in bad]
    lines += [f"- {name}: failed — {why}" for name, why in (failures or {}).items()]
    return lines + [""]


def _paired_section(runs: list[dict]) -> list[str]:
    """``## Which differences hold over seeds`` (:func:`paired_differences`), as lines; none with one seed."""
    pairs = paired_differences(runs)
    if not len(pairs):
        return []
    labels = {m["architecture"]: m["label"] for m in runs}
    return [
        "## Which differences hold over seeds",
        "",
        "Test losses paired by seed (each seed is one split shared by all models). A difference "
        "holds when its 95% paired t-interval, mean ± t(0.975, n−1)·sd/√n, excludes zero.",
        "",
        paired_markdown(pairs, labels),
        "",
    ]


def _samples_section(runs: list[dict]) -> list[str]:
    """``## Samples`` (:func:`samples_table`), as lines; none without samples."""
    st = samples_table(runs)
    if not len(st):
        return []
    return [
        "## Samples",
        "",
        "One name per start letter a–z; greedy as published, and sampled at the notebooks' "
        "temperature. New = not a training name; duplicate = the same name twice in one list. "
        "Averaged over seeds.",
        "",
        samples_markdown(st),
        "",
    ]


def default_sections(results_dir) -> list[str]:
    """Sections the report adds from the folder's other result files (the aⁿbⁿ lab's, when it has run)."""
    return [s for s in [anbn_section(results_dir)] if s]


def write_comparison(results_dir, failures: dict[str, str] | None = None, extra_sections=None,
                     reference=REFERENCE) -> pd.DataFrame:
    """Write the comparison table, CSVs and plots for the metrics files under ``results_dir``.

    ``failures`` defaults to the failed notebooks recorded by the study runner in
    ``study.json``; ``extra_sections`` to :func:`default_sections`. ``reference``: the
    committed reference to show the runs beside (``None``, or ``results_dir`` itself: none).
    Only files inside ``results_dir`` are written.
    """
    import matplotlib.pyplot as plt

    results_dir = Path(results_dir)
    runs, left_out = select_runs(load_metrics(results_dir))
    if not runs:
        raise FileNotFoundError(f"no metrics under {results_dir / 'metrics'}; run the model notebooks first")
    failures = study_failures(results_dir) if failures is None else failures
    extra_sections = list(default_sections(results_dir) if extra_sections is None else extra_sections)
    if reference is not None and Path(reference).resolve() != results_dir.resolve():
        ref_runs = load_metrics(reference)
        if ref_runs:
            extra_sections.insert(0, reference_markdown(runs, ref_runs, reference))
    published = published_for(runs)
    summary = summary_frame(runs, published)
    write_text(results_dir / "comparison.md", comparison_markdown(runs, failures, extra_sections, summary, left_out))
    write_text(results_dir / "comparison.csv", summary.to_csv(index=False, float_format="%.6g"))
    write_text(results_dir / "per_seed.csv", per_seed_frame(runs).to_csv(index=False, float_format="%.6g"))
    figures = [("validation_curves.png", plot_overlay(runs, published)),
               ("curves_by_model.png", plot_by_model(runs, published))]
    rows = goodness.ladder_rows(runs)
    if rows:
        write_text(results_dir / goodness.LADDER_CSV, goodness.ladder_csv(rows).to_csv(index=False, float_format="%.6g"))
        figures.append((goodness.BY_POSITION_PNG, goodness.plot_by_position(runs, rows, model_style)))
    for name, fig in figures:
        save_figure(fig, results_dir / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
    return summary


# ---------------------------------------------------------------------------
# The aⁿbⁿ lab's section, from anbn/*.json (written by dino_rnn.lab.run_anbn)
# ---------------------------------------------------------------------------




def load_anbn(results_dir) -> list[dict]:
    """Every ``anbn/*.json`` under ``results_dir``, by seed."""
    runs = [read_run(f) for f in sorted((Path(results_dir) / ANBN_DIR).glob("*.json"))]
    return sorted(runs, key=lambda r: r["parameters"]["seed"])


def _pm_values(values, digits: int = 4, pct: bool = False) -> str:
    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return "—"
    f = (lambda x: f"{100 * x:.{max(digits - 3, 0)}f}%") if pct else (lambda x: f"{x:.{digits}f}")
    if len(v) == 1:
        return str(v[0]) if isinstance(v[0], int) and not pct else f(v[0])
    return f"{f(float(np.mean(v)))} ± {f(float(np.std(v, ddof=1)))}"


def anbn_table(runs: list[dict]) -> str:
    """The aⁿbⁿ table in Markdown: one row per model, mean ± std over seeds."""
    return anbn_frame(runs).to_markdown(index=False, disable_numparse=True)


def anbn_frame(runs: list[dict]):
    """The aⁿbⁿ table as text cells (a DataFrame): one row per model, mean ± std over seeds."""
    import pandas as pd

    rows = []
    keys = [k for k in ANBN_ORDER if any(k in r["models"] for r in runs)]
    keys += sorted({k for r in runs for k in r["models"]} - set(keys))
    for key in keys:
        ms = [r["models"][key] for r in runs if key in r["models"]]
        ok = [m for m in ms if m["status"] == "ok"]
        largest = [m["largest_n"] for m in ok]
        rows.append(
            {
                "Model": ms[0]["label"],
                "Parameters": str(ms[0]["learnable_parameters"]),
                "Optimiser": ms[0].get("optimizer", ""),
                "Seeds": f"{len(ok)}" + (f" (+{len(ms) - len(ok)} diverged)" if len(ms) > len(ok) else ""),
                "Final train loss": _pm_values([m["final_train_loss"] for m in ok]),
                "Final valid loss": _pm_values([m["final_valid_loss"] for m in ok]),
                "Determined-position accuracy (test)": _pm_values([m["determined"]["test"]["accuracy"] for m in ok], 4, pct=True),
                "Test sequences all right": _pm_values([m["determined"]["test"]["sequences_all_right"] for m in ok], 3, pct=True),
                "n = 1..11 exact (of 11)": _pm_values([m["in_range_exact"] for m in ok], 1),
                "Largest n exact (12..20)": ", ".join("none" if n is None else str(n) for n in largest) or "—",
                "Seconds": _pm_values([m["seconds"] for m in ms], 1),
            }
        )
    return pd.DataFrame(rows)


def select_anbn(runs: list[dict]) -> tuple[list[dict], list[dict]]:
    """One setting per table (as in the Dino Names table): the runs of the most common one, and the others."""
    key = lambda r: json.dumps({k: v for k, v in r["parameters"].items() if k != "seed"}, sort_keys=True)  # noqa: E731
    counts: dict[str, int] = {}
    for r in runs:
        counts[key(r)] = counts.get(key(r), 0) + 1
    if not counts:
        return [], []
    chosen = max(counts, key=counts.get)
    return [r for r in runs if key(r) == chosen], [r for r in runs if key(r) != chosen]


def anbn_settings(parameters: dict) -> str:
    """The lab's parameters but the seed and the epochs, as its JSON names them: ``"hidden 50, clip 0.25, ..."``."""
    return ", ".join(f"{k} {show_setting(k, v)}" for k, v in parameters.items() if k not in ("seed", "epochs"))


def anbn_section(results_dir) -> str | None:
    """A Markdown section ``## aⁿbⁿ: the NumPy lab`` from ``anbn/*.json``; None if there are none."""
    runs, left_out = select_anbn(load_anbn(results_dir))
    if not runs:
        return None
    seeds = [r["parameters"]["seed"] for r in runs]
    p, t = runs[0]["parameters"], runs[0]["task"]
    base = t.get("always_b_accuracy", {}).get("test")
    base_text = f" Always predicting b scores {100 * base:.1f}% on the test set; the rest is knowing where EOS goes." if base is not None else ""
    lines = [
        "## aⁿbⁿ: the NumPy lab",
        "",
        f"The lab's task: {t['sequences']} sequences aⁿbⁿEOS with n in {t['n_range'][0]}..{t['n_range'][1]} "
        f"(data seed {t['data_seed']}), split {t['train']}/{t['valid']}/{t['test']}; {p['epochs']} epochs, one step "
        f"per sequence; {anbn_settings(p)}. Seeds {', '.join(map(str, seeds))} (the initialisation; the data are fixed). "
        "Losses are the final epoch's (the lab has no early stopping), mean ± std over seeds.",
        "",
        "*Determined-position accuracy*: argmax predictions, with the true prefix fed, at the positions whose next "
        "token is determined (every b after the first, and EOS), pooled over the test set." + base_text + " "
        "*Test sequences all right*: the share of test sequences with every determined position right. "
        "*n = 1..11 exact*: fed aⁿb, the model greedily emits exactly n−1 more b's and then EOS. "
        "*Largest n exact*: the largest n such that every n′ from 12 to n (longer than any training sequence) is "
        "completed exactly; one value per seed, \"none\" when n = 12 already fails.",
        "",
        anbn_table(runs),
        "",
    ]
    for r in left_out:
        p2 = r["parameters"]
        diff = ", ".join(f"{k} {p2.get(k)} (not {p.get(k)})" for k in sorted(set(p) | set(p2)) if k != "seed" and p2.get(k) != p.get(k))
        lines.append(f"- Left out: seed {p2['seed']}, other settings: {diff}.")
    if left_out:
        lines.append("")
    return "\n".join(lines)
