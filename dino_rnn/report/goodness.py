"""How good is good: the recurrent models beside the count models, in nats, bits and perplexity.

From the selected runs (:func:`dino_rnn.report.tables.select_runs`) and the names file they
read (found by the sha256 each metrics file records), this module gives

- the ladder (:func:`ladder_rows`): :func:`dino_rnn.baselines.seed_ladder` on every seed of the
  runs, each rung's smoothing chosen on that seed's validation names;
- the gain of recurrence (:func:`gains`): for each model, the best count model's test loss
  minus the model's, paired by seed, with :func:`~dino_rnn.report.sweepreport.paired_interval`'s
  95% t-interval; the best count model of a seed is the rung with the lowest *validation* loss;
- the loss by position in the name (:func:`plot_by_position`), from the ``test_loss_by_position``
  the runs recorded (older metrics files lack it: they are left out, and the caption says so);
- the data's own title (:func:`data_title`): "Dino Names" only for the Dino Names file,
  recognised by its sha256, else the file's name.

Every loss comes in nats per character, bits per character (nats / ln 2) and perplexity
(e^nats). A mean over seeds is taken in nats; its bits are the mean's, and its perplexity is
e^(mean nats), the geometric mean of the seeds' perplexities.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from dino_rnn import baselines as B
from dino_rnn.data import DATA_SHA256, DEFAULT_FILE, DataError, read_names, sha256_of
from dino_rnn.plots import LOSS_LABEL
from dino_rnn.report.sweepreport import paired_interval

POOL = 12  # positions from here on are pooled into one point ("12+")
LADDER_CSV = "baselines.csv"
BY_POSITION_PNG = "loss_by_position.png"
SECTION = "How good is good"


# ---------------------------------------------------------------------------
# Which data
# ---------------------------------------------------------------------------


def data_sha(runs: list[dict]) -> str | None:
    """The sha256 of the names file the runs read (None when they record none)."""
    shas = {(m.get("data") or {}).get("sha256") for m in runs}
    return next(iter(shas)) if len(shas) == 1 else None


def is_dino_names(runs: list[dict]) -> bool:
    """Whether every run read the Dino Names file (recognised by :data:`dino_rnn.data.DATA_SHA256`)."""
    return bool(runs) and all((m.get("data") or {}).get("sha256") == DATA_SHA256 for m in runs)


def data_title(runs: list[dict]) -> str:
    """"Dino Names" for the Dino Names file; else the names file's name (``"pokemon.txt"``)."""
    if is_dino_names(runs):
        return "Dino Names"
    files = list(dict.fromkeys(Path((m.get("data") or {}).get("path") or "your names").name for m in runs))
    return ", ".join(files) or "your names"


def names_file(runs: list[dict]) -> Path | None:
    """The names file the runs read, found where they say it was, at ``$DINO_RNN_DATA`` or at the
    downloaded Dino Names, and checked against the sha256 they record; None if none matches."""
    want = data_sha(runs)
    if want is None:
        return None
    places = [(m.get("data") or {}).get("path") for m in runs] + [os.environ.get("DINO_RNN_DATA"), str(DEFAULT_FILE)]
    for p in dict.fromkeys(x for x in places if x):
        try:
            if Path(p).is_file() and sha256_of(Path(p)) == want:
                return Path(p)
        except OSError:
            continue
    return None


# ---------------------------------------------------------------------------
# The ladder and the gains
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _seed_ladder(path: str, sha: str, seed: int, max_names: int | None) -> tuple:
    """One seed's ladder, once per process (``sha``: the file's, so a changed file is counted again)."""
    names, _ = read_names(path)
    return tuple(B.seed_ladder(names, seed, max_names))


def warm_ladder(path, seeds, max_names: int | None = None) -> None:
    """Count the ladder of each of ``seeds`` now, into this process's cache, for a report about to
    read it (:func:`ladder_rows` of runs on that names file finds it there)."""
    sha = sha256_of(Path(path))
    for seed in seeds:
        _seed_ladder(str(path), sha, int(seed), max_names)


def ladder_rows(runs: list[dict]) -> list[dict] | None:
    """:func:`dino_rnn.baselines.seed_ladder` for every seed of ``runs`` (flat, seed by seed), counted
    on the training names the runs trained on (their ``max_names``), or None when their names file
    cannot be found (:func:`names_file`)."""
    path = names_file(runs)
    if path is None:
        return None
    caps = {m["parameters"].get("max_names") for m in runs}
    cap = caps.pop() if len(caps) == 1 else None
    try:
        seeds = sorted({m["parameters"]["seed"] for m in runs})
        return [dict(r) for s in seeds for r in _seed_ladder(str(path), data_sha(runs), s, cap)]
    except DataError:
        return None


def best_by_seed(rows: list[dict]) -> dict[int, dict]:
    """Each seed's best count model: the rung with the lowest validation loss."""
    return {s: B.best([r for r in rows if r["seed"] == s]) for s in dict.fromkeys(r["seed"] for r in rows)}


