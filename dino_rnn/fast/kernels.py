"""Compiled training kernels (numba): one whole step's gradient in one call.

A training step on one name is a few hundred tiny array operations; in NumPy or eager torch
each costs ~1 µs of call overhead, more than its arithmetic. A kernel here does the same
arithmetic in one compiled call: forward pass, loss and backpropagation through time, in
loops arranged so that the compiler vectorises them (every inner loop runs along a contiguous
row). The loops compute the same equations as the NumPy code they replace
(:mod:`dino_rnn.fast.fastgrad`, :mod:`dino_rnn.numpy_nets`), which stays the readable reference;
``tests/test_kernels.py`` checks each kernel against that code and against autograd. Sums
run in another order than NumPy's BLAS, so results agree to float rounding, not bit for bit;
a kernel gives the same numbers every time it runs on the same machine.

The float32 kernels take the logistic sigmoid as 1 / (1 + exp(−a)) (cheaper than the
tanh form the NumPy code uses; the same function to float32 rounding).

Compiled on first use and cached on disk beside the package (``__pycache__``), so only the
first process after an install pays the compilation (a few seconds per kernel).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

_F32_ONE = np.float32(1.0)


# ---------------------------------------------------------------------------
# exp and tanh written so that the compiler vectorises them
# ---------------------------------------------------------------------------
# libm's tanh and exp are one call per element (float64 tanh ~11 ns here, float32 tanh ~12 ns,
# the float32 sigmoid ~3.8 ns), so a loop over a gate row ran one element at a time: a quarter
# of the NumPy LSTM's step. ``_exp`` and ``_tanh`` are straight-line arithmetic and selects,
# which the compiler runs 4 or 8 elements at a time (~2.3-2.6 ns each, measured in float32
# and float64 loops), within 2 units in the last place of libm's in float64; rounded to float32
# they are the correctly rounded values in all but a few cases in 100,000 (tests/test_kernels.py
# measures all of it). Their callers are compiled with ``error_model="numpy"``: numba's default
# checks each division for zero, and that check keeps a loop from being vectorised. A loop
# calls one of them only (in a loop that called five the compiler kept them ~3x slower).


@intrinsic
def _bits_to_f64(typingctx, bits):
    """The float64 whose IEEE bits are the int64 ``bits`` (a bit cast; vectorises)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


# exp(r) on |r| <= ln(2)/2 (fdlibm's e_exp.c: ln 2 in two parts, its rational approximation)
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_EXP_P = (1.66666666666666019037e-01, -2.77777777770155933842e-03, 6.61375632143793436117e-05,
          -1.65339022054652515390e-06, 4.13813679705723846039e-08)
# tanh(x) = x + x^3 P(x^2) / Q(x^2) on |x| < 0.625 (Cephes' tanh.c)
_TANH_P = (-9.64399179425052238628e-1, -9.92877231001918586564e1, -1.61468768441708447952e3)
_TANH_Q = (1.12811678491632931402e2, 2.23548839060100448583e3, 4.84406305325125486048e3)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _exp(x):
    """exp(x) in float64 for x in [-708, 709] (fdlibm's method: x = k ln 2 + r, a rational
    approximation of exp(r), times 2^k made from its bits); the caller keeps x in that range."""
    k = np.floor(x * _LOG2E + 0.5)
    hi = x - k * _LN2_HI
    lo = k * _LN2_LO
    r = hi - lo
    t = r * r
    p1, p2, p3, p4, p5 = _EXP_P
    c = r - t * (p1 + t * (p2 + t * (p3 + t * (p4 + t * p5))))
    return (1.0 - ((lo - (r * c) / (2.0 - c)) - hi)) * _bits_to_f64((np.int64(k) + 1023) << 52)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _tanh(x):
    """tanh(x) in float64 (±0, ±inf and nan as libm gives them), in a form that vectorises.

    |x| >= 0.625: 1 − 2 / (exp(2|x|) + 1), |x| clamped at 20 (where tanh is already 1 in
    float64); below: Cephes' rational approximation. Both are computed and one is selected,
    so the loop has no branch."""
    ax = abs(x)
    big = 1.0 - 2.0 / (_exp(2.0 * min(ax, 20.0)) + 1.0)
    x2 = x * x
    a0, a1, a2 = _TANH_P
    b0, b1, b2 = _TANH_Q
    small = x + x * x2 * (((a0 * x2 + a1) * x2 + a2) / (((x2 + b0) * x2 + b1) * x2 + b2))
    z = (big if x > 0 else -big) if ax >= 0.625 else small
    return z if x != 0 else x  # tanh(±0) is ±0


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _tanh32(a):
    """float32 tanh: :func:`_tanh` rounded to float32."""
    return np.float32(_tanh(np.float64(a)))


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _sigmoid32(a):
    """float32 logistic sigmoid 1 / (1 + exp(−a)), exp(−a) from :func:`_exp` rounded to float32
    (what libm's expf gives, in all but ~0.06% of cases; −a clamped to [−110, 90], where the
    float32 exp is already 0 and inf)."""
    return _F32_ONE / (_F32_ONE + np.float32(_exp(min(max(-np.float64(a), -110.0), 90.0))))


