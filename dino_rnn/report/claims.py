"""The published comparison's claims, measured: a verdict for each, from a sweep's runs.

The published study said five things it never measured; ``dino_rnn/grids/claims.toml`` is the
sweep that measures them, and :func:`claims_markdown` turns its runs (and the committed
benchmark's epoch times, for the one claim about the published loop) into the table the
README quotes. Nothing here is typed by hand: every number and every verdict is computed
from the runs it is given.

1. "Using multi-layer architectures seems futile": nn.RNN, nn.LSTM, nn.GRU at 1, 2 and 3
   layers. The claim holds for a module when no deeper model's test loss is lower than the
   one-layer model's with a 95% paired interval that excludes zero.
2. GRU "often at par with the LSTM" and "more computationally efficient": their paired
   test-loss difference (at par when the 95% interval holds zero) and seconds per epoch.
3. nn.RNN "at least 4 times faster" than the from-scratch cell: the ratio of their epoch
   times, in the published-style loop (the benchmark) and in ours (the sweep).
4. The LSTM has "more than 3 times" the parameters of the RNN, the GRU "almost 2.5 times".
5. The from-scratch cell as published (a linear recurrence) against our tanh cell, paired.

A verdict is one of "holds", "does not hold", "holds in part" (said why, in the row).

A claim compares runs at the published protocol: every :data:`~dino_rnn.settings.COMPARED`
setting at its default but the ones a claim varies (:func:`protocol`); every paired
difference is :func:`~dino_rnn.report.sweepreport.paired_interval`.
"""

from __future__ import annotations

import math

from dino_rnn.report.sweepreport import paired_interval
from dino_rnn.settings import COMPARED, Settings, settings_of

LABELS = {"scratch": "from scratch", "rnn": "nn.RNN", "lstm": "nn.LSTM", "gru": "nn.GRU"}


def protocol(arch: str, **changes) -> dict:
    """The :data:`~dino_rnn.settings.COMPARED` settings of ``arch`` at the published protocol
    (every default), with ``changes`` (e.g. ``num_layers=2``)."""
    s = Settings(arch=arch, **changes)
    return {k: getattr(s, k) for k in COMPARED}


def _runs(metrics, arch: str, **changes) -> dict[int, dict]:
    """The finished, non-diverged runs of one grid point (:func:`protocol`), by seed."""
    want = protocol(arch, **changes)
    return {m["parameters"]["seed"]: m for m in metrics if m.get("status") == "ok" and settings_of(m) == want}


def _paired(a: dict[int, dict], b: dict[int, dict]) -> dict | None:
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    return paired_interval([a[s]["test_loss"] for s in seeds], [b[s]["test_loss"] for s in seeds])


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else math.nan


def _loss(runs: dict[int, dict]) -> str:
    xs = [m["test_loss"] for m in runs.values()]
    if not xs:
        return "—"
    mean = _mean(xs)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else math.nan
    return f"{mean:.4f} ± {sd:.4f} (n={len(xs)})"


def _spe(runs: dict[int, dict]) -> float:
    return _mean(m["seconds_per_epoch"] for m in runs.values())


def _diff(r: dict | None) -> str:
    if r is None:
        return "—"
    return f"{r['mean']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}]"


def _lower(r: dict) -> bool:
    """The first side is lower, with a 95% interval that excludes zero."""
    return r["high"] < 0


def _higher(r: dict) -> bool:
    return r["low"] > 0


def claim_multilayer(metrics) -> dict:
    rows, gains, missing = [], [], []
    for arch in ("rnn", "lstm", "gru"):
        one = _runs(metrics, arch)
        cells = [f"{LABELS[arch]}: 1 layer {_loss(one)}, {_spe(one):.2f} s/epoch"]
        for layers in (2, 3):
            deep = _runs(metrics, arch, num_layers=layers)
            r = _paired(deep, one)
            if r is None:
                missing.append(f"{LABELS[arch]} {layers} layers")
                continue
            cells.append(f"{layers} layers {_loss(deep)}, {_spe(deep):.2f} s/epoch, "
                         f"minus 1 layer {_diff(r)}")
            if _lower(r):
                gains.append(f"{LABELS[arch]} with {layers} layers")
        rows.append("; ".join(cells))
    if missing:
        verdict = "not measured (" + ", ".join(missing) + " missing)"
    elif gains:
        verdict = ("does not hold: " + " and ".join(gains) + (" reaches" if len(gains) == 1 else " reach")
                   + " a lower test loss than one layer (95% interval below zero)")
    else:
        verdict = "holds: no deeper model reaches a lower test loss than one layer"
    return {"claim": '1. "Using multi-layer architectures seems futile"', "measured": "<br>".join(rows),
            "verdict": verdict}


def claim_gru_lstm(metrics, benchmark: dict | None) -> dict:
    gru, lstm = _runs(metrics, "gru"), _runs(metrics, "lstm")
    r = _paired(gru, lstm)
    if r is None:
        return {"claim": '2. GRU "often at par with the LSTM", "more computationally efficient"',
                "measured": "—", "verdict": "not measured"}
    at_par = not (_lower(r) or _higher(r))
    ours = (_spe(gru), _spe(lstm))
    measured = (f"nn.GRU minus nn.LSTM test loss over {r['n']} seeds {_diff(r)}, GRU lower on "
                f"{r['a_better']} of {r['n']}; s/epoch GRU {ours[0]:.2f} / LSTM {ours[1]:.2f} (ours)")
    faster = [ours[0] < ours[1]]
    if benchmark:
        ref = (benchmark["gru"]["reference"], benchmark["lstm"]["reference"])
        measured += f", {ref[0]:.2f} / {ref[1]:.2f} (published-style loop)"
        faster.append(ref[0] < ref[1])
    par = "at par (the interval holds zero)" if at_par else (
        "not at par: the GRU's loss is lower" if _lower(r) else "not at par: the LSTM's loss is lower")
    eff = ("faster in every loop measured" if all(faster) else
           "slower in every loop measured" if not any(faster) else
           "faster in ours, slower in the published-style loop" if faster[0] else
           "slower in ours, faster in the published-style loop")
    verdict = ("holds" if at_par and all(faster) else "does not hold" if not at_par and not any(faster)
               else "holds in part") + f": {par}; GRU {eff}"
    return {"claim": '2. GRU "often at par with the LSTM", "more computationally efficient"',
            "measured": measured, "verdict": verdict}


