"""One training step, three ways: the interface the epoch loop trains through.

A *step* trains a model on one sequence: the loss (training mode), its gradient, one
optimizer update. How the gradient is computed is chosen once per run, when the step is
made, and the epoch loop (:func:`dino_rnn.train.run_epochs`) knows nothing of which::

    step = torch_step(model, optimizer)       # or numpy_step(net, optimizer, clip=...)
    step.gradient                             # "written-out", "autograd" or "numpy": recorded in the metrics
    step.train()                              # training mode, before an epoch's steps
    loss = step(x, y)                         # one sequence: loss, gradient, optimizer update
    step.evaluate(pairs)                      # mean loss over (x, y) pairs, evaluation mode
    state = step.snapshot(); step.restore(state)

=============  =====================================================  ==========================
gradient       how                                                    for
=============  =====================================================  ==========================
written-out    back-propagation through time written out               the four PyTorch models
               (:mod:`dino_rnn.fast.fastgrad`, compiled in                 and the aⁿbⁿ lab's twin,
               :mod:`dino_rnn.fast.kernels`), checked against autograd     one layer, on the CPU
autograd       ``loss.backward()``                                    every PyTorch model; the
                                                                      NumPy nets' equations
                                                                      written in torch
numpy          the NumPy nets' own hand-written backward              the NumPy nets
               (:mod:`dino_rnn.numpy_nets`, compiled in
               :mod:`dino_rnn.fast.kernels`)
=============  =====================================================  ==========================

``step.loss_and_grad(x, y)`` and ``step.update()`` are a PyTorch step's two halves
(``dino-rnn bench`` times each). ``step.evaluate`` runs the forward pass the same way as the
gradient: a compiled step evaluates with its compiled kernel (written-out: the gradient's
kernel without dropout; numpy: the net's forward pass), the others with the model's own code.

Every step of one run applies the same optimizer update, so the ways differ only in the
gradient, which agrees to float rounding (the tests check it).
"""

from __future__ import annotations

import copy
import os

import torch
import torch.nn.functional as F

from dino_rnn.fast import fastgrad
from dino_rnn.fast import kernels
from dino_rnn.numpy_nets import SGD, AdamW, NumpyLSTM, NumpyRNN, _flat_base, clip_grad_norm
from dino_rnn.fast.torch_private import FusedAdam

WRITTEN_OUT, AUTOGRAD, NUMPY = "written-out", "autograd", "numpy"


def autograd_requested() -> bool:
    """``DINO_RNN_AUTOGRAD=1`` in the environment asks for autograd everywhere."""
    return os.environ.get("DINO_RNN_AUTOGRAD", "") not in ("", "0")


# ---------------------------------------------------------------------------
# PyTorch models
# ---------------------------------------------------------------------------


class TorchStep:
    """What both PyTorch steps share: a step is ``loss_and_grad`` (each class its own way), then
    ``update`` (one optimizer step); evaluation and the best-state copy.

    The two halves are separate methods so that ``dino-rnn bench`` can time each.
    """

    gradient = ""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
        self.model, self.optimizer = model, optimizer
        fused = FusedAdam.make(optimizer)
        self._fused = fused
        self.update = fused.step if fused is not None else optimizer.step

    def loss_and_grad(self, x, y) -> float:
        raise NotImplementedError

    def __call__(self, x, y) -> float:
        loss = self.loss_and_grad(x, y)
        with torch.no_grad():
            self.update()
        return loss

    def train(self) -> None:
        self.model.train()

    @torch.no_grad()
    def evaluate(self, pairs) -> float:
        """Mean over sequences of each one's mean cross-entropy, in eval mode (no dropout)."""
        self.model.eval()
        return evaluate_pairs(self.model, pairs)

    def snapshot(self) -> dict:
        return copy.deepcopy(self.model.state_dict())

    def restore(self, state: dict) -> None:
        self.model.load_state_dict(state)