# ---------------------------------------------------------------------------
# The pieces every kernel shares (each loop runs along a contiguous row, so it vectorises)
# ---------------------------------------------------------------------------
# inline="always": numba puts them into each kernel's own code (called instead, the
# LSTM kernel took ~5% longer). The matrix-vector loops take four rows at a time: the vector they
# accumulate into is read and written once per four rows instead of once per row. The weight
# gradients are not added step by step inside the backward loop (a 64-long row loop entered
# rows x steps times, which cost more in loop overhead than in arithmetic) but after it, from the
# saved per-step gradients, in the same order (:func:`_outer_sum`). Each sum still adds its terms
# one at a time in the same order, so every result is the same, bit for bit (tests/test_kernels.py
# checks). Measured alone on a 13-character name (V=27, H=64): lstm_step 85 -> 78 µs, gru_step
# 64 -> 58, rnn_step 27 -> 23, scratch_step 70 -> 55, the NumPy LSTM 115 -> 96, the NumPy RNN
# 37 -> 33. What is left of the LSTM step's 78 µs: transposing the three weights (~16 µs, a
# power-of-two row stride makes the column reads collide in the cache), the weight gradients
# after the loop (~19), the recurrent backward (~17), the forward matrix-vector loop (~10).


@njit(cache=True, nogil=True, inline="always")
def _add_matvec_t(a, wT, h):
    """``a += wT[:len(h)].T @ h``: ``a[j] += Σ_k wT[k, j] h[k]``, k ascending."""
    K = h.shape[0]
    k = 0
    while k + 4 <= K:
        h0, h1, h2, h3 = h[k], h[k + 1], h[k + 2], h[k + 3]
        for j in range(a.shape[0]):
            a[j] = (((a[j] + wT[k, j] * h0) + wT[k + 1, j] * h1) + wT[k + 2, j] * h2) + wT[k + 3, j] * h3
        k += 4
    for k in range(k, K):
        hk = h[k]
        for j in range(a.shape[0]):
            a[j] += wT[k, j] * hk


@njit(cache=True, nogil=True, inline="always")
def _add_sparse_matvec_t(a, wT, x):
    """``a += wT.T @ x``, skipping the zero entries of ``x`` (one-hot inputs)."""
    for v in range(x.shape[0]):
        xv = x[v]
        if xv != 0:
            for j in range(a.shape[0]):
                a[j] += wT[v, j] * xv


@njit(cache=True, nogil=True, inline="always")
def _add_wT_d(d, w, d_inp):
    """``d_inp += w[:, :len(d_inp)]ᵀ d``: ``d_inp[k] += Σ_j w[j, k] d[j]``, j ascending."""
    J = d.shape[0]
    K = d_inp.shape[0]
    j = 0
    while j + 4 <= J:
        d0, d1, d2, d3 = d[j], d[j + 1], d[j + 2], d[j + 3]
        for k in range(K):
            d_inp[k] = (((d_inp[k] + w[j, k] * d0) + w[j + 1, k] * d1) + w[j + 2, k] * d2) + w[j + 3, k] * d3
        j += 4
    for j in range(j, J):
        dj = d[j]
        for k in range(K):
            d_inp[k] += w[j, k] * dj


