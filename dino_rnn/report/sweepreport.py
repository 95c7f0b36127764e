"""A sweep's report: one row per grid point over its seeds, paired differences, two plots.

Works on loaded metrics (the dicts :class:`dino_rnn.experiment.Experiment` writes), never on
the runner::

    rows = group_table(metrics)                       # per grid point: n, params, test mean ± std, ...
    diffs = paired_table(metrics, [("lstm", "gru")])  # A - B over the seeds both ran, 95% t-interval
    files = render(metrics, pairs, title=...)         # {"sweep.md": bytes, "sweep.csv": ..., PNGs}

A grid point is a run's :data:`~dino_rnn.settings.COMPARED` settings
(:func:`~dino_rnn.settings.settings_of`: its settings without the seed). A pair ``(A, B)``
names two selectors (:func:`parse_selector`: ``"lstm"``, ``"scratch,nonlinearity=none"``,
``"lstm,num_layers=2"``); every point matching A is paired with the point that has B's
settings and A's others, over the seeds both finished.

:func:`paired_interval` is the package's one paired statistic (the study's report and the
claims use it too): the paired t-interval ``mean ± t(0.975, n-1) · sd / sqrt(n)`` of the
per-seed differences, with Student's t quantile from ``scipy.stats``.
"""

from __future__ import annotations

import dataclasses
import io
import math
import re

from dino_rnn.settings import COMPARED, DEFAULTS, Settings, settings_of