def claim_rnn_speed(metrics, benchmark: dict | None) -> dict:
    rnn, scratch = _runs(metrics, "rnn"), _runs(metrics, "scratch", nonlinearity="tanh")
    parts, ratios = [], []
    if benchmark:
        x = benchmark["scratch"]["reference"] / benchmark["rnn"]["reference"]
        parts.append(f"published-style loop {benchmark['scratch']['reference']:.2f} / "
                     f"{benchmark['rnn']['reference']:.2f} s per epoch = {x:.1f}×")
        ratios.append(x)
    if rnn and scratch:
        x = _spe(scratch) / _spe(rnn)
        parts.append(f"ours {_spe(scratch):.3f} / {_spe(rnn):.3f} s per epoch = {x:.1f}×")
        ratios.append(x)
    if not ratios:
        verdict = "not measured"
    elif all(x >= 4 for x in ratios):
        verdict = "holds"
    elif any(x >= 4 for x in ratios):
        verdict = "holds in part: in one loop only"
    else:
        span = f"{min(ratios):.1f}×" if f"{min(ratios):.1f}" == f"{max(ratios):.1f}" else \
            f"{min(ratios):.1f}× to {max(ratios):.1f}×"
        verdict = f"does not hold: nn.RNN is {span} faster, not 4×"
    return {"claim": '3. nn.RNN "at least 4 times faster" than the from-scratch cell',
            "measured": "from scratch / nn.RNN: " + "; ".join(parts) if parts else "—", "verdict": verdict}


def claim_parameters(metrics) -> dict:
    n = {}
    for arch in ("rnn", "lstm", "gru"):
        runs = _runs(metrics, arch)
        if runs:
            n[arch] = next(iter(runs.values()))["learnable_parameters"]
    if len(n) < 3:
        return {"claim": '4. LSTM "more than 3 times" the RNN\'s parameters, GRU "almost 2.5 times"',
                "measured": "—", "verdict": "not measured"}
    lstm, gru = n["lstm"] / n["rnn"], n["gru"] / n["rnn"]
    ok_lstm, ok_gru = lstm > 3, abs(gru - 2.5) <= 0.1
    verdict = ("holds" if ok_lstm and ok_gru else "does not hold" if not (ok_lstm or ok_gru) else "holds in part")
    verdict += f": {lstm:.2f}× and {gru:.2f}×"
    return {"claim": '4. LSTM "more than 3 times" the RNN\'s parameters, GRU "almost 2.5 times"',
            "measured": f"nn.RNN {n['rnn']}, nn.LSTM {n['lstm']} ({lstm:.2f}×), nn.GRU {n['gru']} ({gru:.2f}×)",
            "verdict": verdict}


def claim_linear_cell(metrics) -> dict:
    linear, tanh = _runs(metrics, "scratch", nonlinearity="none"), _runs(metrics, "scratch", nonlinearity="tanh")
    r = _paired(linear, tanh)
    if r is None:
        return {"claim": "5. The from-scratch cell as published (linear recurrence)", "measured": "—",
                "verdict": "not measured"}
    measured = (f"linear {_loss(linear)}, tanh {_loss(tanh)}; linear minus tanh {_diff(r)}, "
                f"linear lower on {r['a_better']} of {r['n']} seeds")
    verdict = ("the linear cell is worse (its interval is above zero)" if _higher(r) else
               "the linear cell is better (its interval is below zero)" if _lower(r) else
               "no difference measured (the interval holds zero)")
    return {"claim": "5. The from-scratch cell as published (linear recurrence)", "measured": measured,
            "verdict": verdict}


def claims(metrics, benchmark: dict | None = None) -> list[dict]:
    """Each claim's row: ``claim``, ``measured``, ``verdict``."""
    metrics = list(metrics)
    return [claim_multilayer(metrics), claim_gru_lstm(metrics, benchmark), claim_rnn_speed(metrics, benchmark),
            claim_parameters(metrics), claim_linear_cell(metrics)]


def claims_markdown(metrics, benchmark: dict | None = None) -> str:
    """The claims table (Markdown), then how to read it."""
    lines = ["| claim | measured | verdict |", "|---|---|---|"]
    lines += [f"| {r['claim']} | {r['measured']} | {r['verdict']} |" for r in claims(metrics, benchmark)]
    lines += ["", "Test loss at each run's best-validation epoch, mean ± sample standard deviation over seeds; "
              "differences are paired by seed (the same split and initial draw), with their 95% paired t-interval "
              "in brackets; s/epoch: the mean over seeds of each run's median epoch, measured while the sweep "
              "ran two points at a time on two cores. The published-style loop's epoch times are the committed "
              "benchmark's (`results/benchmark.json`)."]
    return "\n".join(lines) + "\n"
