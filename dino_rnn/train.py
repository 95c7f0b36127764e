"""Training: the published protocol, written once for every model.

AdamW (lr 4e-4), cross-entropy, one optimizer step per name, names in the same order
every epoch (as published). The epoch's training loss is the mean over names of each
name's mean cross-entropy, accumulated during the epoch with dropout on; validation
and test losses are the same mean in eval mode. The state with the lowest validation
loss is kept, and the reported training / validation / test losses are that epoch's
(the published table's definitions).

Speed without changing the arithmetic: tensors are built once (:func:`encode_names`),
training runs on one intra-op thread (the per-name work is far too small to share),
losses are summed on the device with no ``.item()`` per step, and AdamW takes its
fused path where the device supports it.
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import optimizer as _optim_impl

from .data import Example


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
    total = torch.zeros((), device=next(model.parameters()).device)
    for e in examples:
        logits, _ = model(e.x)
        total += F.cross_entropy(logits, e.y)
    return total.item() / len(examples)


class _FusedAdamW:
    """``optimizer.step()`` for a plain fused ``torch.optim.AdamW``, minus its Python overhead.

    Calls the same kernel (``torch._fused_adamw_``) with the optimizer's own state
    tensors and hyper-parameters, exactly as ``AdamW.step`` does for a single CPU/GPU
    float group, so the update is bit-for-bit the same and the optimizer's
    ``state_dict`` stays valid. ``make`` returns ``None`` (use ``optimizer.step()``)
    for anything else: other optimizers, several groups, amsgrad, maximize, hooks,
    tensor hyper-parameters, mixed devices or dtypes.
    """

    def __init__(self, optimizer, params, group):
        self.params = params
        for p in params:
            st = optimizer.state[p]
            if len(st) == 0:  # lazy state, as AdamW's _init_group makes it for fused
                st["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        self.exp_avgs = [optimizer.state[p]["exp_avg"] for p in params]
        self.exp_avg_sqs = [optimizer.state[p]["exp_avg_sq"] for p in params]
        # The step counts become views of one vector, so one add_ advances them all
        # (``_foreach_add_`` over separate scalars costs more than the AdamW kernel).
        self.step_buf = torch.stack([optimizer.state[p]["step"].detach() for p in params])
        for k, p in enumerate(params):
            optimizer.state[p]["step"] = self.step_buf[k]
        self.steps = [optimizer.state[p]["step"] for p in params]
        beta1, beta2 = group["betas"]
        self.kw = dict(
            amsgrad=False, lr=group["lr"], beta1=float(beta1), beta2=float(beta2),
            weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
            grad_scale=None, found_inf=None,
        )

    @classmethod
    def make(cls, optimizer):
        if type(optimizer) is not torch.optim.AdamW or len(optimizer.param_groups) != 1:
            return None
        group = optimizer.param_groups[0]
        params = [p for p in group["params"] if p.requires_grad]
        if (
            not group.get("fused")
            or group.get("amsgrad") or group.get("maximize") or group.get("capturable")
            or group.get("differentiable") or not group.get("decoupled_weight_decay", True)
            or any(torch.is_tensor(group[k]) for k in ("lr", "weight_decay", "eps"))
            or any(torch.is_tensor(b) for b in group["betas"])
            or optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks
            or getattr(_optim_impl, "_global_optimizer_pre_hooks", None)
            or getattr(_optim_impl, "_global_optimizer_post_hooks", None)
            or len({(p.device, p.dtype) for p in params}) != 1
            or any(p.dtype not in (torch.float32, torch.float64) for p in params)
            or len(params) != len(group["params"])
        ):
            return None
        return cls(optimizer, params, group)

    def step(self) -> None:
        self.step_buf.add_(1)
        torch._fused_adamw_(
            self.params, [p.grad for p in self.params], self.exp_avgs, self.exp_avg_sqs, [],
            self.steps, **self.kw,
        )


def train_epoch(model: nn.Module, examples: list[Example], optimizer: torch.optim.Optimizer) -> float:
    """One pass, one optimizer step per name; returns the mean training loss (dropout on).

    Where the model provides ``loss_and_grad`` (every model of :mod:`dino_rnn.models`
    at one layer), each step's gradient is computed by it, without building an autograd
    graph; the numbers are autograd's up to float rounding (``tests/test_speed_semantics.py``).
    """
    model.train()
    fast_grad = getattr(model, "loss_and_grad", None)
    fast_step = _FusedAdamW.make(optimizer)
    fast_total, slow_losses = 0.0, []
    with torch.no_grad():
        for e in examples:
            loss = fast_grad(e.x, e.y) if fast_grad is not None else None
            if loss is None:  # autograd
                with torch.enable_grad():
                    logits, _ = model(e.x)
                    loss = F.cross_entropy(logits, e.y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                slow_losses.append(loss.detach())
            else:
                fast_total += loss
            if fast_step is not None:
                fast_step.step()
            else:
                optimizer.step()
    if slow_losses:
        fast_total += torch.stack(slow_losses).sum().item()
    return fast_total / len(examples)


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
    epochs: int,
    train_epoch: Callable[[], float],
    validate: Callable[[], float],
    snapshot: Callable[[], object],
    restore: Callable[[object], object],
    test: Callable[[], float],
    *,
    progress: bool = True,
    desc: str = "training",
) -> History:
    """The epoch loop every trainer shares (PyTorch here, NumPy in :mod:`dino_rnn.lab`).

    Each epoch: ``train_epoch()`` (returns the epoch's training loss), ``validate()``, the
    seconds both took. A NaN or infinite loss stops training at once and marks the history
    ``"diverged"``. The state with the lowest validation loss is kept (``snapshot()``),
    put back at the end (``restore(state)``), and ``test()`` is measured on it.
    """
    hist = History()
    best = math.inf
    bar = progress_bar(range(1, epochs + 1), desc=desc, unit="epoch", disable=not progress)
    for epoch in bar:
        t0 = time.perf_counter()
        tr = train_epoch()
        va = validate()
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
            hist.best_state = snapshot()
        bar.set_postfix(train=f"{tr:.4f}", valid=f"{va:.4f}", best=hist.best_epoch)
    bar.close()
    if hist.best_state is not None:
        restore(hist.best_state)
        hist.test_loss = test()
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
    progress: bool = True,
    desc: str = "training",
) -> History:
    """Train ``model`` in place under the published protocol; it ends holding the best state.

    ``threads=1`` runs torch on one intra-op thread (fastest for one-name steps on a CPU);
    ``None`` leaves torch's setting alone. Raises nothing on divergence: the history says
    ``status="diverged"`` and why, and training stops at that epoch.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    device = next(model.parameters()).device
    train, valid, test = (to_device(s, device) for s in (train, valid, test))
    optimizer = make_optimizer(model, lr)
    return run_epochs(
        epochs,
        lambda: train_epoch(model, train, optimizer),
        lambda: evaluate(model, valid),
        lambda: copy.deepcopy(model.state_dict()),
        model.load_state_dict,
        lambda: evaluate(model, test),
        progress=progress,
        desc=desc,
    )