@njit(cache=True, nogil=True, inline="always")
def _outer_sum(g_w, ds, inps):
    """``g_w[:, :K] = Σ_t ds[t] inps[t]ᵀ`` (K = ``inps.shape[1]``), each sum from 0 over t descending:
    a weight's gradient from the per-step gradients ``ds`` of its output and the inputs ``inps`` it
    read, added up after the backward loop in the order that loop reached the steps. Summed
    transposed (``gT[k] += inps[t, k] ds[t]``, four steps a pass: long rows, so it vectorises),
    then copied into ``g_w``."""
    T, J = ds.shape
    K = inps.shape[1]
    gT = np.zeros((K, J), ds.dtype)
    t = T - 1
    while t >= 3:
        d0, d1, d2, d3 = ds[t], ds[t - 1], ds[t - 2], ds[t - 3]
        for k in range(K):
            h0, h1, h2, h3 = inps[t, k], inps[t - 1, k], inps[t - 2, k], inps[t - 3, k]
            row = gT[k]
            for j in range(J):
                row[j] = (((row[j] + d0[j] * h0) + d1[j] * h1) + d2[j] * h2) + d3[j] * h3
        t -= 4
    while t >= 0:
        d0 = ds[t]
        for k in range(K):
            h0 = inps[t, k]
            row = gT[k]
            for j in range(J):
                row[j] += d0[j] * h0
        t -= 1
    for k in range(K):
        row = gT[k]
        for j in range(J):
            g_w[j, k] = row[j]


@njit(cache=True, nogil=True, inline="always")
def _backprop_linear(d, w, g_b, d_inp):
    """One step back through ``out = w[:, :len(d_inp)] @ inp + b`` with ``d`` = d loss / d out:
    ``g_b += d`` and ``d_inp += w[:, :len(d_inp)]ᵀ d`` (``w``'s gradient is summed after the loop,
    :func:`_outer_sum`)."""
    for j in range(d.shape[0]):
        g_b[j] += d[j]
    _add_wT_d(d, w, d_inp)


@njit(cache=True, nogil=True, inline="always")
def _backprop_cell(d_x, d_h, w_hh, g_w_ih, g_b_ih, g_b_hh, x, dh):
    """One step back through a cell's pre-activations ``w_ih x + b_ih`` (gradient ``d_x``) and
    ``w_hh h + b_hh`` (gradient ``d_h``): three parameter gradients, and ``dh += w_hhᵀ d_h``
    (``w_hh``'s gradient is summed after the loop, :func:`_outer_sum`). Only the nonzero entries of
    ``x`` (one, for a one-hot input) touch ``g_w_ih``: ``x`` is scanned once, not once per gate row."""
    for j in range(d_h.shape[0]):
        g_b_ih[j] += d_x[j]
        g_b_hh[j] += d_h[j]
    _add_wT_d(d_h, w_hh, dh)
    for v in range(x.shape[0]):
        xv = x[v]
        if xv != 0:
            for j in range(d_x.shape[0]):
                g_w_ih[j, v] += d_x[j] * xv


@njit(cache=True, nogil=True, inline="always")
def _readout(hs, wT, b):
    """Logits of steps 1..T of ``hs``: row t is ``b + wTᵀ hs[t + 1]``."""
    T = hs.shape[0] - 1
    z = np.empty((T, b.shape[0]), b.dtype)
    for t in range(T):
        z[t] = b
        _add_matvec_t(z[t], wT, hs[t + 1])
    return z


@njit(cache=True, nogil=True, error_model="numpy")  # vectorised _sigmoid32, _tanh32
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
    for t in range(T):
        a = acts[t]  # the pre-activations, then (in place) the gates
        for j in range(G):
            a[j] = b_ih[j] + b_hh[j]
        _add_sparse_matvec_t(a, w_ihT, x[t])
        _add_matvec_t(a, w_hhT, hs[t])
        for j in range(2 * H):  # i, f (one function per loop)
            a[j] = _sigmoid32(a[j])
        for j in range(2 * H, 3 * H):  # g
            a[j] = _tanh32(a[j])
        for j in range(3 * H, G):  # o
            a[j] = _sigmoid32(a[j])
        for j in range(H):
            cs[t + 1, j] = a[H + j] * cs[t, j] + a[j] * a[2 * H + j]  # c = f c + i g
        for j in range(H):
            tc = _tanh32(cs[t + 1, j])
            tcs[t, j] = tc
            hs[t + 1, j] = a[3 * H + j] * tc
    dz, loss = _head(hs, y, w_fcT, b_fc, mask)
    # backward (w_fc's and w_hh's gradients are written whole by _outer_sum, after the loop)
    g_b_fc[:] = 0
    g_w_ih[:] = 0
    g_b_ih[:] = 0
    g_b_hh[:] = 0
    dh = np.zeros(H, np.float32)  # d loss / d h_t from later steps
    dc = np.zeros(H, np.float32)  # d loss / d c_t from later steps
    das = np.empty((T, G), np.float32)  # d loss / d pre-activations, per step
    for t in range(T - 1, -1, -1):
        da = das[t]
        _backprop_linear(dz[t], w_fc, g_b_fc, dh)
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
        _backprop_cell(da, da, w_hh, g_w_ih, g_b_ih, g_b_hh, x[t], dh)
    _outer_sum(g_w_fc, dz, hs[1:])
    _outer_sum(g_w_hh, das, hs[:T])
    return loss


