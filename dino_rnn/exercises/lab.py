"""The checks of notebook 05's exercises: the NumPy RNN and LSTM, clipping, SGD, Adam, extrapolation.

Each check takes the student's function, runs it on a small random problem (4 tokens, 3 hidden
units, 5 steps, float64) and compares it with the package's own (:mod:`dino_rnn.numpy_nets`,
:mod:`dino_rnn.anbn`) and, for the backward passes, with finite differences. A wrong answer is
looked up in the catalogue of mistakes below, so the message names the likely cause.
:func:`maths` then bundles the student's functions for training.
"""

from __future__ import annotations

import numpy as np

from dino_rnn import anbn
from dino_rnn import numpy_nets as nn
from dino_rnn.exercises.base import (Exercise, Mistake, call, check_array, check_dict, close, diagnose,
                                     difference, finite_differences, same_source, where)

V, H, T = 4, 3, 5
EXERCISES = {
    "input_and_target": Exercise("A", "inputs and targets"),
    "rnn_forward": Exercise("B", "the RNN forward pass"),
    "softmax_cross_entropy": Exercise("C", "the loss and its gradient"),
    "rnn_backward": Exercise("D", "the RNN backward pass"),
    "lstm_forward": Exercise("E", "the LSTM forward pass"),
    "lstm_backward": Exercise("F", "the LSTM backward pass"),
    "global_norm": Exercise("G", "the global norm"),
    "clip_grad_norm": Exercise("H", "clipping by the global norm"),
    "sgd_update": Exercise("I", "the SGD update"),
    "adam_update": Exercise("J", "the Adam update"),
    "complete": Exercise("K", "the extrapolation measure"),
}


def problem(kind: str, seed: int = 0):
    """Random parameters of a small net (``"rnn"`` or ``"lstm"``), a sequence and its targets."""
    net = (nn.NumpyRNN if kind == "rnn" else nn.NumpyLSTM)(V, H, seed=seed)
    rng = np.random.default_rng(seed)
    p = {k: rng.normal(0.0, 0.7, v.shape) for k, v in net.params.items()}  # biases too: every path
    return p, rng.integers(0, V, T), rng.integers(0, V, T)


# ---------------------------------------------------------------------------
# A: inputs and targets
# ---------------------------------------------------------------------------


def input_and_target(fn) -> None:
    ex = EXERCISES["input_and_target"]
    ids = np.array(anbn.encode(anbn.sequence(3)))
    got = call(ex, fn, ids.copy())
    want = anbn.input_and_target(ids)
    if not isinstance(got, tuple) or len(got) != 2:
        raise ex.fail("return two arrays, (inputs, targets)")
    if close(tuple(np.asarray(g, dtype=float) for g in got), tuple(w.astype(float) for w in want)):
        return ex.passed(f"{' '.join(anbn.decode(ids))} gives the input {' '.join(anbn.decode(want[0]))} "
                         f"and the target {' '.join(anbn.decode(want[1]))}.")
    g = tuple(np.asarray(a, dtype=float) for a in got)
    diagnose(ex, g, [
        Mistake("targets off by one: the target at step t is the token after input t (ids[1:]), "
                "not the input itself", lambda: (ids[:-1] * 1.0, ids[:-1] * 1.0)),
        Mistake("input and target are swapped: the input is the sequence without its last token",
                lambda: (ids[1:] * 1.0, ids[:-1] * 1.0)),
        Mistake("targets off by one: shifted by two tokens; the target is the very next token",
                lambda: (ids[:-2] * 1.0, ids[2:] * 1.0)),
    ])
    check_array(ex, "the inputs", got[0], want[0])
    check_array(ex, "the targets", got[1], want[1])


# ---------------------------------------------------------------------------
# B, C, D: the RNN
# ---------------------------------------------------------------------------


