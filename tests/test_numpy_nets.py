"""The hand-written BPTT against torch.autograd and finite differences; clipping; SGD and AdamW."""

import math

import numpy as np
import pytest
import torch

from dino_rnn.numpy_nets import (
    SGD,
    AdamW,
    NumpyLSTM,
    NumpyRNN,
    clip_grad_norm,
    cross_entropy,
    global_norm,
    orthogonal,
)

V, H = 5, 4


# -- the same equations, written in torch, differentiated by autograd (float64) --------


def torch_rnn_loss(p: dict, inputs, targets):
    x = torch.nn.functional.one_hot(torch.as_tensor(inputs), V).double()
    h = torch.zeros(p["V"].shape[0], dtype=torch.float64)
    outs = []
    for t in range(len(inputs)):
        h = torch.tanh(p["U"] @ x[t] + p["V"] @ h + p["b_h"])
        outs.append(p["W"] @ h + p["b_o"])
    return torch.nn.functional.cross_entropy(torch.stack(outs), torch.as_tensor(targets))


def torch_lstm_loss(p: dict, inputs, targets):
    x = torch.nn.functional.one_hot(torch.as_tensor(inputs), V).double()
    hid = p["b_f"].shape[0]
    h = torch.zeros(hid, dtype=torch.float64)
    c = torch.zeros(hid, dtype=torch.float64)
    outs = []
    for t in range(len(inputs)):
        z = torch.cat([h, x[t]])
        f = torch.sigmoid(p["W_f"] @ z + p["b_f"])
        i = torch.sigmoid(p["W_i"] @ z + p["b_i"])
        g = torch.tanh(p["W_g"] @ z + p["b_g"])
        o = torch.sigmoid(p["W_o"] @ z + p["b_o"])
        c = f * c + i * g
        h = o * torch.tanh(c)
        outs.append(p["W_v"] @ h + p["b_v"])
    return torch.nn.functional.cross_entropy(torch.stack(outs), torch.as_tensor(targets))


NETS = [(NumpyRNN, torch_rnn_loss), (NumpyLSTM, torch_lstm_loss)]


def randomise(net, rng, scale=0.6):
    """Non-zero biases and larger weights, so every gradient path is exercised."""
    for v in net.params.values():
        v[...] = rng.normal(0, scale, v.shape)


def sequences(rng, n=4):
    for _ in range(n):
        T = int(rng.integers(1, 9))
        yield rng.integers(0, V, T), rng.integers(0, V, T)


@pytest.mark.parametrize("cls,ref", NETS, ids=["rnn", "lstm"])
def test_grads_equal_autograd(cls, ref):
    rng = np.random.default_rng(1)
    for k, (x, y) in enumerate(sequences(rng, 5)):
        net = cls(V, H, seed=k)
        if k:
            randomise(net, rng)
        loss, grads = net.loss_and_grads(x, y)
        assert set(grads) == set(net.params)
        tp = {n: torch.tensor(a, requires_grad=True) for n, a in net.params.items()}
        tl = ref(tp, x.tolist(), y.tolist())
        tl.backward()
        assert abs(loss - tl.item()) < 1e-12
        assert abs(loss - net.loss(x, y)) < 1e-12
        for n, g in grads.items():
            assert g.shape == net.params[n].shape
            np.testing.assert_allclose(g, tp[n].grad.numpy(), rtol=0, atol=1e-9, err_msg=n)


@pytest.mark.parametrize("cls", [NumpyRNN, NumpyLSTM], ids=["rnn", "lstm"])
def test_grads_match_finite_differences(cls):
    rng = np.random.default_rng(2)
    for k, (x, y) in enumerate(sequences(rng, 3)):
        net = cls(V, H, seed=k)
        randomise(net, rng)
        _, grads = net.loss_and_grads(x, y)
        eps = 1e-6
        for n, p in net.params.items():
            num = np.zeros_like(p)
            for idx in np.ndindex(p.shape):
                old = p[idx]
                p[idx] = old + eps
                up = net.loss(x, y)
                p[idx] = old - eps
                down = net.loss(x, y)
                p[idx] = old
                num[idx] = (up - down) / (2 * eps)
            np.testing.assert_allclose(grads[n], num, rtol=0, atol=1e-7, err_msg=n)


