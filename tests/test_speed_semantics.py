"""The speed work keeps the arithmetic: fast paths against straightforward references.

Nothing here is timed. The fast training step (``model.loss_and_grad`` + the direct fused
AdamW step) must give autograd's loss and gradients and ``AdamW.step``'s update; the
from-scratch model must compute the published per-character cell; the benchmark's
reference loop must compute the same loss as the trainer.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dino_rnn import bench
from dino_rnn.data import Example, Vocab, encode_names
from dino_rnn.models import ARCHITECTURES, build_model, count_parameters
from dino_rnn.train import _FusedAdamW, evaluate, make_optimizer, train_epoch

V = 27
NAMES = ["aachenosaurus", "abelisaurus", "t", "rex", "zby", "oviraptor", "pachycephalosaurus"]


def _example(T: int, seed: int) -> Example:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (T,), generator=g)
    return Example("?" * T, F.one_hot(ids, V).float(), torch.randint(0, V, (T,), generator=g))


def _autograd_loss_and_grads(model, e: Example):
    for p in model.parameters():
        p.grad = None
    logits, _ = model(e.x)
    loss = F.cross_entropy(logits, e.y)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


VARIANTS = [("scratch", "tanh"), ("scratch", "none"), ("rnn", "tanh"), ("lstm", "tanh"), ("gru", "tanh")]


@pytest.mark.parametrize("arch,nonlinearity", VARIANTS)
@pytest.mark.parametrize("T", [1, 2, 13, 30])
@pytest.mark.parametrize("training", [False, True])
def test_fast_gradient_equals_autograd(arch, nonlinearity, T, training):
    torch.manual_seed(1)
    model = build_model(arch, V, nonlinearity=nonlinearity)
    model.train(training)
    e = _example(T, seed=T)
    torch.manual_seed(7)  # the same dropout mask on both paths
    ref_loss, ref_grads = _autograd_loss_and_grads(model, e)
    for p in model.parameters():
        p.grad = None
    torch.manual_seed(7)
    loss = model.loss_and_grad(e.x, e.y)
    assert loss == pytest.approx(ref_loss, abs=2e-6)
    for n, p in model.named_parameters():
        assert p.grad is not None, n
        assert (p.grad - ref_grads[n]).abs().max().item() < 1e-6, n


def test_fast_gradient_declines_several_layers():
    model = build_model("lstm", V, num_layers=2)
    assert model.loss_and_grad(_example(5, 0).x, _example(5, 0).y) is None


def test_autograd_switch_gives_the_same_training(monkeypatch):
    """DINO_RNN_AUTOGRAD=1 turns the written-out gradients off; an epoch agrees either way."""
    names = [_example(T, seed=T) for T in (3, 9, 14, 6)]
    losses = {}
    for switch in ("0", "1"):
        monkeypatch.setenv("DINO_RNN_AUTOGRAD", switch)
        torch.manual_seed(0)
        model = build_model("gru", V)
        if switch == "1":
            assert model.loss_and_grad(names[0].x, names[0].y) is None
        torch.manual_seed(1)
        losses[switch] = [train_epoch(model, names, make_optimizer(model, 1e-2)) for _ in range(3)]
    assert losses["0"] == pytest.approx(losses["1"], abs=1e-5)


def test_parameter_counts_unchanged():
    counts = {a: count_parameters(build_model(a, V)) for a in ARCHITECTURES}
    assert counts == {"scratch": 10856, "rnn": 7707, "lstm": 25563, "gru": 19611}


class _PublishedCell(nn.Module):
    """The published from-scratch cell, one character per call, sharing ``model``'s weights."""

    def __init__(self, model, tanh: bool):
        super().__init__()
        self.m, self.tanh = model, tanh

    def forward(self, x):
        h = torch.zeros(1, self.m.hidden_size)
        outs = []
        for t in range(x.shape[0]):
            both = torch.cat((x[t : t + 1], h), 1)
            new_h = self.m.i2h(both)
            if self.tanh:
                new_h = torch.tanh(new_h)
            outs.append(self.m.dropout(self.m.o2o(torch.cat((new_h, self.m.i2o(both)), 1))))
            h = new_h
        return torch.cat(outs)


@pytest.mark.parametrize("nonlinearity", ["tanh", "none"])
def test_scratch_matches_published_cell(nonlinearity):
    torch.manual_seed(0)
    model = build_model("scratch", V, nonlinearity=nonlinearity).eval()
    ref = _PublishedCell(model, nonlinearity == "tanh")
    e = _example(17, seed=3)
    ours, _ = model(e.x)
    theirs = ref(e.x)
    assert (ours - theirs).abs().max().item() < 1e-6
    ga = torch.autograd.grad(F.cross_entropy(ours, e.y), list(model.parameters()))
    gb = torch.autograd.grad(F.cross_entropy(theirs, e.y), list(model.parameters()))
    assert max((a - b).abs().max().item() for a, b in zip(ga, gb)) < 1e-6
    model.loss_and_grad(e.x, e.y)  # and the hand-written gradient of the same cell
    assert max((p.grad - b).abs().max().item() for p, b in zip(model.parameters(), gb)) < 1e-6


