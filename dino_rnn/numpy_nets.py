"""An RNN and an LSTM written in NumPy, with backpropagation through time by hand.

The study's second source is a lab that builds both networks from scratch — forward pass,
backward pass, gradient clipping, SGD — and then the same LSTM in PyTorch. This module
is that lab's NumPy half, written so that it can be *checked* (the tests compare every
gradient with ``torch.autograd`` and with central finite differences, in float64) and
*fast enough* to train on Dino Names under the study's published protocol.

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

No autodiff library is used here (this module does not import torch).
"""

from __future__ import annotations

import math

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


def cross_entropy(logits: np.ndarray, targets) -> float:
    """Mean over the T steps of -log softmax(logits_t)[target_t]."""
    targets = np.asarray(targets)
    lp = log_softmax(logits)
    return float(-lp[np.arange(len(targets)), targets].mean())


def _ce_and_grad(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """The mean cross-entropy and its gradient with respect to the logits: (softmax − onehot) / T."""
    T = len(targets)
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(T)
    loss = float((np.log(s[:, 0]) - z[rows, targets]).mean())
    d = e / s
    d[rows, targets] -= 1.0
    d /= T
    return loss, d


def _indices(seq, vocab_size: int) -> np.ndarray:
    a = np.asarray(seq, dtype=np.intp).reshape(-1)
    if a.size == 0:
        raise ValueError("a sequence needs at least one token")
    if a.min() < 0 or a.max() >= vocab_size:
        raise ValueError(f"token indices must be in 0..{vocab_size - 1}, got {a.min()}..{a.max()}")
    return a


def _one_hot(ids: np.ndarray, n: int) -> np.ndarray:
    x = np.zeros((len(ids), n))
    x[np.arange(len(ids)), ids] = 1.0
    return x


class NumpyNet:
    """What both networks share: the flat parameter buffer and the dict of views into it."""

    vocab_size: int
    hidden_size: int
    shapes: dict[str, tuple[int, ...]]

    def _allocate(self) -> None:
        self.flat = np.zeros(sum(math.prod(s) for s in self.shapes.values()))
        self.params = _views(self.flat, self.shapes)

    def _new_grads(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        g = np.zeros_like(self.flat)
        return g, _views(g, self.shapes)

    def new_grads(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """A gradient buffer (flat, and the dict of views) for ``loss_and_grads(..., out=)``."""
        return self._new_grads()

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

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, hidden_size={self.hidden_size}, params={self.n_params})"


# ---------------------------------------------------------------------------
# The RNN
# ---------------------------------------------------------------------------


class NumpyRNN(NumpyNet):
    r"""An Elman RNN with a softmax read-out, as in the lab.

    For each step t, with :math:`x_t` one-hot::

        h_t = tanh(U x_t + V h_{t-1} + b_h)        h_0 = 0
        o_t = W h_t + b_o                          (logits; softmax gives the next-token distribution)

    Parameters: ``U`` (H, V), ``V`` (H, H), ``W`` (V, H), ``b_h`` (H,), ``b_o`` (V,);
    the matrices start orthogonal, the biases at zero. At V=27, H=64 that is 7643
    parameters (``nn.RNN`` + Linear has 7707: PyTorch keeps two hidden biases).
    """

    def __init__(self, vocab_size: int, hidden_size: int, seed: int = 0):
        self.vocab_size, self.hidden_size, self.seed = int(vocab_size), int(hidden_size), seed
        H, V = self.hidden_size, self.vocab_size
        self.shapes = {"U": (H, V), "V": (H, H), "W": (V, H), "b_h": (H,), "b_o": (V,)}
        self._allocate()
        rng = np.random.default_rng(seed)
        for k in ("U", "V", "W"):
            self.params[k][...] = orthogonal(rng, *self.shapes[k])

    def _run(self, ids: np.ndarray, h0: np.ndarray | None):
        p = self.params
        T, H = len(ids), self.hidden_size
        xu = p["U"][:, ids].T + p["b_h"]  # U x_t + b_h for every t at once: (T, H)
        hs = np.empty((T + 1, H))  # hs[0] = h_0, hs[t] = h_t
        hs[0] = 0.0 if h0 is None else h0
        Vm = p["V"]
        for t in range(T):  # only the recurrence runs step by step
            np.tanh(xu[t] + Vm @ hs[t], out=hs[t + 1])
        logits = hs[1:] @ p["W"].T + p["b_o"]  # the read-out for every t at once: (T, V)
        return logits, hs

    def forward(self, inputs, state: np.ndarray | None = None):
        """Logits (T, V) for the sequence, and the last hidden state (to continue from)."""
        logits, hs = self._run(_indices(inputs, self.vocab_size), state)
        return logits, hs[-1].copy()

    def loss_and_grads(self, inputs, targets, out=None):
        r"""The mean cross-entropy and its gradient, by backpropagation through time.

        ``out``: a buffer from :meth:`new_grads` to write the gradient into (every entry is
        overwritten), instead of new arrays; a training loop reuses one.

        With :math:`\delta o_t = (\mathrm{softmax}(o_t) - y_t)/T` (the gradient of the mean
        cross-entropy with respect to the logits)::

            dW   = Σ_t δo_t h_tᵀ            db_o = Σ_t δo_t
            δh_t = Wᵀ δo_t + Vᵀ δz_{t+1}     (the second term is zero at t = T)
            δz_t = δh_t ∘ (1 − h_t²)         (tanh′)
            dU   = Σ_t δz_t x_tᵀ            dV = Σ_t δz_t h_{t-1}ᵀ      db_h = Σ_t δz_t

        Only the δh/δz recursion runs backwards step by step; the sums are matrix products.
        """
        ids, tgt = _indices(inputs, self.vocab_size), _indices(targets, self.vocab_size)
        if len(ids) != len(tgt):
            raise ValueError(f"inputs and targets differ in length ({len(ids)} vs {len(tgt)})")
        p = self.params
        logits, hs = self._run(ids, None)
        loss, do = _ce_and_grad(logits, tgt)
        gflat, g = self._new_grads() if out is None else out
        np.matmul(do.T, hs[1:], out=g["W"])
        g["b_o"][...] = do.sum(axis=0)
        dh_out = do @ p["W"]  # Wᵀ δo_t for every t: (T, H)
        tanh_d = 1.0 - hs[1:] ** 2
        dz = np.empty_like(dh_out)
        VT = p["V"].T
        dh_next = np.zeros(self.hidden_size)
        for t in range(len(ids) - 1, -1, -1):
            np.multiply(dh_out[t] + dh_next, tanh_d[t], out=dz[t])
            dh_next = VT @ dz[t]
        np.matmul(dz.T, hs[:-1], out=g["V"])
        np.matmul(dz.T, _one_hot(ids, self.vocab_size), out=g["U"])
        g["b_h"][...] = dz.sum(axis=0)
        return loss, g


# ---------------------------------------------------------------------------
# The LSTM
# ---------------------------------------------------------------------------


class NumpyLSTM(NumpyNet):
    r"""An LSTM with a linear read-out, as in the lab.

    For each step t, with :math:`z_t = [h_{t-1}; x_t]` (concatenation) and σ the logistic
    function::

        f_t = σ(W_f z_t + b_f)          forget gate
        i_t = σ(W_i z_t + b_i)          input gate
        g_t = tanh(W_g z_t + b_g)       candidate
        o_t = σ(W_o z_t + b_o)          output gate
        c_t = f_t ∘ c_{t-1} + i_t ∘ g_t
        h_t = o_t ∘ tanh(c_t)           h_0 = c_0 = 0
        v_t = W_v h_t + b_v             (logits)

    Parameters: ``W_f, W_i, W_g, W_o`` (H, H+V) — the first H columns act on
    :math:`h_{t-1}`, the last V on :math:`x_t` — ``b_f, b_i, b_g, b_o`` (H,), ``W_v`` (V, H),
    ``b_v`` (V,). Weights start orthogonal, biases at zero. At V=27, H=64 that is 25307
    parameters (``nn.LSTM`` + Linear has 25563: PyTorch keeps two biases per gate).

    The four gate matrices lie one after another in memory, so ``W_f..W_o`` together are
    one (4H, H+V) block and one matrix-vector product per step computes all four gates.
    """

    GATES = ("f", "i", "g", "o")

    def __init__(self, vocab_size: int, hidden_size: int, seed: int = 0):
        self.vocab_size, self.hidden_size, self.seed = int(vocab_size), int(hidden_size), seed
        H, V = self.hidden_size, self.vocab_size
        self.shapes = {f"W_{k}": (H, H + V) for k in self.GATES}
        self.shapes.update({f"b_{k}": (H,) for k in self.GATES})
        self.shapes.update({"W_v": (V, H), "b_v": (V,)})
        self._allocate()
        rng = np.random.default_rng(seed)
        for k in (*(f"W_{g}" for g in self.GATES), "W_v"):
            self.params[k][...] = orthogonal(rng, *self.shapes[k])
        # σ(a) = (1 + tanh(a/2)) / 2: one tanh over all four gates, then an affine map.
        self._half = np.repeat([0.5, 0.5, 1.0, 0.5], H)
        self._add = np.repeat([0.5, 0.5, 0.0, 0.5], H)

    def _blocks(self, grads: np.ndarray | None = None):
        """The (4H, H+V) gate block and the (4H,) bias block, as views of ``flat`` (or ``grads``)."""
        H, V = self.hidden_size, self.vocab_size
        src = self.flat if grads is None else grads
        n = 4 * H * (H + V)
        return src[:n].reshape(4 * H, H + V), src[n : n + 4 * H]

    def _run(self, ids: np.ndarray, state):
        H = self.hidden_size
        T = len(ids)
        Wg, bg = self._blocks()
        half, add = self._half, self._add
        # The input part of every gate for every step at once, pre-scaled for the tanh trick.
        ax = (Wg[:, H:][:, ids].T + bg) * half  # (T, 4H)
        Wh = Wg[:, :H] * half[:, None]  # (4H, H)
        acts = np.empty((T, 4 * H))  # f, i, g, o per step
        hs = np.empty((T + 1, H))
        cs = np.empty((T + 1, H))
        tcs = np.empty((T, H))  # tanh(c_t)
        if state is None:
            hs[0] = 0.0
            cs[0] = 0.0
        else:
            hs[0], cs[0] = state
        for t in range(T):
            a = acts[t]
            np.tanh(ax[t] + Wh @ hs[t], out=a)
            a *= half
            a += add
            np.multiply(a[:H], cs[t], out=cs[t + 1])
            cs[t + 1] += a[H : 2 * H] * a[2 * H : 3 * H]
            np.tanh(cs[t + 1], out=tcs[t])
            np.multiply(a[3 * H :], tcs[t], out=hs[t + 1])
        logits = hs[1:] @ self.params["W_v"].T + self.params["b_v"]
        return logits, (acts, hs, cs, tcs)

    def forward(self, inputs, state=None):
        """Logits (T, V) for the sequence, and the last (h, c) (to continue from)."""
        logits, (_, hs, cs, _) = self._run(_indices(inputs, self.vocab_size), state)
        return logits, (hs[-1].copy(), cs[-1].copy())

    def loss_and_grads(self, inputs, targets, out=None):
        r"""The mean cross-entropy and its gradient, by backpropagation through time.

        ``out``: a buffer from :meth:`new_grads` to write the gradient into (every entry is
        overwritten), instead of new arrays; a training loop reuses one.

        With δv_t = (softmax(v_t) − y_t)/T, going backwards from t = T (where δh_{T+1}
        and δc_{T+1} terms are zero)::

            dW_v  = Σ_t δv_t h_tᵀ                    db_v = Σ_t δv_t
            δh_t  = W_vᵀ δv_t + W_hᵀ δa_{t+1}        (W_h: the h-columns of all four gates)
            δc_t  = δh_t ∘ o_t ∘ (1 − tanh²c_t) + δc_{t+1} ∘ f_{t+1}
            δf_t  = δc_t ∘ c_{t-1} ∘ f_t(1 − f_t)     (pre-activation gradients, σ′ = σ(1 − σ))
            δi_t  = δc_t ∘ g_t ∘ i_t(1 − i_t)
            δg_t  = δc_t ∘ i_t ∘ (1 − g_t²)
            δo_t  = δh_t ∘ tanh c_t ∘ o_t(1 − o_t)
            δa_t  = [δf_t; δi_t; δg_t; δo_t]
            dW_•  = Σ_t δa_t z_tᵀ                    db_• = Σ_t δa_t

        The factors that do not depend on δ (c_{t-1} f(1−f), …) are computed for all t
        before the loop, so each backward step is a few vector operations and one
        matrix-vector product.
        """
        ids, tgt = _indices(inputs, self.vocab_size), _indices(targets, self.vocab_size)
        if len(ids) != len(tgt):
            raise ValueError(f"inputs and targets differ in length ({len(ids)} vs {len(tgt)})")
        H, T = self.hidden_size, len(ids)
        p = self.params
        logits, (acts, hs, cs, tcs) = self._run(ids, None)
        loss, dv = _ce_and_grad(logits, tgt)
        gflat, g = self._new_grads() if out is None else out
        np.matmul(dv.T, hs[1:], out=g["W_v"])
        g["b_v"][...] = dv.sum(axis=0)
        dh_out = dv @ p["W_v"]  # W_vᵀ δv_t for every t: (T, H)

        f, i, gg, o = (acts[:, k * H : (k + 1) * H] for k in range(4))
        # δa_t[:3H] = δc_t * P_t and δa_t[3H:] = δh_t * Q_t, with
        P = np.empty((T, 3, H))
        P[:, 0] = cs[:-1] * f * (1.0 - f)
        P[:, 1] = gg * i * (1.0 - i)
        P[:, 2] = i * (1.0 - gg * gg)
        Q = tcs * o * (1.0 - o)
        K = o * (1.0 - tcs * tcs)  # δc_t gets δh_t * K_t
        da = np.empty((T, 4 * H))
        da3 = da[:, : 3 * H].reshape(T, 3, H)
        Wg, _ = self._blocks()
        WhT = Wg[:, :H].T
        dh_next, dc_next = np.zeros(H), np.zeros(H)  # W_hᵀ δa_{t+1}; δc_{t+1} ∘ f_{t+1}
        for t in range(T - 1, -1, -1):
            dh = dh_out[t] + dh_next
            dc = dc_next + dh * K[t]
            np.multiply(P[t], dc, out=da3[t])
            np.multiply(Q[t], dh, out=da[t, 3 * H :])
            dc_next = dc * f[t]
            dh_next = WhT @ da[t]
        gW, gb = self._blocks(gflat)
        np.matmul(da.T, hs[:-1], out=gW[:, :H])
        gW[:, H:] = da.T @ _one_hot(ids, self.vocab_size)
        gb[...] = da.sum(axis=0)
        return loss, g


# ---------------------------------------------------------------------------
# Clipping and optimisers
# ---------------------------------------------------------------------------


def global_norm(grads: dict[str, np.ndarray]) -> float:
    """√(Σ over every array of the sum of its squared entries)."""
    return math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))