def test_parameter_counts_and_init():
    rnn, lstm = NumpyRNN(27, 64), NumpyLSTM(27, 64)
    assert rnn.n_params == 64 * 27 + 64 * 64 + 27 * 64 + 64 + 27 == 7643
    assert lstm.n_params == 4 * 64 * (64 + 27) + 4 * 64 + 27 * 64 + 27 == 25307
    assert sum(v.size for v in lstm.params.values()) == lstm.n_params
    np.testing.assert_allclose(rnn.params["V"] @ rnn.params["V"].T, np.eye(64), atol=1e-12)
    W = rnn.params["U"]  # (64, 27): orthonormal columns
    np.testing.assert_allclose(W.T @ W, np.eye(27), atol=1e-12)
    assert not rnn.params["b_h"].any() and not lstm.params["b_f"].any()
    # same seed, same weights; another seed, other weights
    np.testing.assert_array_equal(NumpyLSTM(27, 64, seed=3).flat, NumpyLSTM(27, 64, seed=3).flat)
    assert not np.array_equal(NumpyLSTM(27, 64, seed=3).flat, lstm.flat)
    q = orthogonal(np.random.default_rng(0), 3, 7)
    np.testing.assert_allclose(q @ q.T, np.eye(3), atol=1e-12)


def test_forward_state_continues_the_sequence():
    net = NumpyLSTM(V, H, seed=0)
    randomise(net, np.random.default_rng(5))
    x = [0, 3, 1, 4, 2]
    whole, _ = net.forward(x)
    a, state = net.forward(x[:2])
    b, _ = net.forward(x[2:], state)
    np.testing.assert_allclose(np.vstack([a, b]), whole, atol=1e-14)
    rnn = NumpyRNN(V, H, seed=0)
    whole, _ = rnn.forward(x)
    a, state = rnn.forward(x[:3])
    b, _ = rnn.forward(x[3:], state)
    np.testing.assert_allclose(np.vstack([a, b]), whole, atol=1e-14)


def test_bad_inputs_are_refused():
    net = NumpyRNN(V, H)
    with pytest.raises(ValueError):
        net.loss_and_grads([0, 1], [1])
    with pytest.raises(ValueError):
        net.loss_and_grads([0, V], [1, 1])
    with pytest.raises(ValueError):
        net.loss_and_grads([], [])


def test_cross_entropy_is_the_mean():
    logits = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]))
    assert cross_entropy(logits, [0, 2]) == pytest.approx(-(math.log(0.5) + math.log(0.8)) / 2, abs=1e-15)


# -- clipping ------------------------------------------------------------------


