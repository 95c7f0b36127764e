"""Training: the published protocol, written once for every model, with the loop in view.

AdamW (lr 4e-4), cross-entropy, one optimizer step per name, names in the same order
every epoch (as published). The epoch's training loss is the mean over names of each
name's mean cross-entropy, accumulated during the epoch with dropout on; validation
and test losses are the same mean in eval mode. The state with the lowest validation
loss is kept, and the reported training / validation / test losses are that epoch's
(the published table's definitions).

Read it top to bottom:

1. :class:`Step`, one training step of a PyTorch model: forward, loss, ``loss.backward()``,
   optional global-norm clipping, ``optimizer.step()``. :class:`NumpyStep` is the same for the NumPy nets, whose backward
   pass is written by hand (:mod:`dino_rnn.numpy_nets`).
2. :func:`make_step` picks the step. By default, where it applies, that is the compiled
   path's drop-in step (:mod:`dino_rnn.fast`): the same gradient (its equivalence tests are
   the contract), computed by compiled kernels, many times faster on a CPU (docs/speed.md). ``autograd=True``
   (a notebook's ``AUTOGRAD = True``, or ``DINO_RNN_AUTOGRAD=1``) trains with the plain steps.
3. :func:`run_epochs`, the one epoch loop of every trainer (the four models, the NumPy
   nets, the aⁿbⁿ lab), and :func:`fit`, the published protocol on it.

A step computes its evaluation losses the way it computes its gradient: a plain step with
the model's own forward pass, a compiled one with its kernel (the same losses to float32
rounding). The compiled kernels are prepared before the first epoch, and the time that
takes is printed, never counted as training time.
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dino_rnn.data import Example
from dino_rnn.numpy_nets import NumpyNet
from dino_rnn.settings import AUTOGRAD, NUMPY


# ---------------------------------------------------------------------------
# Seeds, devices, the optimizer
# ---------------------------------------------------------------------------


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


def pairs_of(examples: list[Example], device: torch.device | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` per name, on ``device``: what a step takes."""
    return [(e.x.to(device), e.y.to(device)) if device is not None else (e.x, e.y) for e in examples]


# ---------------------------------------------------------------------------
# One training step
# ---------------------------------------------------------------------------


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               clip: float | None = None) -> float:
    """One training step on one name; its loss as a float.

    ``x`` holds the name's one-hot rows (T, V), ``y`` the index of the next character at each
    step (T,). The forward pass gives ``logits, state = model(x)``; the loss is the mean
    cross-entropy of ``logits`` against ``y``; the gradient comes from ``loss.backward()``, after
    ``optimizer.zero_grad()`` clears the last step's; with ``clip`` (not None) the gradient is
    scaled down to global norm ``clip`` if it is longer (``nn.utils.clip_grad_norm_``); then
    ``optimizer.step()`` updates the parameters.
    """
    ### BEGIN SOLUTION
    logits, _ = model(x)  # forward: (T, V) logits, one row per character of the name
    loss = F.cross_entropy(logits, y)  # mean cross-entropy of the next characters
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # backpropagation through time, by autograd
    if clip is not None:  # scale the whole gradient down to norm `clip` if it is longer
        nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()  # AdamW
    return loss.item()
    ### END SOLUTION


class _StepLater:
    """The optimizer as :meth:`Step.loss_and_grad` hands it to :func:`train_step`: ``zero_grad``
    goes through, ``step`` waits for :meth:`Step.update`."""

    def __init__(self, optimizer):
        self.optimizer = optimizer

    def zero_grad(self, *args, **kwargs) -> None:
        self.optimizer.zero_grad(*args, **kwargs)

    def step(self) -> None:
        pass


class Step:
    """One training step of a PyTorch model on one name, in plain PyTorch: :func:`train_step`.

    ``step(x, y)`` runs ``train_step`` (or the function given as ``train_step``: notebook 01's
    exercise). ``dino-rnn bench`` times the package's in two halves: ``loss_and_grad`` is
    ``train_step`` with the optimizer's ``step()`` held back (forward, loss, backward, clipping),
    ``update`` is that ``step()``; together they are one ``train_step``. ``evaluate``,
    ``snapshot`` and ``restore`` are what the epoch loop needs besides.
    """

    gradient = AUTOGRAD

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, clip: float | None = None,
                 train_step=train_step):
        self.model, self.optimizer, self.clip = model, optimizer, clip
        self.train_step = train_step

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> float:
        return self.train_step(self.model, self.optimizer, x, y, clip=self.clip)

    def loss_and_grad(self, x, y) -> float:
        return train_step(self.model, _StepLater(self.optimizer), x, y, clip=self.clip)

    def update(self) -> None:
        self.optimizer.step()  # AdamW

    def train(self) -> None:
        self.model.train()  # dropout on

    @torch.no_grad()
    def evaluate(self, pairs) -> float:
        """Mean over sequences of each one's mean cross-entropy, in eval mode (no dropout)."""
        self.model.eval()
        total = torch.zeros((), device=next(self.model.parameters()).device)
        for x, y in pairs:
            logits, _ = self.model(x)
            total += F.cross_entropy(logits, y)
        return total.item() / len(pairs)

    def snapshot(self) -> dict:
        return copy.deepcopy(self.model.state_dict())

    def restore(self, state: dict) -> None:
        self.model.load_state_dict(state)


