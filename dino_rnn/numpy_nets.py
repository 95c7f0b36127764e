"""An RNN and an LSTM written in NumPy, with backpropagation through time by hand.

The study's second source is a lab that builds both networks from scratch — forward pass,
backward pass, gradient clipping, SGD — and then the same LSTM in PyTorch. This module
is that lab's NumPy half, written to be read and *checked* (the tests compare every gradient
with ``torch.autograd`` and with central finite differences, in float64).

The lab's maths are plain functions, one per idea, and they are the exercises of
``notebooks/05_anbn_lab.ipynb``: each body lies between nbgrader's ``### BEGIN SOLUTION`` and
``### END SOLUTION``, and the notebook's exercise cells are these functions' source (a test
keeps them equal). :class:`Maths` bundles them; a net or an optimiser made with a student's
:class:`Maths` runs the student's functions.

Both networks read a sequence of token indices ``x_1 .. x_T`` (one-hot vectors in the
equations; an index picks a column of the input weights, which is the same product) and
predict the next token at every step. Both expose

- ``params``: a dict name → float64 array. The arrays are views into one flat buffer
  (``net.flat``), so an optimiser can update all of them with a handful of vector
  operations; updating ``params[k]`` in place updates the network.
- ``forward(inputs, state=None) -> (logits (T, V), state)``: the read-out before softmax.
- ``loss(inputs, targets) -> float``: the mean cross-entropy over the sequence.
- ``loss_and_grads(inputs, targets) -> (loss, grads)``: the loss above and its gradient,
  ``grads`` with the keys and shapes of ``params`` (again views into one flat buffer).

The optimisers, :class:`SGD` and :class:`AdamW`, and :func:`clip_grad_norm` work on those
dicts. :class:`AdamW` follows ``torch.optim.AdamW`` exactly (decoupled weight decay,
bias correction, eps added after the square root), which the tests check step by step.
Training is fast on the compiled kernels of ``dino_rnn/fast/`` (the same equations); this
module is the readable reference they are tested against.

No autodiff library is used here (this module does not import torch).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

# ---------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------


def orthogonal(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A (rows, cols) matrix with orthonormal rows or columns (the lab's ``init_orthogonal``).

    QR of a Gaussian matrix, signs fixed by the diagonal of R so the result is uniformly
    distributed over orthogonal matrices (Saxe et al. 2014, as in the lab).
    """
    a = rng.standard_normal((rows, cols))
    if rows < cols:
        a = a.T
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    return q.T.copy() if rows < cols else q