def ladder_csv(rows: list[dict]) -> pd.DataFrame:
    """The ladder, one row per seed and rung, numbers as numbers (``baselines.csv``)."""
    out = []
    for r in rows:
        row = {k: r[k] for k in ("seed", "model", "order", "smoothing", "value")}
        for k in ("train_loss", "valid_loss", "test_loss"):
            row[k], row[f"{k}_bits"], row[f"{k}_perplexity"] = r[k], B.bits(r[k]), B.perplexity(r[k])
        out.append(row)
    return pd.DataFrame(out)


def _pm(values, digits: int = 4) -> str:
    v = [x for x in values if math.isfinite(x)]
    if not v:
        return "—"
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{np.mean(v):.{digits}f} ± {np.std(v, ddof=1):.{digits}f}"


def ladder_frame(rows: list[dict]) -> pd.DataFrame:
    """The ladder as text cells: one row per rung, mean ± std over seeds, test in three units."""
    best = best_by_seed(rows)
    seeds = len(best)
    out = []
    for order, smoothing in B.LADDER:
        rs = [r for r in rows if (r["order"], r["smoothing"]) == (order, smoothing)]
        values = sorted({r["value"] for r in rs if math.isfinite(r["value"])})
        what = {B.ADD_K: "k", B.KNESER_NEY: "D"}.get(smoothing)
        test = float(np.mean([r["test_loss"] for r in rs]))
        n_best = sum(b["model"] == rs[0]["model"] for b in best.values())
        out.append({
            "Count model": rs[0]["model"],
            "Smoothing (chosen on validation)": f"{what} = " + ", ".join(f"{v:g}" for v in values) if what else "—",
            "Train loss": _pm([r["train_loss"] for r in rs]),
            "Validation loss": _pm([r["valid_loss"] for r in rs]),
            "Test loss": _pm([r["test_loss"] for r in rs]),
            "Test bits / char": f"{B.bits(test):.3f}",
            "Test perplexity": f"{B.perplexity(test):.2f}",
            "Best on validation": f"{n_best} of {seeds} seeds" if n_best else "—",
        })
    return pd.DataFrame(out)


def gains(runs: list[dict], rows: list[dict]) -> list[dict]:
    """For each model, the best count model's test loss minus the model's (positive: recurrence
    helps), paired by seed: :func:`paired_interval` of (best count model, model)."""
    best = best_by_seed(rows)
    out = []
    for arch in dict.fromkeys(m["architecture"] for m in runs):
        ms = [m for m in runs if m["architecture"] == arch and m["status"] == "ok" and m["parameters"]["seed"] in best]
        if not ms:
            continue
        base = [best[m["parameters"]["seed"]]["test_loss"] for m in ms]
        r = paired_interval(base, [m["test_loss"] for m in ms])
        out.append({"architecture": arch, "label": ms[0]["label"], "seeds": r["n"], "gain": r["mean"],
                    "low": r["low"], "high": r["high"], "model_lower_on": r["b_better"],
                    "holds": r["low"] > 0 or r["high"] < 0})
    return out


def gains_frame(gain_rows: list[dict]) -> pd.DataFrame:
    """:func:`gains` as text cells, in nats and in bits per character."""
    out = []
    for g in gain_rows:
        interval = "—" if math.isnan(g["low"]) else f"[{g['low']:.4f}, {g['high']:.4f}]"
        out.append({
            "Model": g["label"],
            "Gain over the best count model (nats / char)": f"{g['gain']:.4f}",
            "95% interval": interval,
            "Gain (bits / char)": f"{B.bits(g['gain']):.3f}",
            "Model lower on seeds": f"{g['model_lower_on']} of {g['seeds']}",
            "Holds": "—" if math.isnan(g["low"]) else "yes" if g["holds"] else "no",
        })
    return pd.DataFrame(out)


def to_markdown(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, disable_numparse=True)


def goodness_text(runs: list[dict], rows: list[dict]) -> str:
    """The paragraph that says what the ladder is and how to read the gains."""
    best = best_by_seed(rows)
    names = list(dict.fromkeys(b["model"] for b in best.values()))
    v = math.exp(rows[0]["test_loss"]) if rows and rows[0]["smoothing"] == B.UNIFORM else math.nan
    return (f"What the recurrent models' losses are worth: count models of the same names, measured the same way "
            f"(every character after the first, then the end marker; a name's mean, then the mean over names), "
            f"each counted on the seed's training names with its smoothing chosen on the validation names only. "
            f"The uniform model, which knows only the {v:.0f} symbols, costs ln {v:.0f} nats per character. "
            f"Bits per character are nats / ln 2; perplexity is e^nats, the number of equally likely characters "
            f"that would cost as much. The best count model of each seed, the one with the lowest validation loss, "
            f"is {' or '.join(names)}; the gain of a model is that count model's test loss minus the model's, "
            f"paired by seed (positive: the model predicts better), with its 95% paired t-interval.")


