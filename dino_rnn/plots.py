"""Plots of one run: its learning curves, and the aⁿbⁿ lab's curves overlaid.

What a notebook draws as it trains, and what :class:`~dino_rnn.experiment.Experiment` and
:func:`~dino_rnn.lab.run_anbn` save beside their metrics. The report (:mod:`dino_rnn.report`)
draws its comparisons with the same styles.
"""

from __future__ import annotations

import numpy as np

# Plots: the loss with its unit; per model a colour (Okabe–Ito, safe for colour-blind readers),
# a line style and a marker, so that curves stay apart in grayscale too.
LOSS_LABEL = "cross-entropy (nats per character)"
STYLES = [
    ("#0072B2", "-", "o"),
    ("#E69F00", "--", "s"),
    ("#009E73", "-.", "^"),
    ("#D55E00", ":", "D"),
    ("#CC79A7", (0, (5, 1.5)), "v"),
    ("#56B4E9", (0, (3, 1, 1, 1, 1, 1)), "P"),
]
TRAIN_COLOR, VALID_COLOR = "#0072B2", "#D55E00"


# ---------------------------------------------------------------------------
# One run's learning curves
# ---------------------------------------------------------------------------


def whole_epochs(ax, last: int | None = None) -> None:
    """Ticks on whole epochs only (at 2 epochs the axis shows 1 and 2, not steps of 0.25); with
    ``last``, only epochs 1 to ``last`` (the axis may go on, e.g. for the spread shown beyond)."""
    from matplotlib.ticker import MaxNLocator

    locator = MaxNLocator(integer=True, min_n_ticks=1)
    if last is None:
        ax.xaxis.set_major_locator(locator)
    else:
        ax.set_xticks([t for t in locator.tick_values(1, last) if 1 <= t <= last])


def plot_history(history, title: str = "", ax=None, train_label: str = "training (dropout on)"):
    """Training and validation loss per epoch, the best epoch marked. Returns the figure.

    Training is a solid line, validation a dashed one (readable in grayscale); the legend
    sits below the axes, where it covers no curve.
    """
    import matplotlib.pyplot as plt

    fig, ax = (plt.subplots(figsize=(6.4, 4.2), layout="constrained") if ax is None else (ax.figure, ax))
    tr = history.train_loss if hasattr(history, "train_loss") else history["train_loss"]
    va = history.valid_loss if hasattr(history, "valid_loss") else history["valid_loss"]
    best = history.best_epoch if hasattr(history, "best_epoch") else history.get("best_epoch", 0)
    epochs = np.arange(1, len(tr) + 1)
    ax.plot(epochs, tr, color=TRAIN_COLOR, ls="-", label=train_label)
    ax.plot(epochs, va, color=VALID_COLOR, ls="--", label="validation")
    if best:
        ax.axvline(best, color="0.45", ls=":", lw=1)
        ax.plot([best], [va[best - 1]], ls="none", marker="o", mfc="white", mec="black", ms=6,
                label=f"best validation: epoch {best}, {va[best - 1]:.3f}")
    ax.set(xlabel="epoch", ylabel=LOSS_LABEL, title=title)
    ax.grid(alpha=0.3)
    whole_epochs(ax)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=8, frameon=False)
    return fig


ANBN_ORDER = ("numpy_rnn", "numpy_lstm", "torch_lstm", "numpy_lstm_adam")
ANBN_LABELS = {
    "numpy_rnn": "NumPy RNN (SGD)",
    "numpy_lstm": "NumPy LSTM (SGD)",
    "torch_lstm": "PyTorch LSTM (Adam)",
    "numpy_lstm_adam": "NumPy LSTM (NumPy Adam, control)",
}


def plot_anbn(result: dict):
    """Training and validation loss per epoch of every aⁿbⁿ model, overlaid (two panels, one above
    the other, so that the figure and its legend still read when a phone scales it down)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(5.4, 7.6), sharex=True, layout="constrained")
    for i, key in enumerate(k for k in ANBN_ORDER if k in result["models"]):
        m = result["models"][key]
        color, ls, marker = STYLES[i % len(STYLES)]  # colour, line style and marker: apart in grayscale too
        for ax, curve in zip(axes, ("train_loss", "valid_loss")):
            y = m["history"][curve]
            every = max(1, len(y) // 8)
            ax.plot(np.arange(1, len(y) + 1), y, color=color, ls=ls, marker=marker, ms=5, markevery=(i * every // 4, every),
                    label=f"{m['label']} ({m['learnable_parameters']} params)")
    for ax, title in zip(axes, ("training loss (mean over the epoch)", "validation loss")):
        ax.set_title(title, fontsize=11)
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.set_ylabel("cross-entropy (nats per token)", fontsize=10)
        whole_epochs(ax)
    axes[1].set_xlabel("epoch", fontsize=10)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=1, fontsize=10, frameon=False)
    fig.suptitle(f"aⁿbⁿ, seed {result['parameters']['seed']}: the lab's three models" + (" and the Adam control" if "numpy_lstm_adam" in result["models"] else "") + " (log scale)", fontsize=11)
    return fig