def _rnn_forward_variant(p, inputs, h0, *, act=np.tanh, carry=True, readout_prev=False):
    """The forward pass with one of the classic mistakes."""
    hs = np.zeros((len(inputs) + 1, p["V"].shape[0]))
    hs[0] = h0
    for t, x in enumerate(inputs):
        hs[t + 1] = act(p["U"][:, x] + p["b_h"] + p["V"] @ (hs[t] if carry else h0))
    return (hs[:-1] if readout_prev else hs[1:]) @ p["W"].T + p["b_o"], hs


def rnn_forward(fn) -> None:
    ex = EXERCISES["rnn_forward"]
    p, inputs, _ = problem("rnn")
    h0 = np.random.default_rng(1).normal(0.0, 0.5, H)
    got = call(ex, fn, p, inputs, h0)
    want = nn.rnn_forward(p, inputs, h0)
    if not isinstance(got, tuple) or len(got) != 2:
        raise ex.fail("return two arrays, (logits, hs)")
    if close(got, want):
        none = call(ex, fn, p, inputs)
        if not close(none, nn.rnn_forward(p, inputs)):
            raise ex.fail("with h0=None the first step must start from zeros")
        return ex.passed(f"logits and hidden states right on a {T}-step sequence, from h0 and from zeros.")
    diagnose(ex, got, [
        Mistake("the hidden state is not carried between steps: h_t must be computed from h_{t-1} (hs[t]), "
                "not from h0", lambda: _rnn_forward_variant(p, inputs, h0, carry=False)),
        Mistake("tanh is missing: h_t = tanh(U x_t + V h_{t-1} + b_h)",
                lambda: _rnn_forward_variant(p, inputs, h0, act=lambda a: a)),
        Mistake("h0 is ignored: the first step must start from h0 (zeros only when h0 is None)",
                lambda: nn.rnn_forward(p, inputs, None)),
        Mistake("the read-out uses h_{t-1}: the logits at step t are W h_t + b_o, from the new state",
                lambda: _rnn_forward_variant(p, inputs, h0, readout_prev=True)),
    ])
    check_array(ex, "hs", got[1], want[1])
    check_array(ex, "the logits", got[0], want[0])


def softmax_cross_entropy(fn) -> None:
    ex = EXERCISES["softmax_cross_entropy"]
    rng = np.random.default_rng(2)
    logits, targets = rng.normal(0.0, 2.0, (T, V)), rng.integers(0, V, T)
    got = call(ex, fn, logits.copy(), targets)
    loss, d = nn.softmax_cross_entropy(logits, targets)
    if not isinstance(got, tuple) or len(got) != 2:
        raise ex.fail("return two things, (loss, dlogits)")
    if close(got, (loss, d)):
        with np.errstate(all="ignore"):
            big = call(ex, fn, logits * 400.0, targets)  # exp(800) overflows unless the max is taken out
        if not close(big, nn.softmax_cross_entropy(logits * 400.0, targets)):
            raise ex.fail("wrong (or NaN) for large logits: subtract each row's max before exp (softmax does "
                          "not change, exp no longer overflows)")
        return ex.passed(f"loss {loss:.4f} and its gradient right, for large logits too.")
    probs = nn.softmax(logits)
    diagnose(ex, got, [
        Mistake("the gradient is not divided by T: L is the mean over the T steps, so dL/do_t = (p_t − y_t) / T",
                lambda: (loss, d * T)),
        Mistake("the loss and its gradient are sums over the steps: take the mean (divide both by T)",
                lambda: (loss * T, d * T)),
        Mistake("the one-hot target is not subtracted: dL/do_t = (softmax(o_t) − onehot(y_t)) / T",
                lambda: (loss, probs / T)),
    ])
    check_array(ex, "the loss", got[0], loss)
    check_array(ex, "dlogits", got[1], d)