@njit(cache=True, nogil=True, error_model="numpy")  # vectorised _tanh32
def rnn_step(x, y, w_ih, w_hh, b_ih, b_hh, w_fc, b_fc, mask, g_w_ih, g_w_hh, g_b_ih, g_b_hh, g_w_fc, g_b_fc):
    """``nn.RNN`` (one layer, tanh) + Linear read-out + dropout + mean cross-entropy; as :func:`lstm_step`."""
    T, V = x.shape
    H = w_hh.shape[0]
    O = w_fc.shape[0]
    w_hhT = np.ascontiguousarray(w_hh.T)
    w_ihT = np.ascontiguousarray(w_ih.T)
    w_fcT = np.ascontiguousarray(w_fc.T)
    hs = np.zeros((T + 1, H), np.float32)
    for t in range(T):
        a = hs[t + 1]
        for j in range(H):
            a[j] = b_ih[j] + b_hh[j]
        _add_sparse_matvec_t(a, w_ihT, x[t])
        _add_matvec_t(a, w_hhT, hs[t])
        for j in range(H):
            a[j] = _tanh32(a[j])
    dz, loss = _head(hs, y, w_fcT, b_fc, mask)
    g_b_fc[:] = 0
    g_w_ih[:] = 0
    g_b_ih[:] = 0
    g_b_hh[:] = 0
    dh = np.zeros(H, np.float32)
    das = np.empty((T, H), np.float32)
    for t in range(T - 1, -1, -1):
        da = das[t]
        _backprop_linear(dz[t], w_fc, g_b_fc, dh)
        for j in range(H):
            h = hs[t + 1, j]
            da[j] = dh[j] * (_F32_ONE - h * h)
            dh[j] = 0
        _backprop_cell(da, da, w_hh, g_w_ih, g_b_ih, g_b_hh, x[t], dh)
    _outer_sum(g_w_fc, dz, hs[1:])
    _outer_sum(g_w_hh, das, hs[:T])
    return loss


