import copy
import math

import pytest
import torch

from dino_rnn import train as steps
from dino_rnn import train as train_mod
from dino_rnn.data import encode_names, split_names
from dino_rnn.models import ARCHITECTURES, build_model
from dino_rnn.train import Step, fit, pairs_of, set_seed


@pytest.fixture(scope="module")
def small(names, vocab):
    train, valid, test = split_names(names, 0)
    return encode_names(train[:60], vocab), encode_names(valid, vocab), encode_names(test, vocab)


def _fit(arch, data, vocab, seed=0, epochs=3, lr=3e-3, **kw):
    set_seed(seed)
    model = build_model(arch, len(vocab), **kw)
    set_seed(seed)
    return model, fit(model, *data, epochs=epochs, lr=lr, progress=False)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_loss_falls_as_autograd_makes_it_fall(arch, small, vocab, monkeypatch):
    """Epoch by epoch, the written-out gradient trains exactly as autograd does, and the loss falls.

    A falling loss alone proves little: it still falls with the recurrent weights' gradient
    zeroed, and for two of the four models sign-flipped (the read-out and input weights
    alone learn the character frequencies).
    So the same seeded run is made twice, once with the written-out gradient
    (:mod:`dino_rnn.fast.fastgrad`) and once with autograd (``DINO_RNN_AUTOGRAD=1``, read at a
    model's first step: a fresh model each time), and every epoch's training and validation
    loss, the test loss and the final weights must agree to float rounding.
    """
    data = (small[0][:30], small[1], small[2])
    runs = {}
    for switch in ("0", "1"):
        monkeypatch.setenv("DINO_RNN_AUTOGRAD", switch)
        model, h = _fit(arch, data, vocab)
        assert h.gradient == {"0": "written-out", "1": "autograd"}[switch]  # the path really taken
        runs[switch] = model, h
    (fast_model, fast), (auto_model, auto) = runs["0"], runs["1"]
    assert fast.status == auto.status == "ok"
    assert fast.train_loss == pytest.approx(auto.train_loss, rel=0, abs=1e-5)
    assert fast.valid_loss == pytest.approx(auto.valid_loss, rel=0, abs=1e-5)
    assert fast.best_epoch == auto.best_epoch
    assert fast.test_loss == pytest.approx(auto.test_loss, rel=0, abs=1e-5)
    for (n, a), b in zip(fast_model.named_parameters(), auto_model.parameters()):
        # ~1e-5 at most: AdamW turns rounding in near-zero gradients into lr-sized steps
        assert (a - b).abs().max().item() < 1e-3, n
    # and it learns
    assert fast.train_loss[-1] < fast.train_loss[0] - 0.1
    assert fast.valid_loss[-1] < fast.valid_loss[0]
    assert len(fast.seconds) == 3 and all(s > 0 for s in fast.seconds)


def test_seeded_runs_repeat_exactly(small, vocab):
    _, a = _fit("lstm", small, vocab, seed=3)
    _, b = _fit("lstm", small, vocab, seed=3)
    _, c = _fit("lstm", small, vocab, seed=4)
    assert (a.train_loss, a.valid_loss, a.test_loss) == (b.train_loss, b.valid_loss, b.test_loss)
    assert a.train_loss != c.train_loss


@pytest.fixture(scope="module")
def overfit(names, vocab):
    """20 training names: at lr 3e-2 every model's validation loss bottoms out and rises again."""
    train, valid, test = split_names(names, 0)
    return encode_names(train[:20], vocab), encode_names(valid, vocab), encode_names(test, vocab)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_test_loss_comes_from_the_best_validation_state(arch, overfit, vocab, monkeypatch):
    """The best epoch is not the last: the model must end holding a *copy* taken at the best epoch.

    Every epoch's weights are recorded (a wrapper around ``train_epoch``), so the final-epoch
    weights are known; the test loss must be the best epoch's, not theirs.
    """
    states = []
    real_train_epoch = train_mod.train_epoch

    def recording_train_epoch(step, pairs):
        loss = real_train_epoch(step, pairs)
        states.append({k: v.detach().clone() for k, v in step.model.state_dict().items()})
        return loss

    monkeypatch.setattr(train_mod, "train_epoch", recording_train_epoch)
    model, h = _fit(arch, overfit, vocab, epochs=6, lr=3e-2)
    assert h.status == "ok" and len(states) == len(h.valid_loss) == 6
    assert h.best_epoch == 1 + min(range(len(h.valid_loss)), key=h.valid_loss.__getitem__)
    assert h.best_valid_loss == min(h.valid_loss)
    # the arrangement: validation loss rose again after the best epoch
    assert h.best_epoch < len(h.valid_loss)
    assert h.valid_loss[-1] > h.best_valid_loss + 0.05
    best, final = states[h.best_epoch - 1], states[-1]

    def run_evaluation(m, examples):  # as the run evaluates: through its step (a compiled kernel)
        return steps.make_step(m, train_mod.make_optimizer(m, 1e-3)).evaluate(train_mod.pairs_of(examples))

    def loss_at(state, examples):
        m = copy.deepcopy(model)
        m.load_state_dict(state)
        return run_evaluation(m, examples)

    assert loss_at(best, overfit[1]) == h.best_valid_loss  # the recording is the run's
    assert loss_at(final, overfit[1]) == h.valid_loss[-1]
    # the test loss is the best epoch's weights' (and the last epoch's differs) ...
    best_test, final_test = loss_at(best, overfit[2]), loss_at(final, overfit[2])
    assert abs(best_test - final_test) > 1e-3, (best_test, final_test)
    assert h.test_loss == best_test, (
        f"test loss {h.test_loss} is not epoch {h.best_epoch}'s ({best_test}); "
        f"the last epoch's weights give {final_test}"
    )
    # ... measured on the model, which ends holding those weights ...
    assert run_evaluation(model, overfit[2]) == h.test_loss
    assert Step(model, None).evaluate(pairs_of(overfit[2])) == pytest.approx(h.test_loss, rel=1e-6)  # the model's own forward pass
    for k, v in model.state_dict().items():
        assert torch.equal(v, best[k]), f"the model's {k} is not epoch {h.best_epoch}'s after fit"
    # ... kept as a copy, not a view of the live weights
    for k, v in best.items():
        assert torch.equal(h.best_state[k], v), f"best_state[{k!r}] is not epoch {h.best_epoch}'s"


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