def _rnn_backward_variant(p, inputs, hs, dlogits, *, tanh_prime=True, through_time=True, prime_of_prev=False):
    """The backward pass with one of the classic mistakes."""
    dz = np.zeros((len(inputs), p["V"].shape[0]))
    dh_next = np.zeros(p["V"].shape[0])
    dh_out = dlogits @ p["W"]
    for t in reversed(range(len(inputs))):
        h = hs[t] if prime_of_prev else hs[t + 1]
        dz[t] = (dh_out[t] + (dh_next if through_time else 0.0)) * ((1.0 - h**2) if tanh_prime else 1.0)
        dh_next = p["V"].T @ dz[t]
    return {"U": dz.T @ nn.one_hot(inputs, V), "V": dz.T @ hs[:-1], "W": dlogits.T @ hs[1:],
            "b_h": dz.sum(axis=0), "b_o": dlogits.sum(axis=0)}


def _numerical(kind, p, inputs, targets):
    forward = nn.rnn_forward if kind == "rnn" else nn.lstm_forward
    return finite_differences(lambda: nn.softmax_cross_entropy(forward(p, inputs)[0], targets)[0], p)


def _gradients(ex, got, want, numerical, probe) -> None:
    """Compare a backward pass's gradients: the dict, then each against finite differences, then say
    whether a one-step sequence is right (then the error is in what flows back through time)."""
    check_dict(ex, "the gradient", got, {k: v for k, v in want.items()}, tol=np.inf)
    wrong = [k for k in want if not close(got[k], want[k])]
    if not wrong:
        return
    k = wrong[0]
    one_step_right = probe()
    cause = ("a one-step sequence is right, so the error is in what flows back through time (dh_next, dc_next)"
             if one_step_right else "a one-step sequence is wrong too, so the error is within a step")
    raise ex.fail(f"d{k} differs from finite differences, largest difference at {where(got[k], numerical[k])}; "
                  f"also wrong: {', '.join('d' + w for w in wrong[1:]) or 'nothing else'}; {cause}")


def rnn_backward(fn) -> None:
    ex = EXERCISES["rnn_backward"]
    p, inputs, targets = problem("rnn")
    logits, hs = nn.rnn_forward(p, inputs)
    _, dlogits = nn.softmax_cross_entropy(logits, targets)
    got = call(ex, fn, p, inputs, hs.copy(), dlogits.copy())
    want = nn.rnn_backward(p, inputs, hs, dlogits)
    numerical = _numerical("rnn", p, inputs, targets)
    if isinstance(got, dict) and close(got, want):
        return ex.passed(f"every gradient equals finite differences (largest difference "
                         f"{max(difference(got[k], numerical[k]) for k in want):.0e}) on a {T}-step sequence.")
    diagnose(ex, got, [
        Mistake("tanh's derivative is missing: dz_t = dh_t * (1 − h_t²)",
                lambda: _rnn_backward_variant(p, inputs, hs, dlogits, tanh_prime=False)),
        Mistake("the gradient through time is dropped: dh_t must add dh_next = Vᵀ dz_{t+1} from the step after",
                lambda: _rnn_backward_variant(p, inputs, hs, dlogits, through_time=False)),
        Mistake("tanh's derivative is taken at h_{t-1}: it is 1 − h_t² with h_t = hs[t + 1], the state step t made",
                lambda: _rnn_backward_variant(p, inputs, hs, dlogits, prime_of_prev=True)),
    ])

    def one_step():
        lg, h1 = nn.rnn_forward(p, inputs[:1])
        d1 = nn.softmax_cross_entropy(lg, targets[:1])[1]
        return close(call(ex, fn, p, inputs[:1], h1, d1), nn.rnn_backward(p, inputs[:1], h1, d1))

    _gradients(ex, got, want, numerical, one_step)


# ---------------------------------------------------------------------------
# E, F: the LSTM
# ---------------------------------------------------------------------------