@njit(cache=True, nogil=True, error_model="numpy")  # vectorised _sigmoid32, _tanh32
def gru_step(x, y, w_ih, w_hh, b_ih, b_hh, w_fc, b_fc, mask, g_w_ih, g_w_hh, g_b_ih, g_b_hh, g_w_fc, g_b_fc):
    """``nn.GRU`` (one layer, gates r, z, n) + Linear read-out + dropout + mean cross-entropy.

    r = σ(gi_r + gh_r), z = σ(gi_z + gh_z), n = tanh(gi_n + r ∘ gh_n), h_t = (1 − z) ∘ n + z ∘ h_{t-1},
    with gi = W_ih x + b_ih and gh = W_hh h_{t-1} + b_hh; as :func:`lstm_step`.
    """
    T, V = x.shape
    G = w_hh.shape[0]
    H = G // 3
    O = w_fc.shape[0]
    w_hhT = np.ascontiguousarray(w_hh.T)
    w_ihT = np.ascontiguousarray(w_ih.T)
    w_fcT = np.ascontiguousarray(w_fc.T)
    hs = np.zeros((T + 1, H), np.float32)
    rzn = np.empty((T, G), np.float32)  # r, z, n per step
    ghn = np.empty((T, H), np.float32)  # W_hn h_{t-1} + b_hn
    gi = np.empty(G, np.float32)
    gh = np.empty(G, np.float32)
    for t in range(T):
        for j in range(G):
            gi[j] = b_ih[j]
            gh[j] = b_hh[j]
        _add_sparse_matvec_t(gi, w_ihT, x[t])
        _add_matvec_t(gh, w_hhT, hs[t])
        for j in range(2 * H):  # r, z (one function per loop, as in lstm_step)
            rzn[t, j] = _sigmoid32(gi[j] + gh[j])
        for j in range(H):
            rzn[t, 2 * H + j] = _tanh32(gi[2 * H + j] + rzn[t, j] * gh[2 * H + j])
        for j in range(H):
            z = rzn[t, H + j]
            ghn[t, j] = gh[2 * H + j]
            hs[t + 1, j] = (_F32_ONE - z) * rzn[t, 2 * H + j] + z * hs[t, j]
    dz, loss = _head(hs, y, w_fcT, b_fc, mask)
    g_b_fc[:] = 0
    g_w_ih[:] = 0
    g_b_ih[:] = 0
    g_b_hh[:] = 0
    dh = np.zeros(H, np.float32)
    dgi = np.empty(G, np.float32)
    dghs = np.empty((T, G), np.float32)
    for t in range(T - 1, -1, -1):
        dgh = dghs[t]
        _backprop_linear(dz[t], w_fc, g_b_fc, dh)
        for j in range(H):
            r = rzn[t, j]
            z = rzn[t, H + j]
            n = rzn[t, 2 * H + j]
            dhj = dh[j]
            dn = dhj * (_F32_ONE - z) * (_F32_ONE - n * n)
            dzp = dhj * (hs[t, j] - n) * z * (_F32_ONE - z)
            drp = dn * ghn[t, j] * r * (_F32_ONE - r)
            dgi[j] = drp
            dgi[H + j] = dzp
            dgi[2 * H + j] = dn
            dgh[j] = drp
            dgh[H + j] = dzp
            dgh[2 * H + j] = dn * r
            dh[j] = dhj * z  # through h_t = ... + z h_{t-1}
        _backprop_cell(dgi, dgh, w_hh, g_w_ih, g_b_ih, g_b_hh, x[t], dh)
    _outer_sum(g_w_fc, dz, hs[1:])
    _outer_sum(g_w_hh, dghs, hs[:T])
    return loss


@njit(cache=True, nogil=True)
def _head(hs, y, w_fcT, b_fc, mask):
    """Read-out, dropout and mean cross-entropy of steps 1..T of ``hs``; d loss / d logits (T, O)."""
    z = _readout(hs, w_fcT, b_fc)
    loss = _dropout_ce(z, y, mask)
    return z, loss


@njit(cache=True, nogil=True)
def _dropout_ce(z, y, mask):
    """Dropout (``mask``: the multipliers, empty for none) and mean cross-entropy of logits ``z``
    (T, O); overwrites ``z`` with d loss / d logits and returns the loss (summed in float64)."""
    T, O = z.shape
    loss = 0.0
    inv_t = np.float32(1.0 / T)
    for t in range(T):
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
    return loss / T