# ---------------------------------------------------------------------------
# The paired statistic
# ---------------------------------------------------------------------------


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (``scipy.stats.t``)."""
    from scipy import stats

    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError("t_quantile needs 0 < p < 1 and df > 0")
    return float(stats.t.ppf(p, df))


def paired_interval(a, b, level: float = 0.95) -> dict:
    """Mean of ``a - b`` (paired), its ``level`` t-interval, and how often each side is lower.

    Returns ``n``, ``mean``, ``sd`` (n-1), ``low``, ``high``, ``a_better``, ``b_better``,
    ``ties``: "better" means a lower loss. With one pair the interval is undefined (NaN).
    """
    d = [x - y for x, y in zip(a, b, strict=True)]
    n = len(d)
    mean = sum(d) / n if n else math.nan
    if n >= 2:
        sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
        half = t_quantile(0.5 + level / 2.0, n - 1) * sd / math.sqrt(n)
    else:
        sd = half = math.nan
    return {
        "n": n, "mean": mean, "sd": sd, "low": mean - half, "high": mean + half,
        "a_better": sum(x < 0 for x in d), "b_better": sum(x > 0 for x in d), "ties": sum(x == 0 for x in d),
    }


# ---------------------------------------------------------------------------
# Grid points
# ---------------------------------------------------------------------------

# How a point's label shows these settings; the grid table has a column for each of OWN_COLUMNS;
# any other setting (clip, temperature, one added later) is named in the label when not its default.
SHORT = {"num_layers": "L{}", "hidden": "H{}", "lr": "lr {:g}"}
OWN_COLUMNS = ("epochs", "max_names")


def _show(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def point_name(s: dict) -> str:
    """A short readable label of a grid point, e.g. ``lstm L2 H64 lr 0.0004`` (``... clip 1``)."""
    out = s["arch"] + (f" ({s['nonlinearity']})" if s.get("nonlinearity") else "")
    out += "".join(" " + form.format(s[k]) for k, form in SHORT.items())
    named = ("arch", "nonlinearity", *SHORT, *OWN_COLUMNS)
    extra = [k for k in COMPARED if k not in named and s.get(k, DEFAULTS[k]) != DEFAULTS[k]]
    return out + "".join(f" {k} {_show(s[k])}" for k in extra)


def _key(s: dict) -> tuple:
    return tuple(s[k] for k in COMPARED)


def groups(metrics) -> dict[tuple, list[dict]]:
    """Metrics grouped by grid point, in first-seen order, each group sorted by seed."""
    out: dict[tuple, list[dict]] = {}
    for m in metrics:
        out.setdefault(_key(settings_of(m)), []).append(m)
    return {k: sorted(v, key=lambda m: m["parameters"]["seed"]) for k, v in out.items()}


def _mean_std(xs) -> tuple[float, float]:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return math.nan, math.nan
    mean = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else math.nan
    return mean, sd


def group_table(metrics):
    """One row per grid point: settings, seeds, parameters, test/valid loss, seconds per epoch.

    Means and standard deviations (n-1) are over the seeds that finished without diverging;
    ``diverged`` counts the others.
    """
    import pandas as pd

    rows = []
    for key, ms in groups(metrics).items():
        ok = [m for m in ms if m.get("status") == "ok"]
        test_mean, test_std = _mean_std([m["test_loss"] for m in ok])
        valid_mean, valid_std = _mean_std([m["valid_loss"] for m in ok])
        spe_mean, spe_std = _mean_std([m["seconds_per_epoch"] for m in ms])
        rows.append({
            **dict(zip(COMPARED, key)),
            "point": point_name(dict(zip(COMPARED, key))),
            "seeds": len(ms),
            "diverged": len(ms) - len(ok),
            "parameters": ms[0]["learnable_parameters"],
            "test_mean": test_mean, "test_std": test_std,
            "valid_mean": valid_mean, "valid_std": valid_std,
            "seconds_per_epoch": spe_mean, "seconds_per_epoch_std": spe_std,
            "gradient": "/".join(sorted({m.get("gradient", "") for m in ms})),
            "seed_list": " ".join(str(m["parameters"]["seed"]) for m in ms),
        })
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------
# Pairs
# ---------------------------------------------------------------------------


def _setting_value(name: str, text: str):
    """``text`` as a value of setting ``name``, typed as :class:`~dino_rnn.settings.Settings` types
    it (``none`` or ``all`` is None where the setting may be None and is not text)."""
    kind = str({f.name: f.type for f in dataclasses.fields(Settings)}[name])
    if re.search(r"\bNone\b", kind) and not re.search(r"\bstr\b", kind) and text.lower() in ("none", "all"):
        return None
    if re.search(r"\bint\b", kind):
        return int(text)
    if re.search(r"\bfloat\b", kind):
        return float(text)
    return text


def parse_selector(text: str) -> dict:
    """``"lstm"``, ``"scratch,nonlinearity=none"``, ``"lstm,num_layers=2,hidden=128"`` -> settings.

    Any :data:`~dino_rnn.settings.COMPARED` setting may be named, by its one name.
    Raises ``ValueError`` (one line) for an unknown setting or a malformed value.
    """
    out: dict = {}
    for i, part in enumerate(p.strip() for p in str(text).split(",")):
        if not part:
            raise ValueError(f"empty part in pair side {text!r}")
        if "=" not in part:
            if i:
                raise ValueError(f"pair side {text!r}: write settings as NAME=VALUE after the architecture")
            out["arch"] = part
            continue
        k, v = (x.strip() for x in part.split("=", 1))
        if k not in COMPARED:
            raise ValueError(f"pair side {text!r}: unknown setting {k!r}; use {', '.join(COMPARED)}")
        try:
            out[k] = _setting_value(k, v)
        except ValueError:
            raise ValueError(f"pair side {text!r}: {k}={v!r} is not a valid value") from None
    if not out:
        raise ValueError(f"empty pair side {text!r}")
    return out


def parse_pair(text: str) -> tuple[dict, dict]:
    """``"A:B"`` -> two selectors (see :func:`parse_selector`)."""
    parts = str(text).split(":")
    if len(parts) != 2:
        raise ValueError(f"pair {text!r} must be two sides A:B, e.g. lstm:gru or scratch,nonlinearity=none:scratch")
    return parse_selector(parts[0]), parse_selector(parts[1])


def _matches(s: dict, sel: dict) -> bool:
    return all(s[k] == v for k, v in sel.items())


def paired_table(metrics, pairs, level: float = 0.95):
    """For each pair (A, B) of selectors, every grid point matching A against its B partner.

    Over the seeds both points finished without diverging: mean test-loss difference A - B,
    its t-interval, how many seeds each side is lower, and both sides' seconds per epoch.
    """
    import pandas as pd

    gs = groups(metrics)
    rows = []
    for a_sel, b_sel in pairs:
        for key, ms_a in gs.items():
            sa = dict(zip(COMPARED, key))
            if not _matches(sa, a_sel):
                continue
            sb = {**sa, **b_sel}
            if sb == sa:
                continue
            ms_b = gs.get(_key(sb))
            if ms_b is None:
                continue
            ta = {m["parameters"]["seed"]: m for m in ms_a if m.get("status") == "ok"}
            tb = {m["parameters"]["seed"]: m for m in ms_b if m.get("status") == "ok"}
            common = sorted(set(ta) & set(tb))
            if not common:
                continue
            r = paired_interval([ta[s]["test_loss"] for s in common], [tb[s]["test_loss"] for s in common], level)
            rows.append({
                "a": point_name(sa), "b": point_name(sb), "seeds": r["n"],
                "mean_difference": r["mean"], "sd": r["sd"], "low": r["low"], "high": r["high"],
                "a_better": r["a_better"], "b_better": r["b_better"],
                "a_seconds_per_epoch": _mean_std([ta[s]["seconds_per_epoch"] for s in common])[0],
                "b_seconds_per_epoch": _mean_std([tb[s]["seconds_per_epoch"] for s in common])[0],
            })
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------
# Plots and files
# ---------------------------------------------------------------------------

COLORS = {"scratch": "tab:purple", "rnn": "tab:blue", "lstm": "tab:orange", "gru": "tab:green"}
MARKERS = {1: "o", 2: "s", 3: "^"}


def plot_against(table, x: str, xlabel: str, logx: bool = False):
    """Test loss (mean ± std over seeds) of every grid point against column ``x``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    for _, r in table.iterrows():
        ax.errorbar(r[x], r["test_mean"], yerr=0 if math.isnan(r["test_std"]) else r["test_std"],
                    xerr=(0 if (x != "seconds_per_epoch" or math.isnan(r["seconds_per_epoch_std"]))
                          else r["seconds_per_epoch_std"]),
                    fmt=MARKERS.get(r["num_layers"], "D"), color=COLORS.get(r["arch"], "k"), capsize=3,
                    markerfacecolor="white" if r["nonlinearity"] == "none" else COLORS.get(r["arch"], "k"),
                    label=f"{r['point']} (n={r['seeds']})")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test loss (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    if len(table) <= 24:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _fmt(x, digits: int = 4) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def markdown(table, diffs, title: str = "Sweep", notes=()) -> str:
    lines = [f"# {title}", ""]
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    lines += ["## Grid points", "",
              "| point | epochs | names | seeds | parameters | test loss | valid loss | s/epoch | gradient |",
              "|---|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        div = f" ({r['diverged']} diverged)" if r["diverged"] else ""
        names = "all" if r["max_names"] is None or (isinstance(r["max_names"], float) and math.isnan(r["max_names"])) else int(r["max_names"])
        lines.append(
            f"| {r['point']} | {r['epochs']} | {names} | {r['seeds']}{div} | {r['parameters']} | "
            f"{_fmt(r['test_mean'])} ± {_fmt(r['test_std'])} | {_fmt(r['valid_mean'])} ± {_fmt(r['valid_std'])} | "
            f"{_fmt(r['seconds_per_epoch'], 3)} | {r['gradient']} |"
        )
    lines += ["", "Test and validation loss at each run's best-validation epoch; mean ± sample standard deviation "
              "over the seeds that did not diverge; s/epoch: mean over seeds of each run's median epoch time."]
    if len(diffs):
        lines += ["", "## Paired differences (test loss, A − B)", "",
                  "| A | B | seeds | mean A − B | 95% interval | A lower | B lower | s/epoch A | s/epoch B |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for _, r in diffs.iterrows():
            lines.append(
                f"| {r['a']} | {r['b']} | {r['seeds']} | {r['mean_difference']:+.4f} | "
                f"[{_fmt(r['low'])}, {_fmt(r['high'])}] | {r['a_better']} | {r['b_better']} | "
                f"{_fmt(r['a_seconds_per_epoch'], 3)} | {_fmt(r['b_seconds_per_epoch'], 3)} |"
            )
        lines += ["", "Over the seeds both points finished; interval: paired t, mean ± t(0.975, n−1)·sd/√n "
                  "(negative: A has the lower loss)."]
    lines += ["", "![test loss against parameters](sweep-params.png)", "",
              "![test loss against seconds per epoch](sweep-seconds.png)", ""]
    return "\n".join(lines)


def render(metrics, pairs=(), title: str = "Sweep", notes=()) -> dict[str, bytes]:
    """The report's files as ``{name: bytes}``: sweep.md, sweep.csv, sweep-pairs.csv, two PNGs."""
    table = group_table(metrics)
    diffs = paired_table(metrics, pairs)
    files = {
        "sweep.csv": table.to_csv(index=False).encode("utf-8"),
        "sweep-pairs.csv": diffs.to_csv(index=False).encode("utf-8"),
    }
    if len(table):
        files["sweep-params.png"] = _png(plot_against(table, "parameters", "learnable parameters (log scale)", logx=True))
        files["sweep-seconds.png"] = _png(plot_against(table, "seconds_per_epoch", "seconds per epoch"))
    files["sweep.md"] = markdown(table, diffs, title, notes).encode("utf-8")
    return files