def _lstm_forward_variant(p, inputs, state, *, carry_h=True, carry_c=True, candidate=np.tanh, x_first=False):
    """The forward pass with one of the classic mistakes; returns the logits only."""
    h0, c0 = state
    h, c, out = h0, c0, []
    x = nn.one_hot(inputs, V)
    for t in range(len(inputs)):
        z = np.concatenate([x[t], h] if x_first else [h, x[t]])
        f, i = nn.sigmoid(p["W_f"] @ z + p["b_f"]), nn.sigmoid(p["W_i"] @ z + p["b_i"])
        g, o = candidate(p["W_g"] @ z + p["b_g"]), nn.sigmoid(p["W_o"] @ z + p["b_o"])
        c = f * (c if carry_c else c0) + i * g
        h_new = o * np.tanh(c)
        out.append(p["W_v"] @ h_new + p["b_v"])
        h = h_new if carry_h else h0
    return np.array(out)


def lstm_forward(fn) -> None:
    ex = EXERCISES["lstm_forward"]
    p, inputs, _ = problem("lstm")
    rng = np.random.default_rng(3)
    state = (rng.normal(0.0, 0.5, H), rng.normal(0.0, 0.5, H))
    got = call(ex, fn, p, inputs, state)
    want = nn.lstm_forward(p, inputs, state)
    if not isinstance(got, tuple) or len(got) != 2 or not isinstance(got[1], dict):
        raise ex.fail("return (logits, cache), the cache a dict with h, c, f, i, g, o")
    if close(got[0], want[0]) and close(got[1], want[1]):
        return ex.passed(f"logits, states and gates right on a {T}-step sequence.")
    diagnose(ex, got[0], [
        Mistake("the hidden state is not carried between steps: z_t = [h_{t-1}; x_t] takes h[t], the state "
                "the step before made", lambda: _lstm_forward_variant(p, inputs, state, carry_h=False)),
        Mistake("the cell state is not carried between steps: c_t = f_t * c_{t-1} + i_t * g_t with c_{t-1} = c[t]",
                lambda: _lstm_forward_variant(p, inputs, state, carry_c=False)),
        Mistake("the candidate g_t takes tanh, not the sigmoid (the gates f, i, o take the sigmoid)",
                lambda: _lstm_forward_variant(p, inputs, state, candidate=nn.sigmoid)),
        Mistake("z_t is stacked the wrong way round: [h_{t-1}; x_t], the first H columns act on h",
                lambda: _lstm_forward_variant(p, inputs, state, x_first=True)),
    ])
    check_dict(ex, "the cache", got[1], want[1])
    check_array(ex, "the logits", got[0], want[0])


def _lstm_backward_variant(p, inputs, cache, dlogits, *, no_sigmoid_prime="", forget_c=-1, through_h=True,
                           through_c=True):
    """The backward pass with one of the classic mistakes (``no_sigmoid_prime``: the gates among f, i, o
    whose σ′ is left out; ``forget_c=0``: c_t in place of c_{t-1})."""
    f, i, g, o, c = (cache[k] for k in ("f", "i", "g", "o", "c"))
    W_h = np.concatenate([p[f"W_{k}"][:, :H] for k in nn.GATES])
    da = np.zeros((len(inputs), 4 * H))
    dh_next, dc_next = np.zeros(H), np.zeros(H)
    for t in reversed(range(len(inputs))):
        tanh_c = np.tanh(c[t + 1])
        dh = p["W_v"].T @ dlogits[t] + (dh_next if through_h else 0.0)
        dc = dh * o[t] * (1.0 - tanh_c**2) + (dc_next if through_c else 0.0)
        s = {k: 1.0 if k in no_sigmoid_prime else a * (1.0 - a) for k, a in (("f", f[t]), ("i", i[t]), ("o", o[t]))}
        da[t] = np.concatenate([dc * c[t + 1 + forget_c] * s["f"], dc * g[t] * s["i"],
                                dc * i[t] * (1.0 - g[t] ** 2), dh * tanh_c * s["o"]])
        dh_next, dc_next = W_h.T @ da[t], dc * f[t]
    z = np.concatenate([cache["h"][:-1], nn.one_hot(inputs, V)], axis=1)
    grads = {"W_v": dlogits.T @ cache["h"][1:], "b_v": dlogits.sum(axis=0)}
    for k, d in zip(nn.GATES, np.split(da, 4, axis=1)):
        grads[f"W_{k}"], grads[f"b_{k}"] = d.T @ z, d.sum(axis=0)
    return grads


