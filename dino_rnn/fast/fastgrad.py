"""Gradients written out: one name's loss and exact gradient without autograd.

A name is ~12 characters, so a training step is a few hundred tiny operations and its
cost is per-call overhead, not arithmetic. There is no autograd graph to build here: this
works on NumPy views of the parameters' own float32 buffers and of gradient buffers it
sets as their ``.grad`` (no copies), and the dropout draw is torch's. What is written out
is back-propagation through time for the one-layer cells, the read-out, dropout and the
cross-entropy, twice:

- in NumPy, below: the readable reference (the forward pass of ``nn.RNN`` / ``nn.LSTM`` /
  ``nn.GRU`` is the module's own, the gradient NumPy's);
- compiled, in :mod:`dino_rnn.fast.kernels` (forward and backward in one call), the default;
  ``tests/test_kernels.py`` checks it against the NumPy code.

    grad = WrittenOut(model)      # binds to the model's parameters (ValueError: not supported)
    loss = grad(x, y)             # one name; every parameter's .grad is now d loss / d parameter

It gives what ``loss.backward()`` gives, up to float rounding:
``tests/test_speed_semantics.py`` checks it against autograd for every model, several
name lengths, train and eval mode. :func:`unsupported` says where it does not apply
(several layers, a GPU, another dtype); there :func:`dino_rnn.train.make_step` trains with the plain step.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dino_rnn.fast import kernels
from dino_rnn.fast.torch_private import dropout_noise
from dino_rnn.models import ScratchRNN


def unsupported(model) -> str | None:
    """Why the written-out gradient does not apply to ``model`` (``None``: it does).

    It applies to :class:`~dino_rnn.models.ScratchRNN` and to any model made of a one-layer
    ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``, a ``nn.Linear`` read-out (with or without bias) and
    optionally dropout on the logits, which says so with ``written_out_parts()`` returning
    ``(rnn, readout, dropout or None)`` (:class:`~dino_rnn.models.RecurrentLM`, the aⁿbⁿ
    lab's PyTorch twin), on the CPU in float32.
    """
    if not isinstance(model, ScratchRNN) and not hasattr(model, "written_out_parts"):
        return f"no written-out gradient for {type(model).__name__}"
    params = list(model.parameters())
    if not all(p.device.type == "cpu" for p in params):
        return "the written-out gradient runs on the CPU only"
    if not all(p.dtype == torch.float32 for p in params):
        return "the written-out gradient is float32 only"
    if getattr(model, "num_layers", 1) != 1:
        return "the written-out gradient covers one layer"
    if isinstance(model, ScratchRNN):
        return None
    rnn, readout, dropout = model.written_out_parts()
    if (
        type(rnn) not in (nn.RNN, nn.LSTM, nn.GRU)
        or (type(rnn) is nn.RNN and rnn.nonlinearity != "tanh")
        or getattr(rnn, "proj_size", 0)
        or rnn.num_layers != 1
        or rnn.bidirectional
        or rnn.batch_first
        or not rnn.bias
    ):
        return f"{type(rnn).__name__} is not in the form the written-out gradient covers"
    if type(readout) is not nn.Linear or readout.in_features != rnn.hidden_size:
        return "the read-out is not one nn.Linear on the hidden state"
    if dropout is not None and type(dropout) is not nn.Dropout:
        return "dropout other than nn.Dropout on the logits"
    n = len(list(rnn.parameters())) + len(list(readout.parameters()))
    if n != len(params):
        return "the model has parameters besides the recurrent layer and the read-out"
    return None


class WrittenOut:
    """One model's written-out gradient: ``loss = grad(x, y)`` sets every ``.grad``.

    Binds once to the model's parameters (NumPy views of their storage) and to gradient
    buffers it sets as their ``.grad`` (``grads``: the tensors, in ``parameters()`` order).
    Loading a state dict copies into the same storage, so the binding holds for a whole
    run; a model whose parameters are replaced needs a new binding. ``compiled=False``
    uses the NumPy code below instead of the compiled kernels.
    """

    def __init__(self, model, compiled: bool = True):
        reason = unsupported(model)
        if reason:
            raise ValueError(reason)
        self.model = model
        self.tensors = list(model.parameters())
        self.grads = [torch.zeros_like(p, memory_format=torch.contiguous_format) for p in self.tensors]
        self.set_grads()
        self._masks: dict = {}
        self.compiled = compiled
        self._eval_grads = None  # loss()'s own gradient buffers, made on first use
        if isinstance(model, ScratchRNN):
            self.params = [p.detach().numpy() for p in self.tensors]
            self.grad_arrays = [g.numpy() for g in self.grads]
            self.dropout = model.dropout
            self._loss_and_grad = self._scratch
            if compiled:
                self._tanh = model.nonlinearity == "tanh"
                self._loss_and_grad = self._scratch_compiled
            return
        rnn, readout, dropout = model.written_out_parts()
        self.dropout = dropout if dropout is not None else nn.Dropout(0.0)
        grad_of = {id(p): g.numpy() for p, g in zip(self.tensors, self.grads)}
        ordered = [*rnn.parameters(), readout.weight]  # w_ih, w_hh, b_ih, b_hh, w_fc
        self.params = [p.detach().numpy() for p in ordered]
        self.grad_arrays = [grad_of[id(p)] for p in ordered]
        if readout.bias is not None:
            self.params.append(readout.bias.detach().numpy())
            self.grad_arrays.append(grad_of[id(readout.bias)])
        else:  # no bias: a zero one, and somewhere to put its (unused) gradient
            self.params.append(np.zeros(readout.out_features, dtype=np.float32))
            self.grad_arrays.append(np.zeros(readout.out_features, dtype=np.float32))
        self._module = rnn
        cell = {nn.RNN: "rnn", nn.GRU: "gru", nn.LSTM: "lstm"}[type(rnn)]
        self._loss_and_grad = {"rnn": self._rnn, "gru": self._gru, "lstm": self._lstm}[cell]
        if compiled:
            self._kernel = {"rnn": kernels.rnn_step, "gru": kernels.gru_step, "lstm": kernels.lstm_step}[cell]
            self._loss_and_grad = self._compiled

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One name's mean cross-entropy with the model as it is (call it in eval mode: no dropout),
        by the compiled kernel of the gradient; the gradient it computes on the way goes to buffers
        of its own, ``grads`` stay as the last step left them. The evaluation: 1.7-4 times faster than
        the model's forward pass in torch (whose per-operation overhead dominates on one name)."""
        if not self.compiled:
            raise ValueError("WrittenOut.loss needs the compiled kernels (compiled=True)")
        if self._eval_grads is None:
            self._eval_grads = [np.zeros_like(g) for g in self.grad_arrays]
        return self._loss_and_grad(x, y, self._eval_grads)

    def set_grads(self) -> None:
        """Make the buffers every parameter's ``.grad`` again (after a ``zero_grad``, say)."""
        for p, g in zip(self.tensors, self.grads):
            if p.grad is not g:
                p.grad = g

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One name's mean cross-entropy (dropout as the model's mode says); the gradient in ``grads``."""
        with torch.no_grad():
            return self._loss_and_grad(x, y)

    def dropout_mask(self, T: int, V: int) -> np.ndarray:
        """The (T, V) dropout multipliers drawn as :func:`_head_loss_and_grad` draws them
        (empty when dropout is off)."""
        dropout = self.dropout
        if not (dropout.training and dropout.p > 0):
            return _NO_MASK
        return dropout_noise(self.mask_buffer((T, V))[0], dropout.p)

    def mask_buffer(self, shape) -> tuple[torch.Tensor, np.ndarray]:
        """A float32 tensor of ``shape`` to draw dropout masks into, and its NumPy view (one per shape)."""
        buf = self._masks.get(shape)
        if buf is None:
            t = torch.empty(shape, dtype=torch.float32)
            buf = self._masks[shape] = (t, t.numpy())
        return buf

    # -- the from-scratch cell ------------------------------------------------------
    def _scratch(self, x, y):
        """The same computation as ``ScratchRNN.forward`` from a zero state, then BPTT written out."""
        model = self.model
        (wi2h, bi2h, wi2o, bi2o, wo2o, bo2o), grads = self.params, self.grad_arrays
        V, H = model.vocab_size, model.hidden_size
        xn, yn = x.numpy(), y.numpy()
        T = xn.shape[0]
        w_h = wi2h[:, V:]
        # forward, keeping what the gradient needs
        xhp = np.empty((T, V + H), dtype=np.float32)  # [x_t, h_{t-1}]
        xhp[:, :V] = xn
        hs = np.empty((T + 1, H), dtype=np.float32)  # row 0: the zero initial state, row t+1: h_t
        hs[0] = 0.0
        np.matmul(xn, wi2h[:, :V].T, out=hs[1:])  # input part of i2h, all steps at once
        hs[1:] += bi2h
        tanh = model.nonlinearity == "tanh"
        tmp = np.empty(H, dtype=np.float32)
        for t in range(T):
            row = hs[t + 1]
            np.dot(w_h, hs[t], out=tmp)
            row += tmp
            if tanh:
                np.tanh(row, out=row)
        h_prev, h_new = hs[:-1], hs[1:]
        xhp[:, V:] = h_prev
        ho = np.empty((T, H + V), dtype=np.float32)  # [h_t, o_t]
        ho[:, :H] = h_new
        o = ho[:, H:]
        np.matmul(xhp, wi2o.T, out=o)
        o += bi2o
        z = ho @ wo2o.T
        z += bo2o
        loss, dz = _head_loss_and_grad(self.dropout, z, yn, self)
        # backward
        gwo2o, gbo2o = grads[4], grads[5]
        np.matmul(dz.T, ho, out=gwo2o)
        np.sum(dz, axis=0, out=gbo2o)
        dho = dz @ wo2o  # (T, H + V): d h_t (through o2o), d o_t
        do = dho[:, H:]
        np.matmul(do.T, xhp, out=grads[2])
        np.sum(do, axis=0, out=grads[3])
        # gradient reaching h_t other than through h_{t+1}'s i2h: o2o now, i2o next step
        dout = np.ascontiguousarray(dho[:, :H])
        if T > 1:
            dout[:-1] += do[1:] @ wi2o[:, V:]
        deriv = (1.0 - h_new * h_new) if tanh else None
        g = _recurrence_backward(dout, w_h, deriv)  # d pre-activation of i2h, (T, H)
        np.matmul(g.T, xhp, out=grads[0])
        np.sum(g, axis=0, out=grads[1])
        return loss

    # -- nn.RNN / nn.LSTM / nn.GRU ---------------------------------------------------
    def _recurrent_head(self, x, y):
        """The module's forward, the read-out, dropout and the loss; the read-out's gradient.

        Returns the loss, the NumPy input, the outputs h_t (T, H), the previous states,
        d loss / d h_t through the read-out, and a row of ones for column sums.
        """
        xn = x.numpy()
        T = xn.shape[0]
        out = self._module(x)[0].numpy()  # (T, H): the module's own forward
        w_fc, b_fc = self.params[4], self.params[5]
        grads = self.grad_arrays
        z = out @ w_fc.T
        z += b_fc
        loss, dz = _head_loss_and_grad(self.dropout, z, y.numpy(), self)
        ones = _ONES[:T] if T <= _ONES.size else np.ones(T, dtype=np.float32)
        np.matmul(dz.T, out, out=grads[4])
        np.dot(ones, dz, out=grads[5])  # column sums
        dout = dz @ w_fc  # d loss / d h_t through the read-out, (T, H)
        h_prev = np.empty_like(out)
        h_prev[0] = 0.0
        h_prev[1:] = out[:-1]
        return loss, xn, out, h_prev, dout, ones

    def _input_grads(self, xn, h_prev, dgi, dgh, ones) -> None:
        grads = self.grad_arrays
        np.matmul(dgi.T, xn, out=grads[0])
        np.matmul(dgh.T, h_prev, out=grads[1])
        np.dot(ones, dgi, out=grads[2])
        if dgh is dgi:
            np.copyto(grads[3], grads[2])
        else:
            np.dot(ones, dgh, out=grads[3])

    def _rnn(self, x, y):
        loss, xn, out, h_prev, dout, ones = self._recurrent_head(x, y)
        d = _recurrence_backward(dout, self.params[1], 1.0 - out * out)
        self._input_grads(xn, h_prev, d, d, ones)
        return loss

    def _gru(self, x, y):
        loss, xn, out, h_prev, dout, ones = self._recurrent_head(x, y)
        w_ih, w_hh, b_ih, b_hh = self.params[:4]
        dgi, dgh = _gru_backward(xn, h_prev, out, dout, w_ih, w_hh, b_ih, b_hh)
        self._input_grads(xn, h_prev, dgi, dgh, ones)
        return loss

    def _scratch_compiled(self, x, y, out=None):
        """The from-scratch cell's gradient in one compiled call (:func:`dino_rnn.fast.kernels.scratch_step`),
        into ``out`` (default: ``grad_arrays``)."""
        xn = x.numpy()
        mask = self.dropout_mask(xn.shape[0], self.params[5].shape[0])
        out = self.grad_arrays if out is None else out
        return kernels.scratch_step(xn, y.numpy(), self._tanh, *self.params, mask, *out)

    def _compiled(self, x, y, out=None):
        """The whole gradient in one compiled call (:mod:`dino_rnn.fast.kernels`), into ``out`` (default:
        ``grad_arrays``)."""
        xn = x.numpy()
        mask = self.dropout_mask(xn.shape[0], self.params[5].shape[0])
        out = self.grad_arrays if out is None else out
        return self._kernel(xn, y.numpy(), *self.params, mask, *out)

    def _lstm(self, x, y):
        loss, xn, out, h_prev, dout, ones = self._recurrent_head(x, y)
        w_ih, w_hh, b_ih, b_hh = self.params[:4]
        d = _lstm_backward(xn, h_prev, dout, w_ih, w_hh, b_ih, b_hh)
        self._input_grads(xn, h_prev, d, d, ones)
        return loss


def loss_and_grad(model, x: torch.Tensor, y: torch.Tensor) -> float:
    """One name's loss with every ``.grad`` set, written out (a one-off :class:`WrittenOut`)."""
    return WrittenOut(model)(x, y)