class NumpyStep:
    """One training step of a NumPy net: its hand-written forward and backward pass, optional
    global-norm clipping (the aⁿbⁿ lab's), then the NumPy optimizer."""

    gradient = NUMPY

    def __init__(self, net: NumpyNet, optimizer, clip: float | None = None):
        self.net, self.optimizer, self.clip = net, optimizer, clip
        self._out = net.new_grads()  # one gradient buffer for the whole run

    def __call__(self, x, y) -> float:
        loss, grads = self.loss_and_grads(x, y)
        if self.clip:
            self.net.maths.clip_grad_norm(grads, self.clip)  # the package's, or a student's (dino_rnn.numpy_nets.Maths)
        self.optimizer.step(grads)
        return loss

    def loss_and_grads(self, x, y):
        return self.net.loss_and_grads(x, y, out=self._out)

    def train(self) -> None:
        pass  # no dropout

    def evaluate(self, pairs) -> float:
        return sum(self.net.loss(x, y) for x, y in pairs) / len(pairs)

    def snapshot(self):
        return self.net.get_state()

    def restore(self, state) -> None:
        self.net.set_state(state)


def autograd_requested() -> bool:
    """``DINO_RNN_AUTOGRAD=1`` in the environment asks for the plain steps everywhere."""
    return os.environ.get("DINO_RNN_AUTOGRAD", "") not in ("", "0")


def make_step(model, optimizer, *, clip: float | None = None, autograd: bool = False, compiled: bool = True):
    """The step a run trains with: the compiled path's where it applies, else the plain one.

    ``model`` is a PyTorch model or a NumPy net; ``clip`` limits the gradient's global norm
    before every update (``None``: no clipping). ``autograd=True`` (or ``DINO_RNN_AUTOGRAD=1``)
    asks for autograd's gradient: :class:`Step` for a PyTorch model, and for a NumPy net its
    equations written in torch (:class:`NumpyAutogradStep`) in place of its hand-written
    backward. ``compiled=False`` keeps the plain steps without asking for autograd.
    """
    if autograd or autograd_requested():
        return NumpyAutogradStep(model, optimizer, clip) if isinstance(model, NumpyNet) else Step(model, optimizer, clip)
    if compiled:
        from dino_rnn import fast  # numba loads here, and only here

        step = fast.compiled_step(model, optimizer, clip)
        if step is not None:
            return step
    return NumpyStep(model, optimizer, clip) if isinstance(model, NumpyNet) else Step(model, optimizer, clip)