def test_clipping_caps_the_global_norm_exactly():
    net = NumpyLSTM(V, H)
    randomise(net, np.random.default_rng(0), scale=2.0)
    _, grads = net.loss_and_grads([0, 1, 2, 3, 4, 0], [1, 2, 3, 4, 0, 1])
    before = global_norm(grads)
    direction = {k: v / before for k, v in grads.items()}
    assert before > 0.25
    assert clip_grad_norm(grads, 0.25) == pytest.approx(before, rel=1e-15)
    assert global_norm(grads) == pytest.approx(0.25, rel=1e-12)
    for k, v in grads.items():  # the direction is kept
        np.testing.assert_allclose(v / 0.25, direction[k], atol=1e-13)
    # below the cap nothing changes; a dict of separate arrays works too
    small = {"a": np.array([0.1, 0.0]), "b": np.array([[0.05]])}
    copy = {k: v.copy() for k, v in small.items()}
    clip_grad_norm(small, 0.25)
    for k in small:
        np.testing.assert_array_equal(small[k], copy[k])
    big = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    assert clip_grad_norm(big, 1.0) == 5.0
    assert global_norm(big) == pytest.approx(1.0, rel=1e-15)
    np.testing.assert_allclose(big["a"], [0.6, 0.0])
    # agrees with torch (which divides by norm + 1e-6) to that 1e-6
    t = [torch.tensor(v) for v in ({"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}).values()]
    for x in t:
        x.grad = x.clone()
    torch.nn.utils.clip_grad_norm_(t, 1.0)
    np.testing.assert_allclose(t[0].grad.numpy(), big["a"], rtol=1e-6)


# -- optimisers ------------------------------------------------------------------


def test_sgd_updates_in_place():
    net = NumpyRNN(V, H)
    before = net.get_state()
    _, grads = net.loss_and_grads([0, 1, 2], [1, 2, 3])
    W = net.params["W"]
    SGD(net.params, lr=0.1).step(grads)
    assert net.params["W"] is W
    for k in before:
        np.testing.assert_allclose(net.params[k], before[k] - 0.1 * grads[k], atol=1e-15)


@pytest.mark.parametrize("flat", [True, False], ids=["net-params", "separate-arrays"])
def test_adamw_matches_torch(flat):
    rng = np.random.default_rng(0)
    if flat:
        net = NumpyLSTM(V, H, seed=0)
        params = net.params
    else:
        params = {"a": rng.normal(size=(3, 4)), "b": rng.normal(size=5)}
    tparams = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    ours = AdamW(params, lr=3e-2, weight_decay=0.01)
    theirs = torch.optim.AdamW(list(tparams.values()), lr=3e-2, weight_decay=0.01, foreach=False)
    for step in range(6):
        if flat:
            _, grads = net.loss_and_grads(rng.integers(0, V, 6), rng.integers(0, V, 6))
        else:
            grads = {k: rng.normal(size=v.shape) * 10 ** rng.uniform(-4, 1) for k, v in params.items()}
        for k, t in tparams.items():
            t.grad = torch.tensor(grads[k].copy())
        ours.step(grads)
        theirs.step()
        for k in params:
            np.testing.assert_allclose(params[k], tparams[k].detach().numpy(), rtol=1e-12, atol=1e-14, err_msg=f"{k} step {step + 1}")


def test_adamw_flat_and_per_key_paths_agree():
    """The flat fast path and the per-parameter path are the same arithmetic."""
    a, b = NumpyRNN(V, H, seed=1), NumpyRNN(V, H, seed=1)
    oa, ob = AdamW(a.params, lr=1e-2), AdamW(b.params, lr=1e-2)
    rng = np.random.default_rng(0)
    for _ in range(3):
        x, y = rng.integers(0, V, 5), rng.integers(0, V, 5)
        _, ga = a.loss_and_grads(x, y)
        _, gb = b.loss_and_grads(x, y)
        oa.step(ga)
        ob.step({k: v.copy() for k, v in gb.items()})  # separate arrays: per-key path
    np.testing.assert_array_equal(a.flat, b.flat)


def test_training_reduces_the_loss_and_repeats():
    def run():
        net = NumpyLSTM(V, H, seed=0)
        opt = AdamW(net.params, lr=0.05)
        x, y = [0, 1, 2, 3], [1, 2, 3, 4]
        first = net.loss(x, y)
        for _ in range(50):
            _, g = net.loss_and_grads(x, y)
            clip_grad_norm(g, 1.0)
            opt.step(g)
        return first, net.loss(x, y), net.flat.copy()

    f1, l1, p1 = run()
    f2, l2, p2 = run()
    assert l1 < 0.2 * f1
    assert (l1, f1) == (l2, f2) and np.array_equal(p1, p2)


@pytest.mark.parametrize("cls", [NumpyRNN, NumpyLSTM], ids=["rnn", "lstm"])
def test_a_reused_gradient_buffer_gives_the_same_gradient(cls):
    """``out=`` overwrites every entry: a buffer full of another sequence's gradient (or of junk)
    gives exactly the fresh arrays' numbers."""
    rng = np.random.default_rng(5)
    net = cls(V, H, seed=3)
    out = net.new_grads()
    out[0][...] = np.nan
    for x, y in sequences(rng, 4):
        loss, fresh = net.loss_and_grads(x, y)
        loss2, reused = net.loss_and_grads(x, y, out=out)
        assert loss2 == loss and reused is out[1]
        for k in fresh:
            assert np.array_equal(reused[k], fresh[k]), k
