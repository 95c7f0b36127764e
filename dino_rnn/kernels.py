"""Compiled training kernels (numba): one whole step's gradient in one call.

A training step on one name is a few hundred tiny array operations; in NumPy or eager torch
each costs ~1 µs of call overhead, more than its arithmetic. A kernel here does the same
arithmetic in one compiled call: forward pass, loss and backpropagation through time, in
loops arranged so that the compiler vectorises them (every inner loop runs along a contiguous
row). The loops compute the same equations as the NumPy code they replace
(:mod:`dino_rnn.fastgrad`, :mod:`dino_rnn.numpy_nets`), which stays the readable reference;
``tests/test_kernels.py`` checks each kernel against that code and against autograd. Sums
run in another order than NumPy's BLAS, so results agree to float rounding, not bit for bit;
a kernel gives the same numbers every time it runs on the same machine.

Compiled on first use and cached on disk beside the package (``__pycache__``), so only the
first process after an install pays the compilation (a few seconds per kernel).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_F32_HALF = np.float32(0.5)
_F32_ONE = np.float32(1.0)


@njit(cache=True, nogil=True)
def lstm_step(x, y, w_ih, w_hh, b_ih, b_hh, w_fc, b_fc, mask, g_w_ih, g_w_hh, g_b_ih, g_b_hh, g_w_fc, g_b_fc):
    """``nn.LSTM`` (one layer, gates i, f, g, o) + Linear read-out + dropout + mean cross-entropy.

    ``x`` (T, V) inputs, ``y`` (T,) targets, the module's parameters, ``mask`` (T, V): the
    dropout multipliers (empty: no dropout). Writes every gradient into the ``g_*`` arrays
    (overwritten) and returns the loss. float32 throughout, the loss summed in float64.
    """
    T, V = x.shape
    G = w_hh.shape[0]
    H = G // 4
    O = w_fc.shape[0]
    w_hhT = np.ascontiguousarray(w_hh.T)  # (H, 4H): h_{t-1} -> gates as contiguous axpys
    w_ihT = np.ascontiguousarray(w_ih.T)  # (V, 4H)
    w_fcT = np.ascontiguousarray(w_fc.T)  # (H, O)
    acts = np.empty((T, G), np.float32)  # i, f, g, o per step
    hs = np.zeros((T + 1, H), np.float32)  # row 0: h_0 = 0
    cs = np.zeros((T + 1, H), np.float32)
    tcs = np.empty((T, H), np.float32)  # tanh(c_t)
    a = np.empty(G, np.float32)
    for t in range(T):
        for j in range(G):
            a[j] = b_ih[j] + b_hh[j]
        for v in range(V):
            xv = x[t, v]
            if xv != 0:
                for j in range(G):
                    a[j] += w_ihT[v, j] * xv
        for k in range(H):
            hk = hs[t, k]
            for j in range(G):
                a[j] += w_hhT[k, j] * hk
        for j in range(H):
            i = _F32_HALF * np.tanh(_F32_HALF * a[j]) + _F32_HALF
            f = _F32_HALF * np.tanh(_F32_HALF * a[H + j]) + _F32_HALF
            g = np.tanh(a[2 * H + j])
            o = _F32_HALF * np.tanh(_F32_HALF * a[3 * H + j]) + _F32_HALF
            acts[t, j] = i
            acts[t, H + j] = f
            acts[t, 2 * H + j] = g
            acts[t, 3 * H + j] = o
            c = f * cs[t, j] + i * g
            cs[t + 1, j] = c
            tc = np.tanh(c)
            tcs[t, j] = tc
            hs[t + 1, j] = o * tc
    dz, loss = _head(hs, y, w_fcT, b_fc, mask)
    # backward
    g_w_fc[:] = 0
    g_b_fc[:] = 0
    g_w_ih[:] = 0
    g_w_hh[:] = 0
    g_b_ih[:] = 0
    dh = np.zeros(H, np.float32)  # d loss / d h_t from later steps
    dc = np.zeros(H, np.float32)  # d loss / d c_t from later steps
    da = np.empty(G, np.float32)
    for t in range(T - 1, -1, -1):
        for v in range(O):
            d = dz[t, v]
            g_b_fc[v] += d
            for k in range(H):
                g_w_fc[v, k] += d * hs[t + 1, k]
                dh[k] += d * w_fc[v, k]
        for j in range(H):
            i = acts[t, j]
            f = acts[t, H + j]
            g = acts[t, 2 * H + j]
            o = acts[t, 3 * H + j]
            tc = tcs[t, j]
            dcj = dc[j] + dh[j] * o * (_F32_ONE - tc * tc)
            da[j] = dcj * g * i * (_F32_ONE - i)
            da[H + j] = dcj * cs[t, j] * f * (_F32_ONE - f)
            da[2 * H + j] = dcj * i * (_F32_ONE - g * g)
            da[3 * H + j] = dh[j] * tc * o * (_F32_ONE - o)
            dc[j] = dcj * f
        for k in range(H):
            dh[k] = 0
        for j in range(G):
            d = da[j]
            g_b_ih[j] += d
            for k in range(H):
                g_w_hh[j, k] += d * hs[t, k]
                dh[k] += w_hh[j, k] * d
            for v in range(V):
                xv = x[t, v]
                if xv != 0:
                    g_w_ih[j, v] += d * xv
    g_b_hh[:] = g_b_ih
    return loss


@njit(cache=True, nogil=True)
def _head(hs, y, w_fcT, b_fc, mask):
    """Read-out, dropout and mean cross-entropy of steps 1..T of ``hs``; d loss / d logits (T, O)."""
    T = hs.shape[0] - 1
    H, O = w_fcT.shape
    z = np.empty((T, O), np.float32)
    loss = 0.0
    inv_t = np.float32(1.0 / T)
    for t in range(T):
        for v in range(O):
            z[t, v] = b_fc[v]
        for k in range(H):
            hk = hs[t + 1, k]
            for v in range(O):
                z[t, v] += w_fcT[k, v] * hk
        if mask.shape[0]:
            for v in range(O):
                z[t, v] *= mask[t, v]
        m = z[t, 0]
        for v in range(1, O):
            if z[t, v] > m:
                m = z[t, v]
        zy = z[t, y[t]] - m
        s = np.float32(0.0)
        for v in range(O):
            e = np.exp(z[t, v] - m)
            z[t, v] = e
            s += e
        loss += np.log(np.float64(s)) - np.float64(zy)
        scale = inv_t / s
        for v in range(O):
            z[t, v] *= scale
        z[t, y[t]] -= inv_t
        if mask.shape[0]:
            for v in range(O):
                z[t, v] *= mask[t, v]
    return z, loss / T


__all__ = ["lstm_step"]