def _head_loss_and_grad(dropout, z: np.ndarray, y: np.ndarray, fast: "WrittenOut | None" = None):
    """Dropout (drawn as ``nn.Dropout`` draws it) + mean cross-entropy on logits ``z`` (T, V).

    Returns the loss and d loss / d ``z``. The mask comes from torch's generator exactly as
    ``nn.Dropout`` draws it (:func:`dino_rnn.fast.torch_private.dropout_noise`), so seeded runs
    draw the same masks as the autograd path. ``fast``: reuse its buffer for the draw.
    """
    T = z.shape[0]
    noise = None
    if dropout.training and dropout.p > 0:
        draw = fast.mask_buffer(z.shape)[0] if fast is not None else torch.empty(z.shape, dtype=torch.float32)
        noise = dropout_noise(draw, dropout.p)
        z *= noise
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    flat = _row_offsets(T, z.shape[1]) + y  # z.flat[flat] = z[t, y[t]]
    loss = float(np.log(s).sum() - z.take(flat).sum()) / T
    s *= T
    e /= s  # softmax / T
    e.ravel()[flat] -= 1.0 / T
    if noise is not None:
        e *= noise
    return loss, e


_ONES = np.ones(4096, dtype=np.float32)
_NO_MASK = np.empty((0, 0), dtype=np.float32)
_ROW_OFFSETS: dict = {}