@njit(cache=True, nogil=True, error_model="numpy")  # vectorised _tanh32
def scratch_step(x, y, tanh, wi2h, bi2h, wi2o, bi2o, wo2o, bo2o, mask, g_wi2h, g_bi2h, g_wi2o, g_bi2o, g_wo2o, g_bo2o):
    """The from-scratch cell (:class:`~dino_rnn.models.ScratchRNN`) + dropout + mean cross-entropy.

    h_t = act(i2h([x_t, h_{t-1}])), o_t = i2o([x_t, h_{t-1}]), logits = o2o([h_t, o_t]); ``tanh``
    False: the published linear cell. As :func:`lstm_step`.
    """
    T, V = x.shape
    H = wi2h.shape[0]
    O = wo2o.shape[0]
    wi2hT = np.ascontiguousarray(wi2h.T)  # (V + H, H)
    wi2oT = np.ascontiguousarray(wi2o.T)  # (V + H, O)
    wo2oT = np.ascontiguousarray(wo2o.T)  # (H + O, O)
    xh = np.zeros((T, V + H), np.float32)  # [x_t, h_{t-1}]
    hs = np.zeros((T, H), np.float32)  # h_t
    os = np.empty((T, O), np.float32)  # o_t
    z = np.empty((T, O), np.float32)
    for t in range(T):
        for v in range(V):
            xh[t, v] = x[t, v]
        if t:
            for k in range(H):
                xh[t, V + k] = hs[t - 1, k]
        h = hs[t]
        o = os[t]
        for j in range(H):
            h[j] = bi2h[j]
        for v in range(O):
            o[v] = bi2o[v]
        for k in range(V + H):
            c = xh[t, k]
            if c != 0:
                for j in range(H):
                    h[j] += wi2hT[k, j] * c
                for v in range(O):
                    o[v] += wi2oT[k, v] * c
        if tanh:
            for j in range(H):
                h[j] = _tanh32(h[j])
        for v in range(O):
            z[t, v] = bo2o[v]
        for k in range(H):
            c = h[k]
            for v in range(O):
                z[t, v] += wo2oT[k, v] * c
        for k in range(O):
            c = o[k]
            for v in range(O):
                z[t, v] += wo2oT[H + k, v] * c
    loss = _dropout_ce(z, y, mask)
    g_bi2h[:] = 0
    g_bi2o[:] = 0
    g_bo2o[:] = 0
    dcarry = np.zeros(H, np.float32)  # d loss / d h_t through step t+1 (i2h and i2o)
    dhs = np.empty((T, H), np.float32)  # d loss / d i2h's output, per step
    dos = np.zeros((T, O), np.float32)  # d loss / d i2o's output, per step
    for t in range(T - 1, -1, -1):
        dh = dhs[t]
        do = dos[t]
        for j in range(H):
            dh[j] = dcarry[j]
        for v in range(O):
            g_bo2o[v] += z[t, v]
        _add_wT_d(z[t], wo2o, dh)
        _add_wT_d(z[t], wo2o[:, H:], do)
        if tanh:
            for j in range(H):
                h = hs[t, j]
                dh[j] = dh[j] * (_F32_ONE - h * h)
        for j in range(H):
            dcarry[j] = 0
            g_bi2h[j] += dh[j]
        for v in range(O):
            g_bi2o[v] += do[v]
        _add_wT_d(dh, wi2h[:, V:], dcarry)
        _add_wT_d(do, wi2o[:, V:], dcarry)
    ho = np.empty((T, H + O), np.float32)  # [h_t, o_t]: o2o's input
    for t in range(T):
        ho[t, :H] = hs[t]
        ho[t, H:] = os[t]
    _outer_sum(g_wo2o, z, ho)
    _outer_sum(g_wi2h, dhs, xh)
    _outer_sum(g_wi2o, dos, xh)
    return loss


# ---------------------------------------------------------------------------
# The NumPy nets (float64): dino_rnn.numpy_nets' equations
# ---------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _check_tokens(ids, tgt, n_in, n_out):
    if ids.shape[0] == 0 or ids.shape[0] != tgt.shape[0]:
        raise ValueError("inputs and targets must be non-empty and of one length")
    for t in range(ids.shape[0]):
        if ids[t] < 0 or ids[t] >= n_in or tgt[t] < 0 or tgt[t] >= n_out:
            raise ValueError("a token index is outside the vocabulary")


@njit(cache=True, nogil=True)
def _softmax_ce(logits, tgt):
    """Mean cross-entropy of (T, V) ``logits`` at ``tgt``; overwrites them with d loss / d logits."""
    T, V = logits.shape
    loss = 0.0
    for t in range(T):
        m = logits[t, 0]
        for v in range(1, V):
            if logits[t, v] > m:
                m = logits[t, v]
        zy = logits[t, tgt[t]] - m
        s = 0.0
        for v in range(V):
            e = np.exp(logits[t, v] - m)
            logits[t, v] = e
            s += e
        loss += np.log(s) - zy
        for v in range(V):
            logits[t, v] = logits[t, v] / s / T
        logits[t, tgt[t]] -= 1.0 / T
    return loss / T


@njit(cache=True, nogil=True, inline="always")
def _numpy_rnn_forward(ids, U, Vm, b_h):
    """The NumPy RNN's hidden states: row 0 is h_0 = 0, row t + 1 is h after input t."""
    T = ids.shape[0]
    H = Vm.shape[0]
    VmT = np.ascontiguousarray(Vm.T)
    hs = np.zeros((T + 1, H))
    for t in range(T):
        row = hs[t + 1]
        c = ids[t]
        for j in range(H):
            row[j] = U[j, c] + b_h[j]
        _add_matvec_t(row, VmT, hs[t])
        for j in range(H):
            row[j] = _tanh(row[j])
    return hs


