"""The compiled path's steps: the plain steps of :mod:`dino_rnn.train`, their gradient computed
by compiled kernels.

:class:`WrittenOutStep` is :class:`dino_rnn.train.Step` with backpropagation through time written
out (:mod:`dino_rnn.fast.fastgrad`, compiled in :mod:`dino_rnn.fast.kernels`) in place of
``loss.backward()``, and AdamW's fused kernel called directly (:mod:`dino_rnn.fast.torch_private`).
:class:`CompiledNumpyStep` is :class:`dino_rnn.train.NumpyStep` with the NumPy net's forward and
backward pass, the clipping and the update each one compiled call.

Both evaluate with their kernel too (the same losses to float32 rounding), and both have
``warm_up(x, y)``, which compiles every kernel the step calls (or loads it from numba's disk
cache) without changing a parameter, a gradient buffer or any random state.
"""

from __future__ import annotations

import copy

import torch

from dino_rnn.fast import fastgrad, kernels
from dino_rnn.fast.torch_private import FusedAdam
from dino_rnn.settings import NUMPY, WRITTEN_OUT
from dino_rnn.numpy_nets import SGD, AdamW, NumpyLSTM, NumpyNet, NumpyRNN, _flat_base, clip_grad_norm


# ---------------------------------------------------------------------------
# PyTorch models
# ---------------------------------------------------------------------------


class WrittenOutStep:
    """:class:`dino_rnn.train.Step` with the gradient written out and compiled
    (:class:`~dino_rnn.fast.fastgrad.WrittenOut`), optionally clipped as :class:`dino_rnn.train.Step`
    clips it, then AdamW's fused kernel called directly."""

    gradient = WRITTEN_OUT

    def __init__(self, model, optimizer, clip: float | None = None):
        self.model, self.optimizer, self.clip = model, optimizer, clip
        self.grad = fastgrad.WrittenOut(model)
        self.loss_and_grad = self.grad  # one name's loss; the gradient in the buffers the update reads
        fused, grads = FusedAdam.make(optimizer), self.grad.grads
        self._update = (lambda: fused.step(grads)) if fused is not None else self._optimizer_step

    def update(self) -> None:
        if self.clip is not None:  # the buffers are the parameters' .grad: torch's own clipping
            torch.nn.utils.clip_grad_norm_(self.grad.tensors, self.clip)
        self._update()

    def __call__(self, x, y) -> float:
        loss = self.loss_and_grad(x, y)
        with torch.no_grad():
            self.update()
        return loss

    def _optimizer_step(self) -> None:
        self.grad.set_grads()  # a zero_grad(set_to_none=True) elsewhere would have dropped them
        self.optimizer.step()

    def warm_up(self, x, y) -> None:
        """Compile the kernel: one evaluation (its own buffers, no dropout draw)."""
        mode = self.model.training
        self.model.eval()
        self.grad.loss(x, y)
        self.model.train(mode)

    def train(self) -> None:
        self.model.train()

    def evaluate(self, pairs) -> float:
        """Mean over sequences of each one's mean cross-entropy, in eval mode, by the compiled kernel
        of the gradient (:meth:`~dino_rnn.fast.fastgrad.WrittenOut.loss`)."""
        self.model.eval()
        return sum(self.grad.loss(x, y) for x, y in pairs) / len(pairs)

    def snapshot(self) -> dict:
        return copy.deepcopy(self.model.state_dict())

    def restore(self, state: dict) -> None:
        self.model.load_state_dict(state)


# ---------------------------------------------------------------------------
# NumPy nets
# ---------------------------------------------------------------------------


class CompiledNumpyStep:
    """:class:`dino_rnn.train.NumpyStep` compiled: the net's forward and backward pass is one
    kernel call, and so are the clipping and the update of :class:`~dino_rnn.numpy_nets.SGD` and
    :class:`~dino_rnn.numpy_nets.AdamW` (the same equations, the same numbers to float rounding)."""

    gradient = NUMPY

    def __init__(self, net, optimizer, clip: float | None = None):
        self.net, self.optimizer, self.clip = net, optimizer, clip
        self._out = net.new_grads()  # one gradient buffer for the whole run
        self._grads = _compiled_gradient(net, self._out)
        self._update = _compiled_update(optimizer, self._out, clip)  # None: NumPy's update
        self._eval_loss = _compiled_loss(net)

    def __call__(self, x, y) -> float:
        loss, grads = self.loss_and_grads(x, y)
        if self._update is not None:
            self._update()
        else:  # another optimizer, or buffers that do not tile one flat buffer
            if self.clip:
                clip_grad_norm(grads, self.clip)
            self.optimizer.step(grads)
        return loss

    def loss_and_grads(self, x, y):
        return self._grads(x, y), self._out[1]

    def warm_up(self, x, y) -> None:
        """Compile every kernel the step calls, on copies: nothing of the run's changes."""
        self._eval_loss(x, y)
        _compiled_gradient(self.net, self.net.new_grads())(x, y)
        p, (g, _) = self.net.flat.copy(), self.net.new_grads()
        if type(self.optimizer) is SGD:
            kernels.clip_sgd_update(p, g, 0.1, 1.0)
        elif type(self.optimizer) is AdamW:
            kernels.adamw_update(p, g, g.copy(), g.copy(), 0.1, 0.9, 0.999, 1e-8, 0.0, 0.1, 1.0)

    def train(self) -> None:
        pass  # no dropout

    def evaluate(self, pairs) -> float:
        return sum(self._eval_loss(x, y) for x, y in pairs) / len(pairs)

    def snapshot(self):
        return self.net.get_state()

    def restore(self, state) -> None:
        self.net.set_state(state)


def compiled(model, optimizer, clip: float | None = None):
    """The compiled step of a model or net that :func:`dino_rnn.fast.unsupported` accepts."""
    if isinstance(model, NumpyNet):
        return CompiledNumpyStep(model, optimizer, clip)
    return WrittenOutStep(model, optimizer, clip)


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
    ``optimizer.step`` do (SGD: one compiled call; AdamW: NumPy's clipping, then one compiled
    call); ``None`` where that does not apply (another optimizer, or parameters or gradients
    that do not tile one flat buffer)."""
    gflat, g = out
    params = optimizer._flat
    if params is None or list(g) != optimizer.keys or _flat_base([g[k] for k in optimizer.keys]) is not gflat:
        return None
    max_norm = float(clip) if clip else 0.0
    if type(optimizer) is SGD:
        lr = optimizer.lr
        return lambda: kernels.clip_sgd_update(params, gflat, lr, max_norm)
    if type(optimizer) is AdamW:
        opt = optimizer
        m, v = opt.state_flat
        args = (opt.lr, opt.beta1, opt.beta2, opt.eps, opt.weight_decay)

        def adamw():
            if clip:
                clip_grad_norm(g, clip)
            kernels.adamw_update(params, gflat, m, v, *args, *opt.next_step())

        return adamw
    return None