def _row_offsets(T: int, V: int) -> np.ndarray:
    """``[0, V, 2V, ...]`` (T entries), made once per shape."""
    r = _ROW_OFFSETS.get((T, V))
    if r is None:
        r = _ROW_OFFSETS[(T, V)] = np.arange(T) * V
    return r


def _sigmoid(a: np.ndarray) -> np.ndarray:
    """Logistic sigmoid as 0.5 * tanh(a / 2) + 0.5 (no overflow for large |a|)."""
    r = np.multiply(a, 0.5)
    np.tanh(r, out=r)
    r *= 0.5
    r += 0.5
    return r


def _recurrence_backward(dout: np.ndarray, w: np.ndarray, deriv: np.ndarray | None) -> np.ndarray:
    """Back-propagation through ``h_t = act(a_t + w @ h_{t-1})``.

    ``dout[t]`` is the gradient reaching ``h_t`` from outside the recurrence and
    ``deriv[t]`` is ``act'`` at step t (``None``: the identity). Returns the gradient
    of the pre-activations, (T, H).
    """
    T = dout.shape[0]
    g = np.empty_like(dout)
    tmp = np.empty_like(dout[0])
    if deriv is None:
        g[T - 1] = dout[T - 1]
    else:
        np.multiply(dout[T - 1], deriv[T - 1], out=g[T - 1])
    for t in range(T - 1, 0, -1):
        np.dot(g[t], w, out=tmp)  # w.T @ g_t
        tmp += dout[t - 1]
        if deriv is None:
            g[t - 1] = tmp
        else:
            np.multiply(tmp, deriv[t - 1], out=g[t - 1])
    return g