def lstm_backward(fn) -> None:
    ex = EXERCISES["lstm_backward"]
    p, inputs, targets = problem("lstm")
    logits, cache = nn.lstm_forward(p, inputs)
    _, dlogits = nn.softmax_cross_entropy(logits, targets)
    got = call(ex, fn, p, inputs, {k: v.copy() for k, v in cache.items()}, dlogits.copy())
    want = nn.lstm_backward(p, inputs, cache, dlogits)
    numerical = _numerical("lstm", p, inputs, targets)
    if isinstance(got, dict) and close(got, want):
        return ex.passed(f"every gradient equals finite differences (largest difference "
                         f"{max(difference(got[k], numerical[k]) for k in want):.0e}) on a {T}-step sequence.")
    variant = lambda **kw: lambda: _lstm_backward_variant(p, inputs, cache, dlogits, **kw)  # noqa: E731
    gate = {"f": "forget gate f", "i": "input gate i", "o": "output gate o"}
    diagnose(ex, got, [
        Mistake("the sigmoid's derivative is missing: for the gates f, i and o, σ′ = σ(1 − σ)",
                variant(no_sigmoid_prime="fio")),
        *(Mistake(f"the sigmoid's derivative is missing for the {gate[k]}: σ′ = {k}(1 − {k})",
                  variant(no_sigmoid_prime=k)) for k in "fio"),
        Mistake("the forget gate's gradient takes the wrong cell state: f_t scales c_{t-1}, which is c[t] "
                "(c[t + 1] is the new state c_t)", variant(forget_c=0)),
        Mistake("the gradient through time from the hidden state is dropped: dh_t must add "
                "dh_next = W_hᵀ da_{t+1}", variant(through_h=False)),
        Mistake("the gradient along the cell state is dropped: dc_t must add dc_next = dc_{t+1} * f_{t+1}",
                variant(through_c=False)),
    ])

    def one_step():
        lg, c1 = nn.lstm_forward(p, inputs[:1])
        d1 = nn.softmax_cross_entropy(lg, targets[:1])[1]
        return close(call(ex, fn, p, inputs[:1], c1, d1), nn.lstm_backward(p, inputs[:1], c1, d1))

    _gradients(ex, got, want, numerical, one_step)


# ---------------------------------------------------------------------------
# G, H, I, J: clipping and the updates
# ---------------------------------------------------------------------------


def _grads(scale: float = 1.0, seed: int = 4) -> dict:
    rng = np.random.default_rng(seed)
    return {"W": rng.normal(0.0, scale, (3, 4)), "b": rng.normal(0.0, scale, 3), "V": rng.normal(0.0, scale, (2, 2))}


def global_norm(fn) -> None:
    ex = EXERCISES["global_norm"]
    grads = _grads()
    got = call(ex, fn, {k: v.copy() for k, v in grads.items()})
    want = nn.global_norm(grads)
    if close(got, want):
        return ex.passed(f"{want:.4f} for three arrays.")
    diagnose(ex, got, [
        Mistake("this is the sum of each array's norm; the global norm treats all the gradients as one vector: "
                "√(Σ of every squared entry)", lambda: sum(float(np.linalg.norm(g)) for g in grads.values())),
        Mistake("the square root is missing: √(Σ of every squared entry)", lambda: want**2),
        Mistake("this is the largest array's norm; the global norm takes all of them together",
                lambda: max(float(np.linalg.norm(g)) for g in grads.values())),
    ])
    check_array(ex, "the norm", got, want)