class WrittenOutStep(TorchStep):
    """The gradient written out (:class:`dino_rnn.fast.fastgrad.WrittenOut`), then the update."""

    gradient = WRITTEN_OUT

    def __init__(self, model, optimizer):
        super().__init__(model, optimizer)
        self.grad = fastgrad.WrittenOut(model)
        self.loss_and_grad = self.grad  # one name's loss; the gradient in the buffers the update reads
        grads = self.grad.grads
        if self._fused is not None:
            fused = self._fused
            self.update = lambda: fused.step(grads)
        else:
            self.update = self._optimizer_step

    def evaluate(self, pairs) -> float:
        """As :meth:`TorchStep.evaluate`, by the compiled kernel of the gradient
        (:meth:`~dino_rnn.fast.fastgrad.WrittenOut.loss`; the same losses to float32 rounding)."""
        self.model.eval()
        return sum(self.grad.loss(x, y) for x, y in pairs) / len(pairs)

    def _optimizer_step(self) -> None:
        self.grad.set_grads()  # a zero_grad(set_to_none=True) elsewhere would have dropped them
        self.optimizer.step()


class AutogradStep(TorchStep):
    """``loss.backward()``, then the update."""

    gradient = AUTOGRAD

    def loss_and_grad(self, x, y) -> float:
        logits, _ = self.model(x)
        loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return loss.item()


def torch_step(model, optimizer, autograd: bool = False) -> TorchStep:
    """The written-out gradient where it applies, else autograd (always, with ``autograd=True``
    or ``DINO_RNN_AUTOGRAD=1``)."""
    if autograd or autograd_requested() or fastgrad.unsupported(model):
        return AutogradStep(model, optimizer)
    return WrittenOutStep(model, optimizer)


def evaluate_pairs(model, pairs) -> float:
    """Mean cross-entropy over (x, y) pairs with the model as it is (call under ``no_grad``)."""
    total = torch.zeros((), device=next(model.parameters()).device)
    for x, y in pairs:
        logits, _ = model(x)
        total += F.cross_entropy(logits, y)
    return total.item() / len(pairs)


# ---------------------------------------------------------------------------
# NumPy nets
# ---------------------------------------------------------------------------


class NumpyStep:
    """A NumPy net's hand-written gradient, optional global-norm clipping, a NumPy optimizer.

    ``compiled`` (the default): the net's forward and backward pass run as one compiled
    kernel, and so do the clipping and the update of :class:`~dino_rnn.numpy_nets.SGD` and
    :class:`~dino_rnn.numpy_nets.AdamW` (:mod:`dino_rnn.fast.kernels`: the same equations, the same
    numbers to float rounding); ``False``: the NumPy code of :mod:`dino_rnn.numpy_nets`.
    """

    gradient = NUMPY

    def __init__(self, net, optimizer, clip: float | None = None, compiled: bool = True):
        self.net, self.optimizer, self.clip = net, optimizer, clip
        self._out = net.new_grads()  # one gradient buffer for the whole run
        self._grads = _compiled_gradient(net, self._out) if compiled else None
        self._update = _compiled_update(optimizer, self._out, clip) if compiled else None
        self._eval_loss = (_compiled_loss(net) if compiled else None) or net.loss

    def loss_and_grads(self, x, y):
        if self._grads is not None:
            return self._grads(x, y), self._out[1]
        return self.net.loss_and_grads(x, y, out=self._out)

    def __call__(self, x, y) -> float:
        loss, grads = self.loss_and_grads(x, y)
        if self._update is not None:
            self._update()
            return loss
        if self.clip:
            clip_grad_norm(grads, self.clip)
        self.optimizer.step(grads)
        return loss

    def train(self) -> None:
        pass  # no dropout

    def evaluate(self, pairs) -> float:
        return sum(self._eval_loss(x, y) for x, y in pairs) / len(pairs)

    def snapshot(self):
        return self.net.get_state()

    def restore(self, state) -> None:
        self.net.set_state(state)


def _kernel_arrays(net, arrays, flat=None):
    """``arrays`` (the net's parameters, or a gradient of the same shapes whose flat buffer is
    ``flat``) in the order the net's compiled kernels take them; None for a net they do not cover."""
    if type(net) is NumpyRNN:
        return tuple(arrays[k] for k in ("U", "V", "W", "b_h", "b_o"))
    if type(net) is NumpyLSTM:  # the four gates as one (4H, H+V) block
        return (*net._blocks(flat), arrays["W_v"], arrays["b_v"])
    return None


def _compiled_gradient(net, out):
    """``f(ids, targets) -> loss`` writing the net's gradient into ``out`` (a compiled kernel)."""
    params = _kernel_arrays(net, net.params)
    if params is None:
        return None
    gflat, g = out
    args = (*params, *_kernel_arrays(net, g, gflat))
    kernel = kernels.numpy_rnn_grads if type(net) is NumpyRNN else kernels.numpy_lstm_grads
    return lambda x, y: kernel(x, y, *args)