def _gru_backward(x, h_prev, h, dout, w_ih, w_hh, b_ih, b_hh):
    """d loss / d (input part, hidden part) of ``nn.GRU``'s gate pre-activations, (T, 3H) each.

    PyTorch's GRU: r = s(gi_r + gh_r), z = s(gi_z + gh_z), n = tanh(gi_n + r * gh_n),
    h_t = (1 - z) * n + z * h_{t-1}, with gi = W_ih x + b_ih and gh = W_hh h_{t-1} + b_hh.
    """
    T, H = h.shape
    gi = (x @ w_ih.T).reshape(T, 3, H)
    gi += b_ih.reshape(3, H)
    gh = (h_prev @ w_hh.T).reshape(T, 3, H)
    gh += b_hh.reshape(3, H)
    rz = _sigmoid(gi[:, :2] + gh[:, :2])
    r, z = rz[:, 0], rz[:, 1]
    n = np.tanh(gi[:, 2] + r * gh[:, 2])
    qn = (1.0 - z) * (1.0 - n * n)  # d h_t / d (gi_n + r * gh_n)
    sd = rz * (1.0 - rz)
    # d h_t / d gh, per unit of d h_t (d gi differs only in its n block: qn)
    qh = np.empty((T, 3, H), dtype=h.dtype)
    np.multiply(qn * gh[:, 2], sd[:, 0], out=qh[:, 0])
    np.multiply(h_prev - n, sd[:, 1], out=qh[:, 1])
    np.multiply(qn, r, out=qh[:, 2])
    dh = np.empty_like(dout)
    dgh = np.empty((T, 3, H), dtype=h.dtype)
    dgh2 = dgh.reshape(T, 3 * H)
    tmp = np.empty(H, dtype=h.dtype)
    dh[T - 1] = dout[T - 1]
    for t in range(T - 1, -1, -1):
        np.multiply(qh[t], dh[t], out=dgh[t])
        if t:
            nxt = dh[t - 1]
            np.dot(dgh2[t], w_hh, out=nxt)  # w_hh.T @ d gh_t
            nxt += dout[t - 1]
            np.multiply(dh[t], z[t], out=tmp)
            nxt += tmp
    dgi = dgh.copy()
    np.multiply(dh, qn, out=dgi[:, 2])
    return dgi.reshape(T, 3 * H), dgh2