@njit(cache=True, nogil=True, error_model="numpy")  # vectorised _tanh
def numpy_rnn_loss(ids, tgt, U, Vm, W, b_h, b_o):
    """:meth:`NumpyRNN.loss <dino_rnn.numpy_nets.NumpyRNN.loss>` (the forward pass), compiled."""
    _check_tokens(ids, tgt, U.shape[1], W.shape[0])
    hs = _numpy_rnn_forward(ids, U, Vm, b_h)
    return _softmax_ce(_readout(hs, np.ascontiguousarray(W.T), b_o), tgt)


@njit(cache=True, nogil=True, error_model="numpy")  # vectorised _tanh
def numpy_rnn_grads(ids, tgt, U, Vm, W, b_h, b_o, gU, gV, gW, gb_h, gb_o):
    """:meth:`NumpyRNN.loss_and_grads <dino_rnn.numpy_nets.NumpyRNN.loss_and_grads>`, compiled."""
    T = ids.shape[0]
    H = Vm.shape[0]
    O = W.shape[0]
    _check_tokens(ids, tgt, U.shape[1], O)
    hs = _numpy_rnn_forward(ids, U, Vm, b_h)
    do = _readout(hs, np.ascontiguousarray(W.T), b_o)
    loss = _softmax_ce(do, tgt)
    gU[:] = 0.0
    gb_h[:] = 0.0
    gb_o[:] = 0.0
    dh = np.zeros(H)  # V^T dz_{t+1}
    dzs = np.empty((T, H))
    for t in range(T - 1, -1, -1):
        dz = dzs[t]
        _backprop_linear(do[t], W, gb_o, dh)
        for j in range(H):
            h = hs[t + 1, j]
            dz[j] = dh[j] * (1.0 - h * h)
            dh[j] = 0.0
        c = ids[t]
        for j in range(H):
            gU[j, c] += dz[j]
        for j in range(H):
            gb_h[j] += dz[j]
        _add_wT_d(dz, Vm, dh)
    _outer_sum(gW, do, hs[1:])
    _outer_sum(gV, dzs, hs[:T])
    return loss


@njit(cache=True, nogil=True, inline="always")
def _numpy_lstm_forward(ids, Wg, bg):
    """The NumPy LSTM's forward pass: per step the gates f, i, g, o (``acts``, T × 4H), and the
    hidden and cell states (``hs``, ``cs``: row 0 the zero state, row t + 1 after input t) and
    ``tanh(c)`` (``tcs``)."""
    T = ids.shape[0]
    G = Wg.shape[0]
    H = G // 4
    WhT = np.ascontiguousarray(Wg[:, :H].T)  # (H, 4H)
    acts = np.empty((T, G))
    hs = np.zeros((T + 1, H))
    cs = np.zeros((T + 1, H))
    tcs = np.empty((T, H))
    for t in range(T):
        a = acts[t]  # the pre-activations, then (in place) the gates
        xi = H + ids[t]
        for j in range(G):
            a[j] = Wg[j, xi] + bg[j]
        _add_matvec_t(a, WhT, hs[t])
        for j in range(2 * H):  # f, i: σ(a) = (1 + tanh(a / 2)) / 2, one function per loop
            a[j] = 0.5 * _tanh(0.5 * a[j]) + 0.5
        for j in range(2 * H, 3 * H):  # g
            a[j] = _tanh(a[j])
        for j in range(3 * H, G):  # o
            a[j] = 0.5 * _tanh(0.5 * a[j]) + 0.5
        for j in range(H):
            cs[t + 1, j] = a[j] * cs[t, j] + a[H + j] * a[2 * H + j]  # c = f c + i g
        for j in range(H):
            tc = _tanh(cs[t + 1, j])
            tcs[t, j] = tc
            hs[t + 1, j] = a[3 * H + j] * tc
    return acts, hs, cs, tcs


