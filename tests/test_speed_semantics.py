"""The speed work keeps the arithmetic: fast paths against straightforward references.

Nothing here is timed. The written-out training step (:class:`dino_rnn.fast.fastgrad.WrittenOut`
+ the direct fused AdamW step) must give autograd's loss and gradients and ``AdamW.step``'s update; the
from-scratch model must compute the published per-character cell; the benchmark's
reference loop must compute the same loss as the trainer.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dino_rnn.runner import bench
from dino_rnn.fast import fastgrad
from dino_rnn import train as steps
from dino_rnn.data import Example, Vocab, encode_names
from dino_rnn.models import ARCHITECTURES, build_model, count_parameters
from dino_rnn.train import Step, make_optimizer, pairs_of
from dino_rnn.train import train_epoch as _train_epoch


def train_epoch(model, examples, optimizer, autograd=False):
    """One epoch through the step the trainer would choose (written-out unless ``autograd``)."""
    return _train_epoch(steps.make_step(model, optimizer, autograd=autograd), pairs_of(examples))

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


# The written-out gradient must match autograd's to this fraction of each tensor's largest
# entry: float rounding is ~1e-6 of it (at every weight set below); backpropagation through
# time cut off after 15 or 20 steps is off by more than 1e-4 at the scaled and trained weights
# (``test_the_gradient_checks_would_catch_truncated_backprop``).
GRAD_RTOL = 1e-5


def _relative_errors(grads: dict, ref: dict) -> dict:
    """Per tensor: max |grad - ref| / max |ref| (an all-zero ``ref`` must be matched exactly)."""
    out = {}
    for n, r in ref.items():
        diff, size = (grads[n] - r).abs().max().item(), r.abs().max().item()
        out[n] = diff / size if size else (0.0 if diff == 0 else math.inf)
    return out


def _check_fast_gradient(model, e: Example, abs_tol: float | None = None):
    """The written-out gradient against ``loss.backward()``, the same dropout mask on both paths."""
    torch.manual_seed(7)
    ref_loss, ref_grads = _autograd_loss_and_grads(model, e)
    for p in model.parameters():
        p.grad = None
    torch.manual_seed(7)
    loss = fastgrad.loss_and_grad(model, e.x, e.y)
    assert loss == pytest.approx(ref_loss, rel=1e-6, abs=2e-6)
    grads = {}
    for n, p in model.named_parameters():
        assert p.grad is not None, n
        grads[n] = p.grad.clone()
        if abs_tol is not None:
            assert (p.grad - ref_grads[n]).abs().max().item() < abs_tol, n
    for n, err in _relative_errors(grads, ref_grads).items():
        assert err < GRAD_RTOL, f"{n}: max |written-out - autograd| is {err:.2e} of max |autograd|"


VARIANTS = [("scratch", "tanh"), ("scratch", "none"), ("rnn", "tanh"), ("lstm", "tanh"), ("gru", "tanh")]
SCALED = 2.0  # initial weights times this: the recurrence carries gradient 20+ steps back


def _model(arch, nonlinearity, scale=1.0):
    """The seeded initial weights, times ``scale``."""
    torch.manual_seed(1)
    model = build_model(arch, V, nonlinearity=nonlinearity)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model


@pytest.mark.parametrize("arch,nonlinearity", VARIANTS)
@pytest.mark.parametrize("T", [1, 2, 13, 30])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("scale", [1.0, SCALED])
def test_fast_gradient_equals_autograd(arch, nonlinearity, T, training, scale):
    """At the initial weights (also within 1e-6 absolute) and at weights drawn twice as large."""
    model = _model(arch, nonlinearity, scale)
    model.train(training)
    _check_fast_gradient(model, _example(T, seed=T), abs_tol=1e-6 if scale == 1.0 else None)


@pytest.fixture
def one_thread():
    """Torch on one intra-op thread, as the trainer runs (tiny ops; spare threads only wait)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(names, vocab):
    """Every variant after two epochs on 300 Dino Names at lr 1e-2 (the trainer's own step),
    and the two longest names (25 and 26 characters)."""
    assert len(vocab) == V
    train = encode_names(names[:300], vocab)
    models = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the trainer runs
    try:
        for arch, nonlinearity in VARIANTS:
            model = _model(arch, nonlinearity)
            optimizer = make_optimizer(model, 1e-2)
            for _ in range(2):
                train_epoch(model, train, optimizer)
            models[arch, nonlinearity] = model
    finally:
        torch.set_num_threads(threads)
    longest = encode_names(sorted(names, key=len)[-2:], vocab)
    assert [e.x.shape[0] for e in longest] == [25, 26]
    return models, longest


