"""Training: the published protocol, written once for every model.

AdamW (lr 4e-4), cross-entropy, one optimizer step per name, names in the same order
every epoch (as published). The epoch's training loss is the mean over names of each
name's mean cross-entropy, accumulated during the epoch with dropout on; validation
and test losses are the same mean in eval mode. The state with the lowest validation
loss is kept, and the reported training / validation / test losses are that epoch's
(the published table's definitions).

The pieces, in the order they run: :func:`fit` makes the optimizer and the step
(:mod:`dino_rnn.fast.steps`: how the gradient is computed, chosen once per run), and
:func:`run_epochs`, the one epoch loop of every trainer in the package, calls
:func:`train_epoch` and the step's evaluation once per epoch and keeps the best state.

Speed without changing the arithmetic: tensors are built once (:func:`encode_names`),
training runs on one intra-op thread (the per-name work is far too small to share), and
AdamW takes its fused kernel directly (:mod:`dino_rnn.fast.torch_private`).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from dino_rnn.data import Example
from dino_rnn.fast.steps import evaluate_pairs, torch_step


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch: the same seed gives the same numbers on the same machine."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"``: CUDA when present, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """AdamW with PyTorch's defaults (weight decay 0.01), fused where supported."""
    try:
        return torch.optim.AdamW(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, ValueError):  # a device without a fused kernel
        return torch.optim.AdamW(model.parameters(), lr=lr, foreach=True)


def to_device(examples: list[Example], device: torch.device) -> list[Example]:
    if all(e.x.device == device for e in examples):
        return examples
    return [Example(e.name, e.x.to(device), e.y.to(device)) for e in examples]


@torch.no_grad()
def evaluate(model: nn.Module, examples: list[Example]) -> float:
    """Mean over names of each name's mean cross-entropy, in eval mode (no dropout)."""
    model.eval()
    return evaluate_pairs(model, pairs_of(examples))


def pairs_of(examples: list[Example]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` per name: what a step takes."""
    return [(e.x, e.y) for e in examples]


def train_epoch(step, pairs) -> float:
    """One pass, one step per sequence, in order; the mean training loss (dropout on).

    ``step`` is any of :mod:`dino_rnn.fast.steps` (how it computes its gradient is its business);
    ``pairs`` are its ``(x, y)`` sequences.
    """
    step.train()
    total = 0.0
    for x, y in pairs:
        total += step(x, y)
    return total / len(pairs)


@dataclass
class History:
    """Per-epoch curves and the best-validation summary of one training run."""

    train_loss: list[float] = field(default_factory=list)
    valid_loss: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    best_epoch: int = 0  # 1-based
    best_state: dict | None = None
    test_loss: float = math.nan
    status: str = "ok"  # or "diverged"
    message: str = ""
    gradient: str = ""  # how the steps computed their gradient (see dino_rnn.fast.steps)

    @property
    def best_train_loss(self) -> float:
        return self.train_loss[self.best_epoch - 1] if self.best_epoch else math.nan

    @property
    def best_valid_loss(self) -> float:
        return self.valid_loss[self.best_epoch - 1] if self.best_epoch else math.nan

    @property
    def seconds_per_epoch(self) -> float:
        return float(np.median(self.seconds)) if self.seconds else math.nan


def progress_bar(iterable, **kwargs):
    """tqdm's notebook widget where ipywidgets is installed, else its text bar.

    The text bar reads well in a terminal, in Jupyter and in papermill's executed notebooks
    (nbconvert keeps each stream's last line); ``tqdm.auto`` without ipywidgets would warn.
    ``DINO_RNN_PROGRESS=text`` (set by ``dino-rnn study`` for its kernels) keeps the text bar:
    a widget in an executed notebook needs a script from the network to draw.
    """
    import importlib.util
    import os

    if os.environ.get("DINO_RNN_PROGRESS") != "text" and importlib.util.find_spec("ipywidgets"):
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm(iterable, mininterval=1.0, **kwargs)


def run_epochs(
    step,
    train,
    valid,
    test=None,
    *,
    epochs: int,
    keep_best: bool = True,
    progress: bool = True,
    desc: str = "training",
) -> History:
    """The epoch loop every trainer shares: the PyTorch models, the NumPy nets, the aⁿbⁿ lab.

    ``step`` is one of :mod:`dino_rnn.fast.steps`; ``train``, ``valid``, ``test`` are lists of
    its ``(x, y)`` sequences. Each epoch: :func:`train_epoch` (the epoch's training loss),
    ``step.evaluate(valid)``, the seconds both took. A NaN or infinite loss stops training at
    once and marks the history ``"diverged"``. With ``keep_best`` the state with the lowest
    validation loss is kept (``step.snapshot()``), put back at the end (``step.restore``)
    and ``test`` is measured on it; without, the model ends as the last epoch left it.
    """
    hist = History(gradient=step.gradient)
    best = math.inf
    bar = progress_bar(range(1, epochs + 1), desc=desc, unit="epoch", disable=not progress)
    for epoch in bar:
        t0 = time.perf_counter()
        tr = train_epoch(step, train)
        va = step.evaluate(valid)
        hist.seconds.append(time.perf_counter() - t0)
        hist.train_loss.append(tr)
        hist.valid_loss.append(va)
        if not (math.isfinite(tr) and math.isfinite(va)):
            hist.status = "diverged"
            hist.message = (
                f"loss became {'NaN' if math.isnan(tr) or math.isnan(va) else 'infinite'} at epoch {epoch} "
                f"(train {tr}, validation {va}); try a smaller learning rate"
            )
            break
        if va < best:
            best, hist.best_epoch = va, epoch
            if keep_best:
                hist.best_state = step.snapshot()
        bar.set_postfix(train=f"{tr:.4f}", valid=f"{va:.4f}", best=hist.best_epoch)
    bar.close()
    if hist.best_state is not None:
        step.restore(hist.best_state)
        if test is not None:
            hist.test_loss = step.evaluate(test)
    return hist


def fit(
    model: nn.Module,
    train: list[Example],
    valid: list[Example],
    test: list[Example],
    *,
    epochs: int = 40,
    lr: float = 4e-4,
    threads: int | None = 1,
    autograd: bool = False,
    progress: bool = True,
    desc: str = "training",
) -> History:
    """Train ``model`` in place under the published protocol; it ends holding the best state.

    The gradient is written out where it applies (:mod:`dino_rnn.fast.fastgrad`), else, or with
    ``autograd=True``, autograd's; ``history.gradient`` says which. ``threads=1`` runs
    torch on one intra-op thread (fastest for one-name steps on a CPU); ``None`` leaves
    torch's setting alone. Raises nothing on divergence: the history says
    ``status="diverged"`` and why, and training stops at that epoch.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    device = next(model.parameters()).device
    train, valid, test = (pairs_of(to_device(s, device)) for s in (train, valid, test))
    step = torch_step(model, make_optimizer(model, lr), autograd=autograd)
    return run_epochs(step, train, valid, test, epochs=epochs, progress=progress, desc=desc)