@njit(cache=True, nogil=True, error_model="numpy")  # vectorised _tanh
def numpy_lstm_loss(ids, tgt, Wg, bg, Wv, bv):
    """:meth:`NumpyLSTM.loss <dino_rnn.numpy_nets.NumpyLSTM.loss>` (the forward pass), compiled."""
    _check_tokens(ids, tgt, Wg.shape[1] - Wg.shape[0] // 4, Wv.shape[0])
    _, hs, _, _ = _numpy_lstm_forward(ids, Wg, bg)
    return _softmax_ce(_readout(hs, np.ascontiguousarray(Wv.T), bv), tgt)


@njit(cache=True, nogil=True, error_model="numpy")  # vectorised _tanh
def numpy_lstm_grads(ids, tgt, Wg, bg, Wv, bv, gWg, gbg, gWv, gbv):
    """:meth:`NumpyLSTM.loss_and_grads <dino_rnn.numpy_nets.NumpyLSTM.loss_and_grads>`, compiled.

    ``Wg`` is the (4H, H+V) block of the four gates f, i, g, o (h columns, then x columns).
    """
    T = ids.shape[0]
    G = Wg.shape[0]
    H = G // 4
    O = Wv.shape[0]
    _check_tokens(ids, tgt, Wg.shape[1] - H, O)
    acts, hs, cs, tcs = _numpy_lstm_forward(ids, Wg, bg)
    dv = _readout(hs, np.ascontiguousarray(Wv.T), bv)
    loss = _softmax_ce(dv, tgt)
    gWg[:] = 0.0
    gbg[:] = 0.0
    gbv[:] = 0.0
    dh = np.zeros(H)
    dc = np.zeros(H)
    das = np.empty((T, G))
    for t in range(T - 1, -1, -1):
        da = das[t]
        _backprop_linear(dv[t], Wv, gbv, dh)
        for j in range(H):
            f = acts[t, j]
            i = acts[t, H + j]
            g = acts[t, 2 * H + j]
            o = acts[t, 3 * H + j]
            tc = tcs[t, j]
            dcj = dc[j] + dh[j] * o * (1.0 - tc * tc)
            da[j] = dcj * cs[t, j] * f * (1.0 - f)
            da[H + j] = dcj * g * i * (1.0 - i)
            da[2 * H + j] = dcj * i * (1.0 - g * g)
            da[3 * H + j] = dh[j] * tc * o * (1.0 - o)
            dc[j] = dcj * f
            dh[j] = 0.0
        xi = H + ids[t]
        for j in range(G):
            gWg[j, xi] += da[j]
            gbg[j] += da[j]
        _add_wT_d(da, Wg, dh)
    _outer_sum(gWv, dv, hs[1:])
    _outer_sum(gWg, das, hs[:T])
    return loss


# ---------------------------------------------------------------------------
# The NumPy nets' optimizer updates (float64, on the flat buffers)
# ---------------------------------------------------------------------------


# error_model="numpy": a division by zero gives inf or nan, as in NumPy, instead of a check
# per division that keeps the loop from being vectorised (AdamW's update: 31 against 131 µs
# for 25307 parameters). The norm's sum may be reassociated (vectorised: 2 against 21 µs).


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})
def clip_sgd_update(p, g, lr, max_norm):
    """:func:`~dino_rnn.numpy_nets.clip_grad_norm` (``max_norm`` > 0; 0: no clipping) then
    :meth:`SGD.step <dino_rnn.numpy_nets.SGD.step>`, on flat buffers; returns the norm before
    clipping (0 when not clipping). Like the NumPy code it leaves ``g`` clipped."""
    n = p.shape[0]
    norm = 0.0
    if max_norm > 0:
        for k in range(n):
            norm += g[k] * g[k]
        norm = np.sqrt(norm)
        if norm > max_norm:
            scale = max_norm / norm
            for k in range(n):
                g[k] *= scale
    for k in range(n):
        p[k] -= g[k] * lr
    return norm


@njit(cache=True, nogil=True, error_model="numpy")
def adamw_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step_size, bc2_sqrt):
    """:meth:`AdamW.step <dino_rnn.numpy_nets.AdamW.step>` on flat buffers, the same operations
    in the same order (``step_size`` and ``bc2_sqrt`` as it computes them for this step)."""
    decay = 1.0 - lr * weight_decay if weight_decay != 0.0 else 1.0  # θ·1 is θ: no decay
    for k in range(p.shape[0]):
        pk = p[k] * decay
        gk = g[k]
        mk = m[k] + (gk - m[k]) * (1.0 - beta1)
        vk = v[k] * beta2 + gk * (1.0 - beta2) * gk
        m[k] = mk
        v[k] = vk
        p[k] = pk - mk / (np.sqrt(vk) / bc2_sqrt + eps) * step_size


__all__ = ["scratch_step", "rnn_step", "lstm_step", "gru_step", "numpy_rnn_grads", "numpy_lstm_grads",
           "numpy_rnn_loss", "numpy_lstm_loss", "clip_sgd_update", "adamw_update"]