def clip_grad_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale ``grads`` in place so their global norm is at most ``max_norm``; return the norm before.

    When the norm exceeds ``max_norm`` every gradient is multiplied by ``max_norm / norm``,
    so the clipped norm is ``max_norm`` exactly (up to rounding). The lab, like
    ``torch.nn.utils.clip_grad_norm_``, divides by ``norm + 1e-6``, which stops just
    short of the cap; the difference is below 1e-5 relative for any norm above 0.25.
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be positive, not {max_norm}")
    norm = global_norm(grads)
    if norm > max_norm:
        scale = max_norm / norm
        flat = _flat_base(list(grads.values()))
        if flat is not None:
            flat *= scale
        else:
            for g in grads.values():
                g *= scale
    return norm


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

    def __init__(self, params: dict[str, np.ndarray], lr: float):
        if not lr > 0:
            raise ValueError(f"lr must be positive, not {lr}")
        self.params, self.lr = params, float(lr)
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
        self._tmp: dict[tuple, np.ndarray] = {}

    def _scratch(self, p: np.ndarray) -> np.ndarray:
        """A reusable array shaped like ``p`` for intermediate results."""
        tmp = self._tmp.get(p.shape)
        if tmp is None:
            tmp = self._tmp[p.shape] = np.empty(p.shape)
        return tmp

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
    """Plain gradient descent: θ ← θ − lr · g (the lab's optimiser)."""

    def step(self, grads: dict[str, np.ndarray]) -> None:
        for p, g, _ in self._pairs(grads):
            tmp = self._scratch(p)
            np.multiply(g, self.lr, out=tmp)  # lr · g
            p -= tmp


