"""Gradients written out: one name's loss and exact gradient without autograd.

A name is ~12 characters, so a training step is a few hundred tiny operations and its
cost is per-call overhead, not arithmetic. NumPy's per-call overhead on small arrays is a
fraction of eager torch's, and there is no autograd graph to build, so this path works on
NumPy views of the parameters' and gradients' own float32 buffers (no copies). The
modules' own forward passes (``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``) and the dropout draw
run in torch; what is written out here is back-propagation through time for the
one-layer cells, the read-out, dropout and the cross-entropy.

It sets every parameter's ``.grad`` to what ``loss.backward()`` would give, up to float
rounding: ``tests/test_speed_semantics.py`` checks it against autograd for every model,
several name lengths, train and eval mode. Where it does not apply (several layers, a
GPU, another dtype) the functions return ``None`` and training uses autograd. Set
``DINO_RNN_AUTOGRAD=1`` to train with autograd everywhere.
"""

from __future__ import annotations

import os
import weakref

import numpy as np
import torch
from torch import nn


def enabled() -> bool:
    """False when ``DINO_RNN_AUTOGRAD=1`` asks for autograd everywhere."""
    return os.environ.get("DINO_RNN_AUTOGRAD", "") in ("", "0")


@torch.no_grad()
def scratch_loss_and_grad(model, x: torch.Tensor, y: torch.Tensor) -> float | None:
    """Cross-entropy of one name and its exact gradient, without autograd.

    The same computation as ``forward`` from a zero state, then back-propagation
    through time written out. Sets every parameter's ``.grad`` to what
    ``loss.backward()`` would give (up to float rounding) and returns the loss.
    ``None`` (nothing done) off the CPU: use autograd there.
    """
    fast = _FastParams.of(model) if enabled() else None
    if fast is None:
        return None
    (wi2h, bi2h, wi2o, bi2o, wo2o, bo2o), grads = fast.params, fast.grads
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
    loss, dz = _head_loss_and_grad(model.dropout, z, yn)
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


@torch.no_grad()
def recurrent_loss_and_grad(model, x: torch.Tensor, y: torch.Tensor) -> float | None:
    """Cross-entropy of one name and its exact gradient, without autograd.

    The forward pass is the module's own (``model.rnn(x)`` from a zero state, then
    the read-out and dropout); the gradient is back-propagation through time written
    out for the one-layer cell, with the gates recomputed from the module's outputs
    in whole-name matrix products. Sets every parameter's ``.grad`` to what
    ``loss.backward()`` would give (up to float rounding) and returns the loss.
    ``None`` (nothing done) where it does not apply (several layers, off the CPU):
    use autograd there.
    """
    rnn = model.rnn
    if (
        model.num_layers != 1
        or rnn.bidirectional
        or not rnn.bias
        or getattr(rnn, "proj_size", 0)
        or (model.cell == "rnn" and rnn.nonlinearity != "tanh")
    ):
        return None
    fast = _FastParams.of(model) if enabled() else None
    if fast is None:
        return None
    out_t, _ = rnn(x)  # the module's forward, (T, H)
    (w_ih, w_hh, b_ih, b_hh, w_fc, b_fc), grads = fast.params, fast.grads
    out, xn = out_t.numpy(), x.numpy()
    T, H = out.shape
    z = out @ w_fc.T
    z += b_fc
    loss, dz = _head_loss_and_grad(model.dropout, z, y.numpy())
    np.matmul(dz.T, out, out=grads[4])
    np.sum(dz, axis=0, out=grads[5])
    dout = dz @ w_fc  # d loss / d h_t through the read-out, (T, H)
    h_prev = np.empty_like(out)
    h_prev[0] = 0.0
    h_prev[1:] = out[:-1]
    if model.cell == "rnn":
        dgi = dgh = _recurrence_backward(dout, w_hh, 1.0 - out * out)
    elif model.cell == "gru":
        dgi, dgh = _gru_backward(xn, h_prev, out, dout, w_ih, w_hh, b_ih, b_hh)
    else:
        dgi = dgh = _lstm_backward(xn, h_prev, dout, w_ih, w_hh, b_ih, b_hh)
    np.matmul(dgi.T, xn, out=grads[0])
    np.matmul(dgh.T, h_prev, out=grads[1])
    np.sum(dgi, axis=0, out=grads[2])
    if dgh is dgi:
        grads[3][...] = grads[2]
    else:
        np.sum(dgh, axis=0, out=grads[3])
    return loss