def _views(flat: np.ndarray, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    out, i = {}, 0
    for k, shape in shapes.items():
        n = math.prod(shape)
        out[k] = flat[i : i + n].reshape(shape)
        i += n
    return out


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def sigmoid(a: np.ndarray) -> np.ndarray:
    """The logistic function 1 / (1 + e^−a), written as (1 + tanh(a/2)) / 2, which never overflows."""
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def cross_entropy(logits: np.ndarray, targets) -> float:
    """Mean over the T steps of -log softmax(logits_t)[target_t]."""
    targets = np.asarray(targets)
    lp = log_softmax(logits)
    return float(-lp[np.arange(len(targets)), targets].mean())


def one_hot(ids, n: int) -> np.ndarray:
    """(T,) token indices → (T, n) rows of zeros with a 1 in each index's column."""
    ids = np.asarray(ids, dtype=np.intp)
    x = np.zeros((len(ids), n))
    x[np.arange(len(ids)), ids] = 1.0
    return x


def _indices(seq, vocab_size: int) -> np.ndarray:
    a = np.asarray(seq, dtype=np.intp).reshape(-1)
    if a.size == 0:
        raise ValueError("a sequence needs at least one token")
    if a.min() < 0 or a.max() >= vocab_size:
        raise ValueError(f"token indices must be in 0..{vocab_size - 1}, got {a.min()}..{a.max()}")
    return a


# ---------------------------------------------------------------------------
# The RNN's maths (exercises B, C, D)
# ---------------------------------------------------------------------------


def rnn_forward(p, inputs, h0=None):
    r"""The RNN's forward pass over one sequence.

    ``p``: the parameters ``U`` (H, V), ``V`` (H, H), ``W`` (V, H), ``b_h`` (H,), ``b_o`` (V,);
    ``inputs``: (T,) token indices; ``h0``: the (H,) state to start from (``None``: zeros).
    For every step t, with x_t one-hot (so that U x_t is column x_t of U)::

        h_t = tanh(U x_t + V h_{t-1} + b_h)        o_t = W h_t + b_o

    Returns the logits o (T, V) and every hidden state ``hs`` (T + 1, H): hs[0] = h_0, hs[t] = h_t.
    """
    hs = np.zeros((len(inputs) + 1, p["V"].shape[0]))
    if h0 is not None:
        hs[0] = h0
    ### BEGIN SOLUTION
    for t, x in enumerate(inputs):
        hs[t + 1] = np.tanh(p["U"][:, x] + p["b_h"] + p["V"] @ hs[t])
    logits = hs[1:] @ p["W"].T + p["b_o"]  # the read-out of every step in one product
    ### END SOLUTION
    return logits, hs


def softmax_cross_entropy(logits, targets):
    r"""The mean cross-entropy of a sequence, and its gradient with respect to the logits.

    ``logits`` (T, V), ``targets`` (T,) token indices. With p_t = softmax(o_t)::

        L = −(1/T) Σ_t log p_t[y_t]          ∂L/∂o_t = (p_t − onehot(y_t)) / T

    Returns ``(L, dlogits)``, dlogits of the logits' shape.
    """
    T = len(targets)
    rows = np.arange(T)
    ### BEGIN SOLUTION
    z = logits - logits.max(axis=1, keepdims=True)  # the same softmax, and no overflow in exp
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    loss = float((np.log(s[:, 0]) - z[rows, targets]).mean())
    dlogits = e / s
    dlogits[rows, targets] -= 1.0
    dlogits /= T
    ### END SOLUTION
    return loss, dlogits


def rnn_backward(p, inputs, hs, dlogits):
    r"""Backpropagation through time for :func:`rnn_forward`: the gradient of every parameter.

    ``hs``: the hidden states :func:`rnn_forward` returned; ``dlogits`` (T, V): the loss's gradient
    with respect to the logits. Going backwards from t = T, with δh_{T+1} terms zero::

        dW   = Σ_t δo_t h_tᵀ            db_o = Σ_t δo_t
        δh_t = Wᵀ δo_t + Vᵀ δz_{t+1}     the second term carries the gradient back through time
        δz_t = δh_t ∘ (1 − h_t²)         tanh′ = 1 − tanh²
        dU   = Σ_t δz_t x_tᵀ            dV = Σ_t δz_t h_{t-1}ᵀ      db_h = Σ_t δz_t

    Returns a dict with the keys and shapes of ``p``.
    """
    T, H = len(inputs), p["V"].shape[0]
    dz = np.zeros((T, H))
    dh_next = np.zeros(H)  # Vᵀ δz_{t+1}: zero after the last step
    ### BEGIN SOLUTION
    dh_out = dlogits @ p["W"]  # Wᵀ δo_t for every t at once: (T, H)
    for t in reversed(range(T)):
        dz[t] = (dh_out[t] + dh_next) * (1.0 - hs[t + 1] ** 2)
        dh_next = p["V"].T @ dz[t]
    ### END SOLUTION
    return {"U": dz.T @ one_hot(inputs, p["U"].shape[1]), "V": dz.T @ hs[:-1], "W": dlogits.T @ hs[1:],
            "b_h": dz.sum(axis=0), "b_o": dlogits.sum(axis=0)}


# ---------------------------------------------------------------------------
# The LSTM's maths (exercises E, F)
# ---------------------------------------------------------------------------

GATES = ("f", "i", "g", "o")


def lstm_forward(p, inputs, state=None):
    r"""The LSTM's forward pass over one sequence.

    ``p``: the gates' ``W_f, W_i, W_g, W_o`` (H, H+V) and ``b_f, b_i, b_g, b_o`` (H,), the read-out
    ``W_v`` (V, H) and ``b_v`` (V,); ``inputs``: (T,) token indices; ``state``: ``(h_0, c_0)`` or
    ``None`` (zeros). For every step t, with z_t = [h_{t-1}; x_t] (h first, then the one-hot x)::

        f_t = σ(W_f z_t + b_f)     i_t = σ(W_i z_t + b_i)     g_t = tanh(W_g z_t + b_g)     o_t = σ(W_o z_t + b_o)
        c_t = f_t ∘ c_{t-1} + i_t ∘ g_t        h_t = o_t ∘ tanh(c_t)        v_t = W_v h_t + b_v

    Returns the logits v (T, V) and the cache for the backward pass: ``h`` and ``c`` (T + 1, H)
    with row 0 the initial state, and the gates ``f``, ``i``, ``g``, ``o`` (T, H).
    """
    T, H, V = len(inputs), p["b_f"].shape[0], p["b_v"].shape[0]
    h, c = np.zeros((T + 1, H)), np.zeros((T + 1, H))
    if state is not None:
        h[0], c[0] = state
    f, i, g, o = (np.zeros((T, H)) for _ in GATES)
    x = one_hot(inputs, V)
    ### BEGIN SOLUTION
    for t in range(T):
        z = np.concatenate([h[t], x[t]])
        f[t] = sigmoid(p["W_f"] @ z + p["b_f"])
        i[t] = sigmoid(p["W_i"] @ z + p["b_i"])
        g[t] = np.tanh(p["W_g"] @ z + p["b_g"])
        o[t] = sigmoid(p["W_o"] @ z + p["b_o"])
        c[t + 1] = f[t] * c[t] + i[t] * g[t]
        h[t + 1] = o[t] * np.tanh(c[t + 1])
    logits = h[1:] @ p["W_v"].T + p["b_v"]
    ### END SOLUTION
    return logits, {"h": h, "c": c, "f": f, "i": i, "g": g, "o": o}


def lstm_backward(p, inputs, cache, dlogits):
    r"""Backpropagation through time for :func:`lstm_forward`: the gradient of every parameter.

    Going backwards from t = T (δ terms of step T + 1 are zero), with W_h the h-columns of the
    four gate matrices stacked (4H, H) and σ′ = σ(1 − σ)::

        δh_t = W_vᵀ δv_t + W_hᵀ δa_{t+1}
        δc_t = δh_t ∘ o_t ∘ (1 − tanh² c_t) + δc_{t+1} ∘ f_{t+1}
        δa_t = [δc_t ∘ c_{t-1} ∘ f_t(1 − f_t);  δc_t ∘ g_t ∘ i_t(1 − i_t);
                δc_t ∘ i_t ∘ (1 − g_t²);        δh_t ∘ tanh c_t ∘ o_t(1 − o_t)]    (f, i, g, o)
        dW_• = Σ_t δa•_t z_tᵀ      db_• = Σ_t δa•_t      dW_v = Σ_t δv_t h_tᵀ      db_v = Σ_t δv_t

    Returns a dict with the keys and shapes of ``p``.
    """
    T, H, V = len(inputs), p["b_f"].shape[0], p["b_v"].shape[0]
    h, c, f, i, g, o = (cache[k] for k in ("h", "c", "f", "i", "g", "o"))
    W_h = np.concatenate([p[f"W_{k}"][:, :H] for k in GATES])  # (4H, H)
    da = np.zeros((T, 4 * H))  # the gates' pre-activation gradients, f i g o side by side
    dh_next, dc_next = np.zeros(H), np.zeros(H)  # W_hᵀ δa_{t+1} and δc_{t+1} ∘ f_{t+1}
    ### BEGIN SOLUTION
    for t in reversed(range(T)):
        tanh_c = np.tanh(c[t + 1])
        dh = p["W_v"].T @ dlogits[t] + dh_next
        dc = dh * o[t] * (1.0 - tanh_c**2) + dc_next
        da[t, :H] = dc * c[t] * f[t] * (1.0 - f[t])  # the forget gate scales c_{t-1}: c[t] here
        da[t, H : 2 * H] = dc * g[t] * i[t] * (1.0 - i[t])
        da[t, 2 * H : 3 * H] = dc * i[t] * (1.0 - g[t] ** 2)
        da[t, 3 * H :] = dh * tanh_c * o[t] * (1.0 - o[t])
        dh_next = W_h.T @ da[t]
        dc_next = dc * f[t]
    ### END SOLUTION
    z = np.concatenate([h[:-1], one_hot(inputs, V)], axis=1)  # z_t = [h_{t-1}; x_t], (T, H+V)
    grads = {"W_v": dlogits.T @ h[1:], "b_v": dlogits.sum(axis=0)}
    for k, d in zip(GATES, np.split(da, 4, axis=1)):
        grads[f"W_{k}"], grads[f"b_{k}"] = d.T @ z, d.sum(axis=0)
    return grads


# ---------------------------------------------------------------------------
# Clipping and the updates (exercises G, H, I, J)
# ---------------------------------------------------------------------------


def global_norm(grads):
    """The norm of all the gradients as one vector: √(Σ over every array of its squared entries)."""
    ### BEGIN SOLUTION
    return math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
    ### END SOLUTION


def clip_grad_norm(grads, max_norm):
    """Scale every gradient in place by ``max_norm / norm`` when their global norm is larger, so
    that it becomes ``max_norm`` (the direction is kept); return the norm before clipping.

    (``torch.nn.utils.clip_grad_norm_`` and the lab divide by ``norm + 1e-6``, which stops
    just short of the cap; the difference is below 1e-5 relative for any norm above 0.25.)
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be positive, not {max_norm}")
    norm = global_norm(grads)
    ### BEGIN SOLUTION
    if norm > max_norm:
        for g in grads.values():
            g *= max_norm / norm
    ### END SOLUTION
    return norm


def sgd_update(param, grad, lr):
    """Plain gradient descent, in place: θ ← θ − lr · g."""
    ### BEGIN SOLUTION
    param -= grad * lr
    ### END SOLUTION


def adam_update(param, grad, m, v, t, *, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    """One step of Adam with decoupled weight decay (``torch.optim.AdamW``), in place on ``param``,
    ``m`` and ``v``; ``t`` = 1, 2, … counts the steps::

        θ ← θ (1 − lr · λ)                                   decoupled weight decay
        m ← β₁ m + (1 − β₁) g          v ← β₂ v + (1 − β₂) g²
        θ ← θ − lr / (1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)     m and v corrected for their start at 0
    """
    ### BEGIN SOLUTION
    param *= 1.0 - lr * weight_decay
    m += (grad - m) * (1.0 - beta1)  # as torch: m.lerp_(g, 1 − β₁)
    v *= beta2
    v += grad * (1.0 - beta2) * grad
    param -= m / (np.sqrt(v) / math.sqrt(1.0 - beta2**t) + eps) * (lr / (1.0 - beta1**t))
    ### END SOLUTION


@dataclass(frozen=True)
class Maths:
    """The lab's functions a net and its optimiser run: the package's by default (:data:`MATHS`).
    A notebook's exercises make one from the student's functions (``Maths(rnn_forward=mine)``)."""

    rnn_forward: Callable = rnn_forward
    rnn_backward: Callable = rnn_backward
    lstm_forward: Callable = lstm_forward
    lstm_backward: Callable = lstm_backward
    softmax_cross_entropy: Callable = softmax_cross_entropy
    global_norm: Callable = global_norm
    clip_grad_norm: Callable = clip_grad_norm
    sgd_update: Callable = sgd_update
    adam_update: Callable = adam_update

    def own(self) -> list[str]:
        """The functions that are not the package's."""
        return [f.name for f in fields(self) if getattr(self, f.name) is not getattr(MATHS, f.name)]


MATHS = Maths()


# ---------------------------------------------------------------------------
# The two networks
# ---------------------------------------------------------------------------


class NumpyNet:
    """What both networks share: the flat parameter buffer, the dict of views into it, and the
    maths they run (:class:`Maths`)."""

    vocab_size: int
    hidden_size: int
    shapes: dict[str, tuple[int, ...]]
    maths: Maths

    def _allocate(self) -> None:
        self.flat = np.zeros(sum(math.prod(s) for s in self.shapes.values()))
        self.params = _views(self.flat, self.shapes)

    def new_grads(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """A gradient buffer (flat, and the dict of views) for ``loss_and_grads(..., out=)``."""
        g = np.zeros_like(self.flat)
        return g, _views(g, self.shapes)

    @property
    def n_params(self) -> int:
        """Learnable parameters (every entry of every array in ``params``)."""
        return int(self.flat.size)

    def get_state(self) -> dict[str, np.ndarray]:
        """A copy of the parameters (for keeping the best-validation state)."""
        return {k: v.copy() for k, v in self.params.items()}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Copy ``state`` into the parameters, in place (shapes must match)."""
        for k, v in self.params.items():
            if state[k].shape != v.shape:
                raise ValueError(f"parameter {k!r} has shape {v.shape}, the state gives {state[k].shape}")
            v[...] = state[k]

    def loss(self, inputs, targets) -> float:
        """The mean cross-entropy over the sequence (forward pass only)."""
        logits, _ = self.forward(inputs)
        return cross_entropy(logits, _indices(targets, self.vocab_size))

    def loss_and_grads(self, inputs, targets, out=None):
        """The mean cross-entropy and its gradient, by the hand-written backward pass.

        ``out``: a buffer from :meth:`new_grads` to write the gradient into (every entry is
        overwritten) instead of a new one; a training loop reuses one. The gradient comes back
        as views into one flat buffer, as the optimisers' fast path wants it.
        """
        ids, tgt = _indices(inputs, self.vocab_size), _indices(targets, self.vocab_size)
        if len(ids) != len(tgt):
            raise ValueError(f"inputs and targets differ in length ({len(ids)} vs {len(tgt)})")
        logits, cache = self._forward(ids, None)
        loss, dlogits = self.maths.softmax_cross_entropy(logits, tgt)
        grads = self._backward(ids, cache, dlogits)
        gflat, g = self.new_grads() if out is None else out
        for k, v in g.items():
            v[...] = grads[k]
        return loss, g

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, hidden_size={self.hidden_size}, params={self.n_params})"


class NumpyRNN(NumpyNet):
    r"""An Elman RNN with a softmax read-out, as in the lab (:func:`rnn_forward`, :func:`rnn_backward`).

    Parameters: ``U`` (H, V), ``V`` (H, H), ``W`` (V, H), ``b_h`` (H,), ``b_o`` (V,); the matrices
    start orthogonal, the biases at zero. At V=27, H=64 that is 7643 parameters (``nn.RNN`` +
    Linear has 7707: PyTorch keeps two hidden biases).
    """

    def __init__(self, vocab_size: int, hidden_size: int, seed: int = 0, maths: Maths = MATHS):
        self.vocab_size, self.hidden_size, self.seed, self.maths = int(vocab_size), int(hidden_size), seed, maths
        H, V = self.hidden_size, self.vocab_size
        self.shapes = {"U": (H, V), "V": (H, H), "W": (V, H), "b_h": (H,), "b_o": (V,)}
        self._allocate()
        rng = np.random.default_rng(seed)
        for k in ("U", "V", "W"):
            self.params[k][...] = orthogonal(rng, *self.shapes[k])

    def _forward(self, ids, h0):
        return self.maths.rnn_forward(self.params, ids, h0)

    def _backward(self, ids, hs, dlogits):
        return self.maths.rnn_backward(self.params, ids, hs, dlogits)

    def forward(self, inputs, state: np.ndarray | None = None):
        """Logits (T, V) for the sequence, and the last hidden state (to continue from)."""
        logits, hs = self._forward(_indices(inputs, self.vocab_size), state)
        return logits, hs[-1].copy()


class NumpyLSTM(NumpyNet):
    r"""An LSTM with a linear read-out, as in the lab (:func:`lstm_forward`, :func:`lstm_backward`).

    Parameters: ``W_f, W_i, W_g, W_o`` (H, H+V) — the first H columns act on h_{t-1}, the last
    V on x_t — ``b_f, b_i, b_g, b_o`` (H,), ``W_v`` (V, H), ``b_v`` (V,). Weights start
    orthogonal, biases at zero. At V=27, H=64 that is 25307 parameters (``nn.LSTM`` + Linear has
    25563: PyTorch keeps two biases per gate). The four gate matrices lie one after another in
    memory: together they are one (4H, H+V) block, which the compiled kernels use.
    """

    GATES = GATES

    def __init__(self, vocab_size: int, hidden_size: int, seed: int = 0, maths: Maths = MATHS):
        self.vocab_size, self.hidden_size, self.seed, self.maths = int(vocab_size), int(hidden_size), seed, maths
        H, V = self.hidden_size, self.vocab_size
        self.shapes = {f"W_{k}": (H, H + V) for k in self.GATES}
        self.shapes.update({f"b_{k}": (H,) for k in self.GATES})
        self.shapes.update({"W_v": (V, H), "b_v": (V,)})
        self._allocate()
        rng = np.random.default_rng(seed)
        for k in (*(f"W_{g}" for g in self.GATES), "W_v"):
            self.params[k][...] = orthogonal(rng, *self.shapes[k])

    def _blocks(self, buffer: np.ndarray | None = None):
        """The (4H, H+V) gate block and the (4H,) bias block, as views of ``flat`` (or ``buffer``)."""
        H, V = self.hidden_size, self.vocab_size
        src = self.flat if buffer is None else buffer
        n = 4 * H * (H + V)
        return src[:n].reshape(4 * H, H + V), src[n : n + 4 * H]

    def _forward(self, ids, state):
        return self.maths.lstm_forward(self.params, ids, state)

    def _backward(self, ids, cache, dlogits):
        return self.maths.lstm_backward(self.params, ids, cache, dlogits)

    def forward(self, inputs, state=None):
        """Logits (T, V) for the sequence, and the last (h, c) (to continue from)."""
        logits, cache = self._forward(_indices(inputs, self.vocab_size), state)
        return logits, (cache["h"][-1].copy(), cache["c"][-1].copy())


# ---------------------------------------------------------------------------
# The optimisers
# ---------------------------------------------------------------------------


def _flat_base(arrays: list[np.ndarray]) -> np.ndarray | None:
    """The 1-D buffer the arrays tile exactly, in order, if they do (as the nets' dicts do)."""
    if not arrays:
        return None
    base = arrays[0].base
    if base is None or base.ndim != 1 or not base.flags.c_contiguous:
        return None
    ptr = base.__array_interface__["data"][0]
    for a in arrays:
        if a.base is not base or not a.flags.c_contiguous or a.__array_interface__["data"][0] != ptr:
            return None
        ptr += a.nbytes
    if ptr != base.__array_interface__["data"][0] + base.nbytes:
        return None
    return base


class _Optimizer:
    n_state = 0  # per-parameter state arrays (Adam: 2)

    def __init__(self, params: dict[str, np.ndarray], lr: float, maths: Maths = MATHS):
        if not lr > 0:
            raise ValueError(f"lr must be positive, not {lr}")
        self.params, self.lr, self.maths = params, float(lr), maths
        self.keys = list(params)
        for k, v in params.items():
            if v.dtype != np.float64:
                raise TypeError(f"parameter {k!r} is {v.dtype}; the optimisers work in float64")
        self._flat = _flat_base([params[k] for k in self.keys])
        # State: one flat buffer per kind, with per-parameter views into it, so the flat
        # path and the per-parameter path see the same numbers.
        size = sum(params[k].size for k in self.keys)
        shapes = {k: params[k].shape for k in self.keys}
        self.state_flat = [np.zeros(size) for _ in range(self.n_state)]
        self.state = [_views(b, shapes) for b in self.state_flat]

    def _pairs(self, grads: dict[str, np.ndarray]):
        """(parameter, gradient, state arrays) to update: one flat triple when all tile one buffer."""
        if set(grads) != set(self.keys):
            raise KeyError(f"gradients for {sorted(grads)} but parameters {sorted(self.keys)}")
        gl = [grads[k] for k in self.keys]
        gflat = _flat_base(gl) if self._flat is not None else None
        if gflat is not None:
            return [(self._flat, gflat, self.state_flat)]
        return [(self.params[k], g, [s[k] for s in self.state]) for k, g in zip(self.keys, gl)]


class SGD(_Optimizer):
    """Plain gradient descent, :func:`sgd_update` on every parameter (the lab's optimiser)."""

    def step(self, grads: dict[str, np.ndarray]) -> None:
        for p, g, _ in self._pairs(grads):
            self.maths.sgd_update(p, g, self.lr)


class AdamW(_Optimizer):
    """Adam with decoupled weight decay, :func:`adam_update` on every parameter: step for step what
    ``torch.optim.AdamW`` computes. Defaults are PyTorch's: β = (0.9, 0.999), ε = 1e-8, λ = 0.01.
    With λ = 0 this is Adam."""

    n_state = 2

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01,
                 maths: Maths = MATHS):
        super().__init__(params, lr, maths)
        self.beta1, self.beta2 = map(float, betas)
        self.eps, self.weight_decay = float(eps), float(weight_decay)
        self.t = 0

    def next_step(self) -> tuple[float, float]:
        """Count one more step; its ``lr / (1 − β₁ᵗ)`` and ``√(1 − β₂ᵗ)`` (the compiled update's inputs)."""
        self.t += 1
        bc1 = 1.0 - self.beta1**self.t
        return self.lr / bc1, math.sqrt(1.0 - self.beta2**self.t)

    def step(self, grads: dict[str, np.ndarray]) -> None:
        pairs = self._pairs(grads)
        self.next_step()
        for p, g, (m, v) in pairs:
            self.maths.adam_update(p, g, m, v, self.t, lr=self.lr, beta1=self.beta1, beta2=self.beta2, eps=self.eps,
                                   weight_decay=self.weight_decay)


__all__ = [
    "Maths",
    "MATHS",
    "rnn_forward",
    "rnn_backward",
    "lstm_forward",
    "lstm_backward",
    "softmax_cross_entropy",
    "sgd_update",
    "adam_update",
    "one_hot",
    "sigmoid",
    "NumpyRNN",
    "NumpyLSTM",
    "SGD",
    "AdamW",
    "clip_grad_norm",
    "global_norm",
    "cross_entropy",
    "softmax",
    "log_softmax",
    "orthogonal",
]