class AdamW(_Optimizer):
    """Adam with decoupled weight decay, step for step as ``torch.optim.AdamW`` computes it.

    For step t = 1, 2, …, with gradient g::

        θ ← θ (1 − lr · λ)                               decoupled weight decay
        m ← β₁ m + (1 − β₁) g                            (torch: m.lerp_(g, 1 − β₁))
        v ← β₂ v + (1 − β₂) g²
        θ ← θ − lr / (1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)

    Defaults are PyTorch's: β = (0.9, 0.999), ε = 1e-8, λ = 0.01. With λ = 0 this is Adam.
    """

    n_state = 2

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01):
        super().__init__(params, lr)
        self.beta1, self.beta2 = map(float, betas)
        self.eps, self.weight_decay = float(eps), float(weight_decay)
        self.t = 0

    def next_step(self) -> tuple[float, float]:
        """Count one more step; its ``lr / (1 − β₁ᵗ)`` and ``√(1 − β₂ᵗ)``."""
        self.t += 1
        bc1 = 1.0 - self.beta1**self.t
        return self.lr / bc1, math.sqrt(1.0 - self.beta2**self.t)

    def step(self, grads: dict[str, np.ndarray]) -> None:
        pairs = self._pairs(grads)
        step_size, bc2_sqrt = self.next_step()
        b1, b2 = self.beta1, self.beta2
        for p, g, (m, v) in pairs:
            # m ← m + (g − m)(1 − β₁); v ← β₂ v + (1 − β₂) g g; p ← p − step_size · m / (√v / √bc₂ + ε),
            # written with one scratch array instead of a temporary per operation (the same
            # operations in the same order, so the same numbers; temporaries of the Dino LSTM's
            # 25307 float64s cost more than the arithmetic).
            tmp = self._scratch(p)
            if self.weight_decay:
                p *= 1.0 - self.lr * self.weight_decay
            np.subtract(g, m, out=tmp)
            tmp *= 1.0 - b1
            m += tmp  # lerp, as torch does it
            v *= b2
            np.multiply(g, 1.0 - b2, out=tmp)
            tmp *= g
            v += tmp
            np.sqrt(v, out=tmp)
            tmp /= bc2_sqrt
            tmp += self.eps
            np.divide(m, tmp, out=tmp)
            tmp *= step_size
            p -= tmp


__all__ = [
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