@pytest.mark.parametrize("arch,nonlinearity", VARIANTS)
@pytest.mark.parametrize("training", [False, True])
def test_fast_gradient_equals_autograd_at_trained_weights(
    arch, nonlinearity, training, trained, one_thread
):
    """Trained weights carry gradient far back: the longest real names, 30 random characters."""
    models, longest = trained
    model = copy.deepcopy(models[arch, nonlinearity])
    model.train(training)
    for e in [*longest, _example(30, seed=30), _example(13, seed=13)]:
        _check_fast_gradient(model, e)


def _truncated_backprop_grads(model, e: Example, K: int) -> dict:
    """Autograd's gradient (eval mode) with backpropagation through time cut off after K steps.

    Each step's loss reaches back through at most K steps: the state K steps before it is
    taken from a no-grad pass over the whole name, as a constant.
    """
    model.eval()
    T = e.x.shape[0]
    with torch.no_grad():
        states = [None]  # states[t]: the state before step t (None: zeros)
        for t in range(T):
            states.append(model(e.x[t : t + 1], states[-1])[1])
    params = [p for _, p in model.named_parameters()]
    total = [torch.zeros_like(p) for p in params]
    for s in range(T):
        a = max(0, s - K + 1)
        logits, _ = model(e.x[a : s + 1], states[a])
        loss = F.cross_entropy(logits[-1:], e.y[s : s + 1]) / T
        for acc, g in zip(total, torch.autograd.grad(loss, params)):
            acc += g
    return {n: g for (n, _), g in zip(model.named_parameters(), total)}


@pytest.mark.parametrize("arch,nonlinearity", VARIANTS)
def test_the_gradient_checks_would_catch_truncated_backprop(arch, nonlinearity, trained, one_thread):
    """At the scaled and the trained weights, on names of 25 to 30 steps, a gradient that cut
    backpropagation through time after 15 or 20 steps is off by over 10 x GRAD_RTOL."""
    models, longest = trained
    cases = [(_model(arch, nonlinearity, SCALED), _example(30, seed=30))]
    cases += [(copy.deepcopy(models[arch, nonlinearity]), e) for e in [*longest, _example(30, seed=30)]]
    for k, (model, e) in enumerate(cases):
        model.eval()
        _, full = _autograd_loss_and_grads(model, e)
        if k == 0:  # the helper itself: uncut, it is autograd's gradient
            uncut = _truncated_backprop_grads(model, e, K=e.x.shape[0])
            assert max(_relative_errors(uncut, full).values()) < GRAD_RTOL
        for K in (15, 20):
            cut = _truncated_backprop_grads(model, e, K)
            assert max(_relative_errors(cut, full).values()) > 10 * GRAD_RTOL, (K, e.x.shape[0])


def test_fast_gradient_declines_several_layers_and_autograd_takes_over():
    model = build_model("lstm", V, num_layers=2)
    assert "one layer" in fastgrad.unsupported(model)
    with pytest.raises(ValueError, match="one layer"):
        fastgrad.WrittenOut(model)
    assert steps.make_step(model, make_optimizer(model, 1e-3)).gradient == "autograd"
    assert steps.make_step(build_model("lstm", V), make_optimizer(model, 1e-3)).gradient == "written-out"


@pytest.mark.parametrize("how", ["environment", "argument"])
def test_autograd_switch_gives_the_same_training(monkeypatch, how):
    """DINO_RNN_AUTOGRAD=1 or ``autograd=True`` turn the written-out gradients off; an epoch agrees either way."""
    names = [_example(T, seed=T) for T in (3, 9, 14, 6)]
    losses = {}
    for switch in (False, True):
        if how == "environment":
            monkeypatch.setenv("DINO_RNN_AUTOGRAD", "1" if switch else "0")
        torch.manual_seed(0)
        model = build_model("gru", V)
        optimizer = make_optimizer(model, 1e-2)
        step = steps.make_step(model, optimizer, autograd=switch and how == "argument")
        assert step.gradient == ("autograd" if switch else "written-out")
        torch.manual_seed(1)
        losses[switch] = [_train_epoch(step, pairs_of(names)) for _ in range(3)]
    assert losses[False] == pytest.approx(losses[True], abs=1e-5)
    assert losses[False] != losses[True]  # two paths really ran (float rounding differs)


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
    fastgrad.loss_and_grad(model, e.x, e.y)  # and the hand-written gradient of the same cell
    assert max((p.grad - b).abs().max().item() for p, b in zip(model.parameters(), gb)) < 1e-6


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
    assert Step(a, None).evaluate(pairs_of(examples)) == pytest.approx(Step(b, None).evaluate(pairs_of(examples)), abs=1e-5)