def clip_grad_norm(fn) -> None:
    ex = EXERCISES["clip_grad_norm"]
    max_norm, grads = 0.25, _grads()
    got_grads = {k: v.copy() for k, v in grads.items()}
    norm = call(ex, fn, got_grads, max_norm)
    want_grads = {k: v.copy() for k, v in grads.items()}
    want = nn.clip_grad_norm(want_grads, max_norm)
    per_tensor = {k: v.copy() for k, v in grads.items()}
    for k in per_tensor:
        nn.clip_grad_norm({k: per_tensor[k]}, max_norm)
    if close(got_grads, per_tensor):
        raise ex.fail("each gradient was clipped on its own; clip by the global norm: scale *all* of them by "
                      "max_norm / global norm, so the direction of the whole gradient is kept")
    if close(got_grads, grads):
        raise ex.fail("the gradients did not change: scale them in place (g *= ...), a new dict or array is "
                      "not seen by the caller")
    check_dict(ex, "the clipped gradients", got_grads, want_grads)
    if close(norm, max_norm) and not close(norm, want):
        raise ex.fail("return the norm *before* clipping (the caller logs how large the gradient was)")
    check_array(ex, "the returned norm", norm, want)
    small = _grads(scale=0.01)
    kept = {k: v.copy() for k, v in small.items()}
    call(ex, fn, kept, max_norm)
    if not close(kept, small):
        raise ex.fail(f"gradients whose norm ({nn.global_norm(small):.3f}) is below max_norm must stay as they are")
    ex.passed(f"a norm of {want:.3f} scaled to {max_norm} and one of {nn.global_norm(small):.3f} left alone.")


def sgd_update(fn) -> None:
    ex = EXERCISES["sgd_update"]
    rng = np.random.default_rng(5)
    param, grad, lr = rng.normal(size=(3, 4)), rng.normal(size=(3, 4)), 0.1
    got = param.copy()
    call(ex, fn, got, grad.copy(), lr)
    want = param.copy()
    nn.sgd_update(want, grad, lr)
    if close(got, want):
        return ex.passed("θ − lr·g, in place.")
    diagnose(ex, got, [
        Mistake("the parameter did not change: update it in place (param -= ...); `param = param - ...` makes "
                "a new array that the net never sees", lambda: param),
        Mistake("this climbs the gradient: θ ← θ − lr·g (minus: the loss goes down)", lambda: param + lr * grad),
        Mistake("the learning rate is missing: θ ← θ − lr·g", lambda: param - grad),
    ])
    check_array(ex, "the parameter after the update", got, want)


def _adam_run(update, *, t_of=lambda t: t, l2: float = 0.0, weight_decay: float = 0.1):
    """Three updates of one array by ``update``: the parameter, m and v after each. ``t_of`` and
    ``l2`` plant mistakes: a step count that never grows, weight decay added to the gradient."""
    rng = np.random.default_rng(6)
    p, m, v = rng.normal(size=(2, 3)), np.zeros((2, 3)), np.zeros((2, 3))
    out = []
    for t in range(1, 4):
        g = rng.normal(size=(2, 3)) + l2 * p
        update(p, g, m, v, t_of(t), lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=weight_decay)
        out.append((p.copy(), m.copy(), v.copy()))
    return out