def goodness_markdown(runs: list[dict], rows: list[dict] | None = None, plot: str | None = BY_POSITION_PNG) -> str:
    """``## How good is good``: the ladder, the gains, the position plot's note; "" without the names file."""
    rows = ladder_rows(runs) if rows is None else rows
    if not rows:
        return (f"## {SECTION}\n\nThe count models need the names file the runs read (sha256 "
                f"{str(data_sha(runs))[:12]}…); it was not found, so they are not shown.\n")
    lines = [f"## {SECTION}", "", goodness_text(runs, rows), "", "### The count models", "",
             to_markdown(ladder_frame(rows)), "", "### The gain of recurrence", "",
             to_markdown(gains_frame(gains(runs, rows))), ""]
    missing = without_positions(runs)
    if plot:
        lines += ["### Loss by position in the name", "", position_caption(runs, rows) + f" (`{plot}`)", ""]
    elif missing:
        lines += [missing_note(missing), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# By position
# ---------------------------------------------------------------------------


def without_positions(runs: list[dict]) -> list[str]:
    """The runs whose metrics have no ``test_loss_by_position`` (older files), by model:
    ``["nn.RNN seed 0", "nn.LSTM seeds 0, 1"]``."""
    seeds: dict[str, list[int]] = {}
    for m in runs:
        if m["status"] == "ok" and not m.get("test_loss_by_position"):
            seeds.setdefault(m["label"], []).append(m["parameters"]["seed"])
    return [f"{label} seed{'s' * (len(s) > 1)} {', '.join(map(str, s))}" for label, s in seeds.items()]


def missing_note(missing: list[str]) -> str:
    return (f"Not in the position plot: {'; '.join(missing)}. Their metrics files were written before runs "
            "recorded the loss by position; run those notebooks again to add them.")


def pooled(pos: dict, pool: int = POOL) -> np.ndarray:
    """Per-position means 1 .. pool-1, then the count-weighted mean of every position from ``pool`` on."""
    mean, count = np.asarray(pos["mean"], float), np.asarray(pos["count"], float)
    head = list(mean[: pool - 1]) + [math.nan] * max(0, pool - 1 - len(mean))
    tail = (mean[pool - 1 :] * count[pool - 1 :]).sum() / count[pool - 1 :].sum() if count[pool - 1 :].sum() else math.nan
    return np.array(head + [tail])


def position_curves(runs: list[dict], rows: list[dict], pool: int = POOL) -> dict[str, np.ndarray]:
    """Label → the mean over seeds of :func:`pooled` per-position test losses; the best count model last."""
    with warnings.catch_warnings():  # a position no seed reaches is NaN, and says nothing
        warnings.simplefilter("ignore", RuntimeWarning)
        return _position_curves(runs, rows, pool)


def _position_curves(runs: list[dict], rows: list[dict], pool: int) -> dict[str, np.ndarray]:
    out = {}
    for arch in dict.fromkeys(m["architecture"] for m in runs):
        ps = [pooled(m["test_loss_by_position"], pool) for m in runs
              if m["architecture"] == arch and m["status"] == "ok" and m.get("test_loss_by_position")]
        if ps:
            out[next(m["label"] for m in runs if m["architecture"] == arch)] = np.nanmean(ps, axis=0)
    best = best_by_seed(rows)
    if best:
        label = "best count model (" + " or ".join(dict.fromkeys(b["model"] for b in best.values())) + ")"
        out[label] = np.nanmean([pooled(b["test_loss_by_position"], pool) for b in best.values()], axis=0)
    return out


def position_caption(runs: list[dict], rows: list[dict], pool: int = POOL) -> str:
    missing = without_positions(runs)
    return (f"The mean test loss at each target position (position 1 predicts the second character from the first; "
            f"the last position of a name predicts its end), per character over the test names that reach it, "
            f"then the mean over seeds; positions {pool} and on are pooled. These per-position means, weighted by "
            "how many names reach each position, give the loss per character, which weighs long names more than "
            "the tables' loss (the mean of each name's mean)." + (" " + missing_note(missing) if missing else ""))


def plot_by_position(runs: list[dict], rows: list[dict], style, pool: int = POOL):
    """Every model's and the best count model's test loss by position in the name, as one plot;
    ``style(arch)``: a model's colour, line style and marker (:func:`dino_rnn.report.tables.model_style`)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.6, 4.8), layout="constrained")
    curves = position_curves(runs, rows, pool)
    archs = {m["label"]: m["architecture"] for m in runs}
    x = np.arange(1, pool + 1)
    for label, y in curves.items():
        if label in archs:
            st = style(archs[label])
            ax.plot(x, y, color=st["color"], ls=st["ls"], marker=st["marker"], ms=4, lw=1.6, label=label)
        else:
            ax.plot(x, y, color="black", ls=(0, (1, 1)), marker="s", ms=4, lw=2.2, label=label)
    ax.set_xticks(x, [str(i) for i in x[:-1]] + [f"{pool}+"])
    ax.set(xlabel="target position in the name (1: the second character)", ylabel=f"test {LOSS_LABEL}",
           title="Test loss by position in the name (mean over seeds)")
    ax.grid(alpha=0.3)
    if curves:
        fig.legend(loc="outside lower center", ncol=2, fontsize=8.5, frameon=False)
    return fig