def test_train_epoch_is_deterministic():
    vocab = Vocab(NAMES)
    examples = encode_names(NAMES, vocab)
    out = []
    for _ in range(2):
        torch.manual_seed(3)
        m = build_model("lstm", len(vocab))
        o = make_optimizer(m, 4e-4)
        out.append([train_epoch(m, examples, o) for _ in range(2)] + [Step(m, None).evaluate(pairs_of(examples))])
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
    assert Step(ours, None).evaluate(pairs_of([e])) == pytest.approx(ref_loss, abs=1e-6)
    # and the trainer's fast gradient is the reference loop's autograd gradient
    ours.eval()
    fastgrad.loss_and_grad(ours, e.x, e.y)
    ref.zero_grad()
    logits, tgt = bench.reference_forward(ref, arch, name, vocab.stoi, torch.device("cpu"))
    F.cross_entropy(logits, tgt).backward()
    ref_grads = dict(ref.named_parameters())
    for n, p in ours.named_parameters():
        assert (p.grad - ref_grads[n].grad).abs().max().item() < 1e-6, n


@pytest.mark.slow
def test_bench_smoke(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"{a}{b}saurus" for a in "abcdefghijkl" for b in "aeiou") + "\n")
    out = tmp_path / "bench.md"
    rc = bench.main(["--epochs-timed", "1", "--repeats", "1", "--archs", "rnn", "scratch",
                     "--data", str(names), "--out", str(out), "--jobs", "2"])
    assert rc == 0
    text = out.read_text()
    assert "| nn.RNN |" in text and "RNN from scratch" in text and "critical path" in text
    # where a step's time goes: gradient, optimizer, bookkeeping, per model
    profile = text.split("## Where a step's time goes (ours)")[1].split("\n## ")[0]
    rows = [line for line in profile.splitlines() if line.startswith("| nn.RNN |") or line.startswith("| RNN from scratch")]
    assert len(rows) == 2 and all("| written-out |" in r for r in rows)
    for r in rows:
        cells = [c.strip() for c in r.strip("|").split("|")]
        grad, opt, book, total = map(float, cells[2:6])
        assert grad > 0 and opt > 0 and book > 0 and total == pytest.approx(grad + opt + book, abs=1.5)
    assert "## The study against the reference" not in text  # only with --study


def test_bench_study_section_compares_with_the_reference():
    """The study's wall time against 40 x the reference's seconds per epoch, summed over the four models."""
    rows = {a: {"ref": r, "ours": 0.1} for a, r in zip(bench.ARCHS, (4.0, 2.0, 2.0, 4.0))}  # 480 s of reference
    studies = [
        {"seeds": "0", "n_seeds": 1, "wall": 60.0, "ok": "7 of 7", "notebooks": {"03_lstm.ipynb": 20.0, "05_anbn_lab.ipynb": 35.0}},
        {"seeds": "0-4", "n_seeds": 5, "wall": 300.0, "ok": "35 of 35", "notebooks": {"03_lstm.ipynb": 21.0, "05_anbn_lab.ipynb": 40.0}},
    ]

    class Args:
        jobs = 2

    text = "\n".join(bench._study_section(rows, studies, Args))
    assert "**480 s**" in text
    one, five = [line for line in text.splitlines() if line.startswith("| `--seeds")]
    assert "| 60 | 1/8.0 (0.12) | at most 0.125 | yes |" in one and "05_anbn_lab.ipynb (35 s)" in one
    assert "| 300 | 1/1.6 (0.62) | at most 0.5 | no |" in five
    assert "| 05_anbn_lab.ipynb | 35 | 40 |" in text
    assert "needs all four models" in "\n".join(bench._study_section({"rnn": rows["rnn"]}, studies, Args))


# ---------------------------------------------------------------------------
# Gradient clipping (CLIP): the same on every path
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_clipping_gives_the_same_losses_with_autograd_and_the_compiled_path(arch):
    """An epoch with CLIP on: the plain step (loss.backward(), clip_grad_norm_, AdamW) and the
    compiled one give the same losses and weights to float rounding; and the clipping bites
    (without it, both end elsewhere), so a path that ignored CLIP would fail here."""
    vocab = Vocab(NAMES * 3)
    examples = encode_names(NAMES * 3, vocab)

    def run(clip, autograd):
        torch.manual_seed(0)
        model = build_model(arch, len(vocab), 32)
        step = steps.make_step(model, make_optimizer(model, 1e-2), clip=clip, autograd=autograd)
        assert step.gradient == ("autograd" if autograd else "written-out")
        torch.manual_seed(1)  # the same dropout draws on both paths
        losses = [_train_epoch(step, pairs_of(examples)) for _ in range(2)]
        return losses, torch.cat([p.detach().flatten() for p in model.parameters()])

    (la, wa), (lc, wc) = run(0.05, True), run(0.05, False)
    assert lc == pytest.approx(la, rel=1e-5)
    torch.testing.assert_close(wc, wa, rtol=1e-4, atol=1e-5)
    _, unclipped = run(None, False)
    assert (unclipped - wc).abs().max() > 1e-3