class _FastParams:
    """NumPy views of a model's parameters and of gradient buffers set as their ``.grad``.

    Rebuilt when a parameter's storage or ``.grad`` was replaced (``zero_grad`` setting
    them to ``None``, ``load_state_dict`` with ``assign=True``, ...). ``of`` returns
    ``None`` when the model is not a float32 CPU model.
    """

    __slots__ = ("tensors", "ptrs", "params", "grad_tensors", "grads")
    _cache: "weakref.WeakKeyDictionary[nn.Module, _FastParams]" = weakref.WeakKeyDictionary()

    @staticmethod
    def of(model: nn.Module) -> "_FastParams | None":
        fast = _FastParams._cache.get(model)
        if fast is not None and fast.valid():
            return fast
        tensors = list(model.parameters())
        if not all(p.device.type == "cpu" and p.dtype == torch.float32 for p in tensors):
            return None
        fast = _FastParams(tensors)
        _FastParams._cache[model] = fast
        return fast

    def __init__(self, tensors):
        self.tensors = tensors
        self.ptrs = [p.data_ptr() for p in tensors]
        self.params = [p.detach().numpy() for p in tensors]
        for p in tensors:
            if p.grad is None or p.grad.shape != p.shape or not p.grad.is_contiguous() or p.grad.dtype != p.dtype:
                p.grad = torch.zeros_like(p, memory_format=torch.contiguous_format)
        self.grad_tensors = [p.grad for p in tensors]
        self.grads = [g.numpy() for g in self.grad_tensors]

    def valid(self) -> bool:
        for p, ptr, g in zip(self.tensors, self.ptrs, self.grad_tensors):
            if p.grad is not g or p.data_ptr() != ptr:
                return False
        return True


def _head_loss_and_grad(dropout: nn.Dropout, z: np.ndarray, y: np.ndarray):
    """Dropout (drawn as ``nn.Dropout`` draws it) + mean cross-entropy on logits ``z`` (T, V).

    Returns the loss and d loss / d ``z``. The mask comes from torch's generator exactly
    as ``torch.nn.functional.dropout`` draws it on the CPU (``bernoulli_(1 - p)`` on a
    float32 tensor shaped like ``z``, divided by ``1 - p``), so seeded runs draw the
    same masks as the autograd path.
    """
    T = z.shape[0]
    noise = None
    if dropout.training and dropout.p > 0:
        keep = 1.0 - dropout.p
        noise = torch.empty(z.shape, dtype=torch.float32).bernoulli_(keep).div_(keep).numpy()
        z *= noise
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    rows = _ARANGE[:T] if T <= _ARANGE.size else np.arange(T)
    loss = float(np.log(s).sum() - z[rows, y].sum()) / T
    e /= s  # softmax
    e[rows, y] -= 1.0
    e *= 1.0 / T
    if noise is not None:
        e *= noise
    return loss, e


_ARANGE = np.arange(4096)


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


def _lstm_backward(x, h_prev, dout, w_ih, w_hh, b_ih, b_hh):
    """d loss / d gate pre-activations of ``nn.LSTM`` (gates i, f, g, o), (T, 4H).

    c_t = f * c_{t-1} + i * g, h_t = o * tanh(c_t); the gates are recomputed from the
    module's outputs and the cell state from them (the module does not return it).
    """
    T, H = dout.shape
    pre = x @ w_ih.T
    pre += h_prev @ w_hh.T
    pre += b_ih
    pre += b_hh
    pre = pre.reshape(T, 4, H)
    act = _sigmoid(pre)
    g = np.tanh(pre[:, 2])
    i, f, o = act[:, 0], act[:, 1], act[:, 3]
    ig = i * g
    c = np.empty((T + 1, H), dtype=dout.dtype)  # row 0: c_0 = 0, row t+1: c_t
    c[0] = 0.0
    for t in range(T):
        ct = c[t + 1]
        np.multiply(f[t], c[t], out=ct)
        ct += ig[t]
    c_prev, c = c[:-1], c[1:]
    tc = np.tanh(c)
    sd = act * (1.0 - act)
    a = o * (1.0 - tc * tc)  # d h_t / d c_t
    p3 = np.empty((T, 3, H), dtype=dout.dtype)  # d c_t / d (i, f, g) pre-activations
    np.multiply(g, sd[:, 0], out=p3[:, 0])
    np.multiply(c_prev, sd[:, 1], out=p3[:, 1])
    np.multiply(i, 1.0 - g * g, out=p3[:, 2])
    po = tc * sd[:, 3]  # d h_t / d o pre-activation
    d = np.empty((T, 4, H), dtype=dout.dtype)
    d2 = d.reshape(T, 4 * H)
    dh = dout[T - 1].copy()
    dc = dh * a[T - 1]
    tmp = np.empty(H, dtype=dout.dtype)
    for t in range(T - 1, -1, -1):
        np.multiply(p3[t], dc, out=d[t, :3])
        np.multiply(po[t], dh, out=d[t, 3])
        if t:
            np.dot(d2[t], w_hh, out=dh)  # w_hh.T @ d pre_t
            dh += dout[t - 1]
            dc *= f[t]
            np.multiply(dh, a[t - 1], out=tmp)
            dc += tmp
    return d2
