"""The step interface: every way of computing a gradient trains to the same numbers, and says which it is.

The written-out gradient against autograd is checked in depth in test_speed_semantics.py and
test_train.py; here: the NumPy nets' hand-written gradient against autograd on their
equations written in torch, through the one epoch loop, and what the loop records.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dino_rnn import anbn
from dino_rnn import train as steps
from dino_rnn.fast import steps as fast_steps
from dino_rnn.numpy_nets import SGD, AdamW, NumpyLSTM, NumpyRNN
from dino_rnn.train import run_epochs

NETS = {"rnn": NumpyRNN, "lstm": NumpyLSTM}


def _pairs(rng, n, V):
    out = []
    for _ in range(n):
        T = int(rng.integers(1, 14))
        out.append((rng.integers(0, V, T), rng.integers(0, V, T)))
    return out


@pytest.mark.parametrize("kind", sorted(NETS))
def test_torch_equations_are_the_numpy_nets(kind):
    """The torch form of each net's loss is its NumPy loss, and its autograd gradient the hand-written one."""
    rng = np.random.default_rng(3)
    net = NETS[kind](7, 5, seed=1)
    for v in net.params.values():
        v[...] = rng.normal(0, 0.6, v.shape)
    step = steps.make_step(net, SGD(net.params, 0.1), autograd=True)
    assert isinstance(step, steps.NumpyAutogradStep) and step.gradient == "autograd"
    for x, y in _pairs(rng, 6, 7):
        loss, grads = net.loss_and_grads(x, y)
        loss_t, grads_t = step.loss_and_grads(x, y)
        assert loss_t == pytest.approx(loss, rel=1e-13, abs=1e-13)
        for k in grads:
            np.testing.assert_allclose(grads_t[k], grads[k], rtol=0, atol=1e-13, err_msg=k)


@pytest.mark.parametrize("kind", sorted(NETS))
@pytest.mark.parametrize("opt", ["adamw", "sgd+clip"])
def test_numpy_nets_train_the_same_with_autograd(kind, opt):
    """Three epochs through run_epochs: the same losses and weights either way (float64 rounding)."""
    rng = np.random.default_rng(0)
    train, valid = _pairs(rng, 40, 6), _pairs(rng, 8, 6)
    runs = {}
    for autograd in (False, True):
        net = NETS[kind](6, 12, seed=2)
        optimizer = AdamW(net.params, lr=1e-2) if opt == "adamw" else SGD(net.params, 0.5)
        step = steps.make_step(net, optimizer, clip=0.25 if opt == "sgd+clip" else None, autograd=autograd)
        h = run_epochs(step, train, valid, valid, epochs=3, progress=False)
        assert h.gradient == ("autograd" if autograd else "numpy")
        runs[autograd] = h, net.flat.copy()
    (a, wa), (b, wb) = runs[False], runs[True]
    assert a.train_loss == pytest.approx(b.train_loss, rel=0, abs=1e-10)
    assert a.valid_loss == pytest.approx(b.valid_loss, rel=0, abs=1e-10)
    assert a.test_loss == pytest.approx(b.test_loss, rel=0, abs=1e-10)
    np.testing.assert_allclose(wa, wb, rtol=0, atol=1e-9)
    assert a.train_loss[-1] < a.train_loss[0]  # it learns


def test_anbn_lab_trains_the_same_with_autograd():
    train, valid, _ = anbn.load()
    small = anbn.Split(train.sequences[:25])
    curves = {}
    for autograd in (False, True):
        net = NumpyLSTM(4, 10, seed=0)
        curves[autograd] = anbn.train_numpy(net, SGD(net.params, 0.1), small, valid, epochs=2, autograd=autograd)
    assert curves[False].gradient == "numpy" and curves[True].gradient == "autograd"
    assert curves[False].train_loss == pytest.approx(curves[True].train_loss, rel=0, abs=1e-10)
    assert curves[False].valid_loss == pytest.approx(curves[True].valid_loss, rel=0, abs=1e-10)