# ---------------------------------------------------------------------------
# The epoch loop
# ---------------------------------------------------------------------------


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
    gradient: str = ""  # how the steps computed their gradient: AUTOGRAD, WRITTEN_OUT or NUMPY
    compile_seconds: float = 0.0  # preparing the compiled kernels, before the first epoch

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

    ``DINO_RNN_PROGRESS=text`` (set by ``dino-rnn study`` for its kernels) keeps the text bar:
    a widget in an executed notebook needs a script from the network to draw.
    """
    import importlib.util

    if os.environ.get("DINO_RNN_PROGRESS") != "text" and importlib.util.find_spec("ipywidgets"):
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm(iterable, mininterval=1.0, **kwargs)


def train_epoch(step, pairs) -> float:
    """One pass, one step per sequence, in order; the mean training loss (dropout on)."""
    step.train()
    total = 0.0
    for x, y in pairs:
        total += step(x, y)
    return total / len(pairs)


def prepare(step, pairs, desc: str, progress: bool = True) -> float:
    """Compile the step's kernels before the first epoch (a plain step has none); the seconds it
    took, said in one line when they are worth saying. Changes no parameter and no random state."""
    warm_up = getattr(step, "warm_up", None)
    if warm_up is None:
        return 0.0
    t0 = time.perf_counter()
    warm_up(*pairs[0])
    seconds = time.perf_counter() - t0
    if progress and seconds > 0.5:
        print(f"{desc}: compiled the training kernels in {seconds:.1f} s (once per machine: numba caches "
              "them on disk; not counted in the epoch times)", flush=True)
    return seconds


def run_epochs(step, train, valid, test=None, *, epochs: int, keep_best: bool = True,
               progress: bool = True, desc: str = "training") -> History:
    """The epoch loop every trainer shares.

    ``train``, ``valid``, ``test`` are lists of the step's ``(x, y)`` sequences. Each epoch:
    :func:`train_epoch`, ``step.evaluate(valid)``, the seconds both took. A NaN or infinite loss
    stops training at once and marks the history ``"diverged"``. With ``keep_best`` the state
    with the lowest validation loss is kept, put back at the end, and ``test`` is measured on
    it; without, the model ends as the last epoch left it.
    """
    hist = History(gradient=step.gradient, compile_seconds=prepare(step, train, desc, progress))
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
            hist.status, hist.message = "diverged", _diverged(epoch, tr, va)
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


def _diverged(epoch: int, tr: float, va: float) -> str:
    what = "NaN" if math.isnan(tr) or math.isnan(va) else "infinite"
    return f"loss became {what} at epoch {epoch} (train {tr}, validation {va}); try a smaller learning rate"


def fit(model: nn.Module, train: list[Example], valid: list[Example], test: list[Example], *,
        epochs: int = 40, lr: float = 4e-4, threads: int | None = 1, autograd: bool = False,
        progress: bool = True, desc: str = "training") -> History:
    """Train ``model`` in place under the published protocol; it ends holding the best state.

    ``threads=1`` runs torch on one intra-op thread (fastest for one-name steps on a CPU);
    ``None`` leaves torch's setting alone. Raises nothing on divergence: the history says
    ``status="diverged"`` and why, and training stops at that epoch.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    device = next(model.parameters()).device
    train, valid, test = (pairs_of(s, device) for s in (train, valid, test))
    step = make_step(model, make_optimizer(model, lr), autograd=autograd)
    return run_epochs(step, train, valid, test, epochs=epochs, progress=progress, desc=desc)


# ---------------------------------------------------------------------------
# The NumPy nets' equations in torch: autograd's gradient for them (AUTOGRAD = True)
# ---------------------------------------------------------------------------


class NumpyAutogradStep(NumpyStep):
    """The NumPy net's equations written in torch (float64, on its own parameters' memory),
    differentiated by autograd; then the same clipping and NumPy optimizer."""

    gradient = AUTOGRAD

    def __init__(self, net, optimizer, clip: float | None = None):
        super().__init__(net, optimizer, clip)
        self.tensors = {k: torch.from_numpy(v) for k, v in net.params.items()}  # shared memory
        self._gflat, self._grads = net.new_grads()
        self._loss = {"NumpyRNN": numpy_rnn_loss_torch, "NumpyLSTM": numpy_lstm_loss_torch}[type(net).__name__]

    def loss_and_grads(self, x, y):
        params = {k: t.detach().requires_grad_() for k, t in self.tensors.items()}
        loss = self._loss(params, torch.as_tensor(x), torch.as_tensor(y))
        for (k, g), t in zip(self._grads.items(), torch.autograd.grad(loss, [params[k] for k in self._grads])):
            g[...] = t.numpy()
        return loss.item(), self._grads


def numpy_rnn_loss_torch(p: dict, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """:class:`~dino_rnn.numpy_nets.NumpyRNN`'s mean cross-entropy, in torch."""
    h = torch.zeros(p["V"].shape[0], dtype=torch.float64)
    xu = p["U"][:, ids].T + p["b_h"]
    hs = []
    for t in range(len(ids)):
        h = torch.tanh(xu[t] + p["V"] @ h)
        hs.append(h)
    logits = torch.stack(hs) @ p["W"].T + p["b_o"]
    return F.cross_entropy(logits, targets)


def numpy_lstm_loss_torch(p: dict, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """:class:`~dino_rnn.numpy_nets.NumpyLSTM`'s mean cross-entropy, in torch (gates f, i, g, o)."""
    H = p["b_f"].shape[0]
    W = torch.cat([p["W_f"], p["W_i"], p["W_g"], p["W_o"]])  # (4H, H + V): h columns, then x columns
    b = torch.cat([p["b_f"], p["b_i"], p["b_g"], p["b_o"]])
    ax = W[:, H:][:, ids].T + b
    Wh = W[:, :H]
    h = c = torch.zeros(H, dtype=torch.float64)
    hs = []
    for t in range(len(ids)):
        a = ax[t] + Wh @ h
        f, i, o = torch.sigmoid(a[:H]), torch.sigmoid(a[H : 2 * H]), torch.sigmoid(a[3 * H :])
        g = torch.tanh(a[2 * H : 3 * H])
        c = f * c + i * g
        h = o * torch.tanh(c)
        hs.append(h)
    logits = torch.stack(hs) @ p["W_v"].T + p["b_v"]
    return F.cross_entropy(logits, targets)