def test_direct_fused_step_equals_adamw_step():
    torch.manual_seed(0)
    a = build_model("gru", V)
    b = copy.deepcopy(a)
    oa, ob = make_optimizer(a, 4e-4), make_optimizer(b, 4e-4)
    fast = _FusedAdamW.make(oa)
    assert fast is not None
    for k in range(5):
        for m in (a, b):
            for p in m.parameters():
                p.grad = torch.full_like(p, 0.01 * (k + 1)) + p.detach()
        fast.step()
        ob.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    sa, sb = oa.state_dict()["state"], ob.state_dict()["state"]
    for k in sb:
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(sa[k][key], sb[k][key])


def test_direct_step_declines_other_optimizers():
    m = build_model("rnn", V)
    assert _FusedAdamW.make(torch.optim.SGD(m.parameters(), lr=0.1)) is None
    assert _FusedAdamW.make(torch.optim.AdamW(m.parameters(), lr=0.1, foreach=True)) is None


def _plain_epoch(model, examples, optimizer):
    """The textbook loop: autograd, ``optimizer.step()``."""
    model.train()
    losses = []
    for e in examples:
        logits, _ = model(e.x)
        loss = F.cross_entropy(logits, e.y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return sum(losses) / len(losses)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_train_epoch_equals_plain_autograd_loop(arch):
    vocab = Vocab(NAMES)
    examples = encode_names(NAMES, vocab)
    torch.manual_seed(0)
    a = build_model(arch, len(vocab))
    b = copy.deepcopy(a)
    oa, ob = make_optimizer(a, 4e-4), make_optimizer(b, 4e-4)  # the published rate
    for _ in range(3):
        torch.manual_seed(11)
        la = train_epoch(a, examples, oa)
        torch.manual_seed(11)
        lb = _plain_epoch(b, examples, ob)
        assert la == pytest.approx(lb, abs=1e-5)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert (pa - pb).abs().max().item() < 1e-5
    assert evaluate(a, examples) == pytest.approx(evaluate(b, examples), abs=1e-5)


def test_train_epoch_is_deterministic():
    vocab = Vocab(NAMES)
    examples = encode_names(NAMES, vocab)
    out = []
    for _ in range(2):
        torch.manual_seed(3)
        m = build_model("lstm", len(vocab))
        o = make_optimizer(m, 4e-4)
        out.append([train_epoch(m, examples, o) for _ in range(2)] + [evaluate(m, examples)])
    assert out[0] == out[1]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_bench_reference_loss_equals_trainer_loss(arch):
    """Same weights, same name, eval mode: the published-style loop's loss is ours."""
    vocab = Vocab(NAMES)
    torch.manual_seed(0)
    ref = bench._reference_models(len(vocab))[arch]().eval()
    # the published from-scratch cell has no nonlinearity: nonlinearity="none" is that cell
    ours = build_model(arch, len(vocab), nonlinearity="none").eval()
    ours.load_state_dict(ref.state_dict())
    name = "pachycephalosaurus"
    with torch.no_grad():
        logits, tgt = bench.reference_forward(ref, arch, name, vocab.stoi, torch.device("cpu"))
        ref_loss = F.cross_entropy(logits, tgt).item()
    e = encode_names([name], vocab)[0]
    assert torch.equal(tgt, e.y)
    assert evaluate(ours, [e]) == pytest.approx(ref_loss, abs=1e-6)
    # and the trainer's fast gradient is the reference loop's autograd gradient
    ours.eval()
    ours.loss_and_grad(e.x, e.y)
    ref.zero_grad()
    logits, tgt = bench.reference_forward(ref, arch, name, vocab.stoi, torch.device("cpu"))
    F.cross_entropy(logits, tgt).backward()
    ref_grads = dict(ref.named_parameters())
    for n, p in ours.named_parameters():
        assert (p.grad - ref_grads[n].grad).abs().max().item() < 1e-6, n


def test_bench_smoke(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"{a}{b}saurus" for a in "abcdefghijkl" for b in "aeiou") + "\n")
    out = tmp_path / "bench.md"
    rc = bench.main(["--epochs-timed", "1", "--repeats", "1", "--archs", "rnn", "scratch",
                     "--data", str(names), "--out", str(out), "--jobs", "2"])
    assert rc == 0
    text = out.read_text()
    assert "| nn.RNN |" in text and "RNN from scratch" in text and "critical path" in text