_GATE_SCALE = np.array([0.5, 0.5, 1.0, 0.5], dtype=np.float32).reshape(4, 1)
_GATE_SHIFT = np.array([0.5, 0.5, 0.0, 0.5], dtype=np.float32).reshape(4, 1)
_GATE_SCALE_SQ = _GATE_SCALE * _GATE_SCALE


def _lstm_backward(x, h_prev, dout, w_ih, w_hh, b_ih, b_hh):
    """d loss / d gate pre-activations of ``nn.LSTM`` (gates i, f, g, o), (T, 4H).

    c_t = f * c_{t-1} + i * g, h_t = o * tanh(c_t); the gates are recomputed from the
    module's outputs and the cell state from them (the module does not return it).
    The four gates in one ``tanh``: sigmoid(a) = 0.5 * tanh(a / 2) + 0.5 for i, f, o,
    tanh for g; their derivatives are 0.25 * (1 - tanh(a / 2)^2) = s(1 - s) and 1 - g^2.
    """
    T, H = dout.shape
    dt = dout.dtype
    pre = x @ w_ih.T
    pre += np.dot(w_hh, np.ascontiguousarray(h_prev.T)).T  # (w_hh @ h_prev.T).T: BLAS's fast layout
    pre += b_ih
    pre += b_hh
    th = pre.reshape(T, 4, H)
    th *= _GATE_SCALE
    np.tanh(th, out=th)
    act = th * _GATE_SCALE
    act += _GATE_SHIFT  # i, f, g, o
    deriv = np.multiply(th, th, out=th)
    np.subtract(1.0, deriv, out=deriv)
    deriv *= _GATE_SCALE_SQ  # d act / d pre-activation
    i, f, g, o = act[:, 0], act[:, 1], act[:, 2], act[:, 3]
    ig = i * g
    cs = np.empty((T + 1, H), dtype=dt)  # row 0: c_0 = 0, row t+1: c_t
    cs[0] = 0.0
    for f_t, ig_t, c_before, c_t in zip(f, ig, cs, cs[1:]):
        np.multiply(f_t, c_before, out=c_t)
        c_t += ig_t
    c_prev, c = cs[:-1], cs[1:]
    tc = np.tanh(c)
    a = np.multiply(tc, tc)
    np.subtract(1.0, a, out=a)
    a *= o  # d h_t / d c_t
    # d pre-activation = P * [dc, dc, dc, dh] per step (c_t through i, f, g; h_t through o)
    P = np.empty((T, 4, H), dtype=dt)
    np.multiply(deriv[:, 0], g, out=P[:, 0])
    np.multiply(deriv[:, 1], c_prev, out=P[:, 1])
    np.multiply(deriv[:, 2], i, out=P[:, 2])
    np.multiply(deriv[:, 3], tc, out=P[:, 3])
    # going back from step t to t - 1: [dc, dc, dc, dh] * C[t] = [f_t dc_t (x3), a_{t-1} dh_{t-1}]
    C = np.empty((T, 4, H), dtype=dt)
    C[1:, :3] = f[1:, None]
    C[1:, 3] = a[:-1]
    d = np.empty((T, 4 * H), dtype=dt)
    q = np.empty((4, H), dtype=dt)  # [dc_t, dc_t, dc_t, dh_t]
    qc = np.empty((4, H), dtype=dt)
    q_c, q_h, qc_c, qc_h = q[:3], q[3], qc[:3], qc[3]
    q_h[...] = dout[T - 1]
    np.multiply(q_h, a[T - 1], out=q_c)
    q1, qc1 = q.reshape(4 * H), qc.reshape(4 * H)
    P1, C1 = P.reshape(T, 4 * H), C.reshape(T, 4 * H)
    for P_t, d_t, C_t, dout_before in zip(P1[:0:-1], d[:0:-1], C1[:0:-1], dout[-2::-1]):
        np.multiply(P_t, q1, out=d_t)
        np.dot(d_t, w_hh, out=q_h)  # w_hh.T @ d pre_t
        q_h += dout_before
        np.multiply(q1, C_t, out=qc1)
        np.add(qc_c, qc_h, out=q_c)
    np.multiply(P1[0], q1, out=d[0])
    return d
