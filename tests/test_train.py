import math

import pytest
import torch

from dino_rnn.data import encode_names, split_names
from dino_rnn.models import build_model
from dino_rnn.train import evaluate, fit, set_seed


@pytest.fixture(scope="module")
def small(names, vocab):
    train, valid, test = split_names(names, 0)
    return encode_names(train[:60], vocab), encode_names(valid, vocab), encode_names(test, vocab)


def _fit(arch, small, vocab, seed=0, **kw):
    set_seed(seed)
    model = build_model(arch, len(vocab), **kw)
    set_seed(seed)
    return model, fit(model, *small, epochs=kw.pop("epochs", 3), lr=3e-3, progress=False)


@pytest.mark.parametrize("arch", ["scratch", "rnn", "lstm", "gru"])
def test_loss_falls(arch, small, vocab):
    _, h = _fit(arch, small, vocab)
    assert h.status == "ok"
    assert h.train_loss[-1] < h.train_loss[0] - 0.1
    assert h.valid_loss[-1] < h.valid_loss[0]
    assert len(h.seconds) == 3 and all(s > 0 for s in h.seconds)


def test_seeded_runs_repeat_exactly(small, vocab):
    _, a = _fit("lstm", small, vocab, seed=3)
    _, b = _fit("lstm", small, vocab, seed=3)
    _, c = _fit("lstm", small, vocab, seed=4)
    assert (a.train_loss, a.valid_loss, a.test_loss) == (b.train_loss, b.valid_loss, b.test_loss)
    assert a.train_loss != c.train_loss


def test_test_loss_comes_from_the_best_validation_state(small, vocab):
    model, h = _fit("rnn", small, vocab)
    assert h.best_epoch == 1 + min(range(len(h.valid_loss)), key=h.valid_loss.__getitem__)
    assert h.best_valid_loss == min(h.valid_loss)
    # the model ends holding the best state, and the test loss is measured on it
    for k, v in model.state_dict().items():
        assert torch.equal(v, h.best_state[k])
    assert h.test_loss == evaluate(model, small[2])


def test_two_layers_train(small, vocab):
    _, h = _fit("lstm", small, vocab, num_layers=2)
    assert h.status == "ok" and h.train_loss[-1] < h.train_loss[0]


def test_nan_loss_stops_training(small, vocab):
    set_seed(0)
    model = build_model("rnn", len(vocab))
    with torch.no_grad():
        model.fc.bias[0] = float("nan")
    h = fit(model, *small, epochs=5, lr=1e-3, progress=False)
    assert h.status == "diverged" and "NaN at epoch 1" in h.message
    assert len(h.train_loss) == 1 and h.best_state is None and math.isnan(h.test_loss)