class _Recording:
    """A step that records what the loop asks of it."""

    gradient = "recorded"

    def __init__(self, valid_losses):
        self.calls, self.valid_losses, self.state = [], list(valid_losses), 0

    def train(self):
        self.calls.append("train")

    def __call__(self, x, y):
        self.calls.append(("step", x))
        self.state += 1
        return float(x)

    def evaluate(self, pairs):
        self.calls.append("evaluate")
        return self.valid_losses.pop(0) if pairs != "test" else -1.0

    def snapshot(self):
        return self.state

    def restore(self, state):
        self.calls.append(("restore", state))
        self.state = state


def test_the_epoch_loop_knows_only_the_interface():
    step = _Recording([3.0, 1.0, 2.0])
    h = run_epochs(step, [(1.0, None), (3.0, None)], "valid", "test", epochs=3, progress=False)
    assert h.gradient == "recorded"
    assert h.train_loss == [2.0, 2.0, 2.0] and h.valid_loss == [3.0, 1.0, 2.0]
    assert h.best_epoch == 2 and h.best_state == 4 and h.test_loss == -1.0
    assert step.calls[:4] == ["train", ("step", 1.0), ("step", 3.0), "evaluate"]
    assert step.calls[-2:] == [("restore", 4), "evaluate"]  # the best state, then the test set
    # without keep_best (the aⁿbⁿ lab): no snapshot, the last epoch's state stays
    step = _Recording([3.0, 1.0, 2.0])
    h = run_epochs(step, [(1.0, None)], "valid", epochs=3, keep_best=False, progress=False)
    assert h.best_state is None and step.state == 3 and not any(isinstance(c, tuple) and c[0] == "restore" for c in step.calls)


@pytest.mark.parametrize("autograd", [False, True])
def test_a_clipped_step_moves_the_weights_by_the_clipped_gradient(autograd):
    net = NumpyLSTM(4, 6, seed=0)
    x, y = anbn.load()[0].pairs[4]
    _, grads = net.loss_and_grads(x, y)
    full = np.concatenate([g.ravel() for g in grads.values()])
    assert np.linalg.norm(full) > 0.3  # so that clipping at 0.25 bites
    before = net.flat.copy()
    steps.make_step(net, SGD(net.params, 1.0), clip=0.25, autograd=autograd)(x, y)
    moved = before - net.flat
    assert np.linalg.norm(moved) == pytest.approx(0.25, rel=1e-9)
    np.testing.assert_allclose(moved, full * 0.25 / np.linalg.norm(full), rtol=0, atol=1e-12)


@pytest.mark.parametrize("arch", ["scratch", "rnn", "lstm", "gru", "twin"])
def test_the_written_out_step_evaluates_as_the_model_does(arch):
    """A written-out step evaluates with its compiled kernel: the losses of the model's own forward
    pass in eval mode (float32 rounding), dropout off, and the training gradient left alone."""
    import torch.nn.functional as F

    from dino_rnn.models import build_model

    torch.manual_seed(0)
    V = 4 if arch == "twin" else 27
    model = anbn.make_torch_twin(V, 50, seed=0) if arch == "twin" else build_model(arch, V, 64)
    step = steps.make_step(model, torch.optim.AdamW(model.parameters(), lr=1e-3))
    assert isinstance(step, fast_steps.WrittenOutStep)
    rng = np.random.default_rng(1)
    pairs = [(F.one_hot(torch.as_tensor(ids), V).float(), torch.as_tensor(rng.integers(0, V, len(ids))))
             for ids in (rng.integers(0, V, T) for T in (1, 5, 12, 30))]
    step.train()
    step(*pairs[0])  # one training step: a gradient in the buffers the update reads
    grads = [g.clone() for g in step.grad.grads]
    fast = step.evaluate(pairs)
    assert not model.training
    with torch.no_grad():
        torch_loss = steps.Step(model, None).evaluate(pairs)
    assert fast == pytest.approx(torch_loss, rel=2e-6)
    assert fast == sum(step.grad.loss(x, y) for x, y in pairs) / len(pairs)  # the kernel's, not torch's
    for g, before in zip(step.grad.grads, grads):
        assert torch.equal(g, before)