def _compiled_loss(net):
    """``f(ids, targets) -> loss``: the net's forward pass and mean cross-entropy, compiled (the
    evaluation: in the aⁿbⁿ lab ~140 µs a sequence in NumPy, 15% of an epoch)."""
    args = _kernel_arrays(net, net.params)
    if args is None:
        return None
    kernel = kernels.numpy_rnn_loss if type(net) is NumpyRNN else kernels.numpy_lstm_loss
    return lambda x, y: kernel(x, y, *args)


def _compiled_update(optimizer, out, clip):
    """``f()``: clip the gradient in ``out`` and update, as ``clip_grad_norm`` then
    ``optimizer.step`` do, in one compiled call; ``None`` where that does not apply (another
    optimizer, or parameters or gradients that do not tile one flat buffer)."""
    gflat, g = out
    params = optimizer._flat
    if params is None or list(g) != optimizer.keys or _flat_base([g[k] for k in optimizer.keys]) is not gflat:
        return None
    max_norm = float(clip) if clip else 0.0
    if type(optimizer) is SGD:
        lr = optimizer.lr
        return lambda: kernels.clip_sgd_update(params, gflat, lr, max_norm)
    if type(optimizer) is AdamW and not clip:
        opt = optimizer
        m, v = opt.state_flat
        args = (opt.lr, opt.beta1, opt.beta2, opt.eps, opt.weight_decay)

        def adamw():
            kernels.adamw_update(params, gflat, m, v, *args, *opt.next_step())

        return adamw
    return None


class NumpyAutogradStep(NumpyStep):
    """The NumPy net's equations written in torch (float64, on its own parameters' memory),
    differentiated by autograd; then the same clipping and NumPy optimizer."""

    gradient = AUTOGRAD

    def __init__(self, net, optimizer, clip: float | None = None):
        super().__init__(net, optimizer, clip, compiled=False)
        self.tensors = {k: torch.from_numpy(v) for k, v in net.params.items()}  # shared memory
        self._gflat, self._grads = net.new_grads()
        self._loss = _TORCH_LOSSES[type(net)]

    def loss_and_grads(self, x, y):
        params = {k: t.detach().requires_grad_() for k, t in self.tensors.items()}
        loss = self._loss(params, torch.as_tensor(x), torch.as_tensor(y), self.net.vocab_size)
        for (k, g), t in zip(self._grads.items(), torch.autograd.grad(loss, [params[k] for k in self._grads])):
            g[...] = t.numpy()
        return loss.item(), self._grads


def numpy_rnn_loss_torch(p: dict, ids: torch.Tensor, targets: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """:class:`~dino_rnn.numpy_nets.NumpyRNN`'s mean cross-entropy, in torch."""
    h = torch.zeros(p["V"].shape[0], dtype=torch.float64)
    xu = p["U"][:, ids].T + p["b_h"]
    hs = []
    for t in range(len(ids)):
        h = torch.tanh(xu[t] + p["V"] @ h)
        hs.append(h)
    logits = torch.stack(hs) @ p["W"].T + p["b_o"]
    return F.cross_entropy(logits, targets)


def numpy_lstm_loss_torch(p: dict, ids: torch.Tensor, targets: torch.Tensor, vocab_size: int) -> torch.Tensor:
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


_TORCH_LOSSES = {NumpyRNN: numpy_rnn_loss_torch, NumpyLSTM: numpy_lstm_loss_torch}


def numpy_step(net, optimizer, clip: float | None = None, autograd: bool = False, compiled: bool = True) -> NumpyStep:
    """The net's hand-written gradient (compiled unless ``compiled=False``); with ``autograd=True``
    (or ``DINO_RNN_AUTOGRAD=1``), autograd on its equations written in torch."""
    if autograd or autograd_requested():
        return NumpyAutogradStep(net, optimizer, clip)
    return NumpyStep(net, optimizer, clip, compiled=compiled)


__all__ = [
    "WRITTEN_OUT", "AUTOGRAD", "NUMPY",
    "TorchStep", "WrittenOutStep", "AutogradStep", "torch_step", "evaluate_pairs",
    "NumpyStep", "NumpyAutogradStep", "numpy_step",
    "numpy_rnn_loss_torch", "numpy_lstm_loss_torch",
]