def adam_update(fn) -> None:
    ex = EXERCISES["adam_update"]
    got = _adam_run(lambda *a, **k: call(ex, fn, *a, **k))
    want = _adam_run(nn.adam_update)
    if close(tuple(map(tuple, got)), tuple(map(tuple, want))):
        return ex.passed("three steps: the parameter, m and v right after each (torch.optim.AdamW's numbers).")
    last = tuple(got[-1])
    diagnose(ex, last, [
        Mistake("Adam without bias correction: m and v start at 0, so divide by (1 − β₁ᵗ) and (1 − β₂ᵗ) "
                "(t = 1, 2, …)", lambda: tuple(_adam_run(nn.adam_update, t_of=lambda t: 10**9)[-1])),
        Mistake("the weight decay is added to the gradient (Adam's L2); AdamW decays the parameter itself: "
                "θ ← θ (1 − lr·λ), before the update", lambda: tuple(_adam_run(nn.adam_update, l2=0.1, weight_decay=0.0)[-1])),
        Mistake("the weight decay is missing: θ ← θ (1 − lr·λ) first",
                lambda: tuple(_adam_run(nn.adam_update, weight_decay=0.0)[-1])),
    ])
    for step, (g, w) in enumerate(zip(got, want), start=1):
        for name, a, b in zip(("the parameter", "m", "v"), g, w):
            check_array(ex, f"{name} after step {step}", a, b)


# ---------------------------------------------------------------------------
# K: the extrapolation measure
# ---------------------------------------------------------------------------


def counter(errs_at: int | None = None):
    """A model of aⁿbⁿ as a logits function: it counts the a's, then emits that many b's minus one
    and EOS; with ``errs_at`` it emits EOS once that many b's were read (wrong for larger n)."""
    a, b, eos = anbn.INDEX[anbn.A], anbn.INDEX[anbn.B], anbn.INDEX[anbn.EOS]

    def logits(ids):
        out = np.zeros((len(ids), len(anbn.TOKENS)))
        for t in range(len(ids)):
            seen = list(ids[: t + 1])
            n, nb = seen.count(a), seen.count(b)
            done = nb >= n or (errs_at is not None and nb >= errs_at)
            out[t, eos if nb and done else (b if nb else a)] = 1.0
        return out

    return logits


def _complete_variant(logits_fn, n, *, feed_back=True, stop_on_wrong=True, position=-1):
    ids, out = anbn.encode([anbn.A] * n + [anbn.B]), []
    while len(out) < 2 * n + 5:
        nxt = int(np.asarray(logits_fn(ids))[position].argmax())
        out.append(anbn.TOKENS[nxt])
        if nxt == anbn.INDEX[anbn.EOS] or (stop_on_wrong and nxt != anbn.INDEX[anbn.B]):
            break
        if feed_back:
            ids.append(nxt)
    return out


def complete(fn) -> None:
    ex = EXERCISES["complete"]
    cases = [(model, n) for model in (counter(), counter(errs_at=4)) for n in (3, 6)]
    for model, n in cases:
        got = call(ex, fn, model, n)
        want = anbn.complete(model, n)
        if list(got) == want:
            continue
        for message, kw in (("the token emitted is not fed back: append it to ids, so the next prediction reads it",
                             {"feed_back": False}),
                            ("read the prediction after the *last* token (logits[-1]), not the first",
                             {"position": 0})):
            if list(got) == _complete_variant(model, n, **kw):
                raise ex.fail(message)
        raise ex.fail(f"after a^{n} b the model's greedy tokens are {' '.join(want)}; yours: {' '.join(map(str, got))}"
                      " (stop at the first token that is not b: EOS, or a wrong one)")
    ex.passed("a model that counts is exact at n = 3 and 6; one that stops early is caught.")


def maths(**functions) -> nn.Maths:
    """The student's functions as a :class:`~dino_rnn.numpy_nets.Maths` for training: a function whose
    source is the package's own (the solutions notebook) counts as the package's, so it trains on the
    compiled kernels."""
    own = {k: f for k, f in functions.items() if not same_source(f, getattr(nn.MATHS, k))}
    return nn.Maths(**own)


def complete_fn(fn):
    """The student's :func:`~dino_rnn.anbn.complete` for the measures, or None when it is the package's."""
    return None if same_source(fn, anbn.complete) else fn
