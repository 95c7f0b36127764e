"""The checks of notebook 01's exercises: the from-scratch cell, one training step, the sampling loop.

Each check runs the student's function on a small random problem (a vocabulary of 5 or 6
symbols, a few hidden units, seeded) beside the package's own (:func:`dino_rnn.models.scratch_forward`,
:func:`dino_rnn.train.train_step`, :func:`dino_rnn.sample.generate`). A wrong answer is looked up
in the catalogue of mistakes below; each mistake's output is computed by calling the package's
own function differently (a copy of the model without its tanh, an optimizer that forgets its
``zero_grad``, a vocabulary without an end marker, ...), so the catalogue cannot drift from the
solution.

    check.cell(scratch_forward)       Exercise A: logits and final state, both nonlinearities, gradients
    check.train_step(train_step)      Exercise B: two steps of SGD, with and without clipping
    check.generate(generate)          Exercise C: greedy and seeded temperature names
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from dino_rnn import sample, train
from dino_rnn.data import Vocab
from dino_rnn.exercises.base import Exercise, ExerciseError, Mistake, call, check_array, close, diagnose
from dino_rnn.models import ScratchRNN, scratch_forward

V, H, T = 5, 4, 6  # the cell's problem: vocabulary, hidden units, characters
EXERCISES = {
    "scratch_forward": Exercise("A", "the cell from nn.Linear layers"),
    "train_step": Exercise("B", "one training step"),
    "generate": Exercise("C", "the sampling loop"),
}


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def _cell(nonlinearity: str = "tanh", seed: int = 0, dtype=torch.float64) -> ScratchRNN:
    """A small from-scratch cell with random weights, in eval mode (no dropout)."""
    torch.manual_seed(seed)
    cell = ScratchRNN(V, H, nonlinearity).to(dtype)
    with torch.no_grad():
        for p in cell.parameters():
            p.normal_(0.0, 0.6)
    return cell.eval()


def _name(seed: int, length: int = T, dtype=torch.float64):
    """One-hot rows of a random name (length, V) and its targets (the next characters)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (length + 1,), generator=g)
    return nn.functional.one_hot(ids[:-1], V).to(dtype), ids[1:]


# ---------------------------------------------------------------------------
# Exercise A: the cell
# ---------------------------------------------------------------------------


def _forward(fn, cell, x, state):
    logits, h = fn(cell, x, state)
    return _np(logits), _np(h)


def _cell_mistakes(cell: ScratchRNN, x, h0) -> list[Mistake]:
    other = copy.deepcopy(cell)
    other.nonlinearity = "none" if cell.nonlinearity == "tanh" else "tanh"
    run = lambda c=cell, s=h0: _forward(scratch_forward, c, x, s)  # noqa: E731

    def restarted():  # every character read from h0: the state not carried
        rows = [scratch_forward(cell, x[t : t + 1], h0) for t in range(len(x))]
        return _np(torch.cat([r[0] for r in rows])), _np(rows[-1][1])

    wrong_act = ("tanh is missing: with cell.nonlinearity == 'tanh' the new hidden state is tanh(i2h([x_t; h]))"
                 if cell.nonlinearity == "tanh" else
                 "tanh is applied although cell.nonlinearity is 'none' (the published cell): apply it only for 'tanh'")
    return [
        Mistake("the hidden state is not carried between steps: every step starts again from the initial "
                "state; give each step the h the step before computed", restarted),
        Mistake(wrong_act, lambda: run(other)),
        Mistake("the state argument is ignored: when state is given, the first step starts from it "
                "(zeros only when it is None)", lambda: run(cell, None)),
    ]


def _check_cell_once(ex: Exercise, fn, nonlinearity: str) -> None:
    cell = _cell(nonlinearity)
    x, _ = _name(1)
    h0 = torch.randn(H, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 0.5
    with torch.no_grad():
        got = call(ex, fn, cell, x, h0)
        if not (isinstance(got, tuple) and len(got) == 2):
            raise ex.fail(f"it should return (logits, state), not {type(got).__name__}")
        got = (_np(got[0]), _np(got[1]))
        want = _forward(scratch_forward, cell, x, h0)
        check_array(ex, "logits", got[0], want[0], tol=np.inf)  # shape and finiteness first
        check_array(ex, "the final state", got[1], want[1], tol=np.inf)
        if not close(got, want):
            diagnose(ex, got, _cell_mistakes(cell, x, h0))
            check_array(ex, f"logits (nonlinearity {nonlinearity!r})", got[0], want[0])
            check_array(ex, f"the final state (nonlinearity {nonlinearity!r})", got[1], want[1])


def _check_cell_gradient(ex: Exercise, fn) -> None:
    """The outputs right, the gradient must reach every layer the same way (no detach, no NumPy)."""
    x, _ = _name(3)
    grads = []
    for f in (fn, scratch_forward):
        cell = _cell("tanh", seed=4)
        logits, h = f(cell, x, None)
        if not (isinstance(logits, torch.Tensor) and logits.requires_grad):
            raise ex.fail("the logits carry no gradient: keep the computation in torch (no .detach(), "
                          "no .numpy(), no torch.no_grad()) so that loss.backward() can train the layers")
        (logits.sin().sum() + h.sum()).backward()
        grads.append({k: _np(p.grad) if p.grad is not None else np.zeros(p.shape) for k, p in cell.named_parameters()})
    for k in grads[1]:
        check_array(ex, f"the gradient of {k} (through your forward pass)", grads[0][k], grads[1][k])


def _check_dropout(ex: Exercise, fn) -> None:
    """In training mode, dropout acts once on the stacked (T, V) logits, as cell.dropout draws it."""
    x, _ = _name(5)
    out = []
    for f in (fn, scratch_forward):
        cell = _cell("tanh", seed=6).train()
        torch.manual_seed(7)
        with torch.no_grad():
            out.append(_np(f(cell, x, None)[0]))
    if close(out[0], _np(scratch_forward(_cell("tanh", seed=6), x, None)[0])):
        raise ex.fail("dropout is missing: apply cell.dropout to the logits (it acts only in training mode)")
    check_array(ex, "the logits in training mode (dropout: once, on the stacked (T, V) logits)", out[0], out[1])


def cell(fn) -> None:
    """Exercise A: ``scratch_forward(cell, x, state)`` against the package's, with tanh and without."""
    ex = EXERCISES["scratch_forward"]
    with torch.random.fork_rng():
        for nonlinearity in ("tanh", "none"):
            _check_cell_once(ex, fn, nonlinearity)
        _check_cell_gradient(ex, fn)
        _check_dropout(ex, fn)
    ex.passed("The logits and the final state equal the package's, with tanh and without, the gradient "
              "reaches every layer, and dropout acts as it should. The rest of this notebook runs your cell.")


# ---------------------------------------------------------------------------
# Exercise B: one training step
# ---------------------------------------------------------------------------


class _NoZeroGrad:
    """An optimizer whose zero_grad does nothing: the gradients add up from step to step."""

    def __init__(self, optimizer):
        self.optimizer = optimizer

    def zero_grad(self, *args, **kwargs) -> None:
        pass

    def step(self) -> None:
        self.optimizer.step()


class _NoStep(_NoZeroGrad):
    """An optimizer whose step does nothing: the parameters never move."""

    def zero_grad(self, *args, **kwargs) -> None:
        self.optimizer.zero_grad(*args, **kwargs)

    def step(self) -> None:
        pass


class _DropLast(nn.Module):
    """The model with its last row of logits dropped: the loss of logits[:-1] against y[1:]."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, state=None):
        logits, state = self.model(x, state)
        return logits[:-1], state


def _two_steps(fn, clip, *, wrap=lambda o: o, model_of=lambda m: m, targets=lambda x, y: y):
    """Two steps of ``fn`` (on two names) with SGD on a fresh copy of the small model:
    the two losses and the parameters after them."""
    model = _cell("tanh", seed=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for seed in (11, 12):
        x, y = _name(seed)
        losses.append(fn(model_of(model), wrap(opt), x, targets(x, y), clip))
    return (*losses, {k: _np(p) for k, p in model.named_parameters()})


def _step_mistakes(clip) -> list[Mistake]:
    step = train.train_step
    out = [
        Mistake("the gradients add up from step to step: call optimizer.zero_grad() before loss.backward() "
                "(PyTorch accumulates .grad)", lambda: _two_steps(step, clip, wrap=_NoZeroGrad)),
        Mistake("the parameters do not move: call optimizer.step() after loss.backward() (and zero_grad() "
                "before backward, not between backward and step)", lambda: _two_steps(step, clip, wrap=_NoStep)),
        Mistake("the targets are off by one: the loss compares the logits with the input characters (x) "
                "instead of the next ones (y)", lambda: _two_steps(step, clip, targets=lambda x, y: x.argmax(dim=1))),
        Mistake("the targets are off by one: the logits at step t are scored against y[t], the next character, "
                "not against y[t + 1] (no shift is needed: y is already shifted)",
                lambda: _two_steps(step, clip, model_of=_DropLast, targets=lambda x, y: y[1:])),
    ]
    if clip is not None:
        out.append(Mistake(f"clip is ignored: with clip={clip} call nn.utils.clip_grad_norm_(model.parameters(), "
                           "clip) after loss.backward() and before optimizer.step()",
                           lambda: _two_steps(step, None)))
    else:
        out.append(Mistake("the gradient is clipped although clip is None: clip only when clip is not None",
                           lambda: _two_steps(step, 1e-3)))
    return out


def train_step(fn) -> None:
    """Exercise B: ``train_step(model, optimizer, x, y, clip)`` for two steps, without and with clipping."""
    ex = EXERCISES["train_step"]
    if not callable(fn):
        raise ex.fail(f"expected a function, got {type(fn).__name__}")
    with torch.random.fork_rng():
        for clip in (None, 0.05):
            got = _two_steps(lambda *a: call(ex, fn, *a), clip)
            for i in (0, 1):
                if not isinstance(got[i], float):
                    raise ex.fail(f"it returns a {type(got[i]).__name__}; return the loss as a Python float "
                                  "(loss.item())")
            want = _two_steps(train.train_step, clip)
            if not close(got, want):
                diagnose(ex, got, _step_mistakes(clip))
                check_array(ex, f"the first step's loss (clip={clip})", got[0], want[0])
                check_array(ex, f"the second step's loss (clip={clip})", got[1], want[1])
                for k in want[2]:
                    check_array(ex, f"{k} after two steps (clip={clip})", got[2][k], want[2][k])
    ex.passed("The losses and the parameters after two steps equal the package's, with and without "
              "clipping. The rest of this notebook trains with your step.")


# ---------------------------------------------------------------------------
# Exercise C: the sampling loop
# ---------------------------------------------------------------------------

VOCAB = Vocab(["abcd"])  # '.', a, b, c, d: V symbols
STARTS = ("a", "db", "c", "ba", "d")
MAX_LENGTH = 10
TEMPERATURE = 0.7
GLOBAL_SEED = 99  # torch's global generator, seeded before every loop: one that ignores `generator` draws from it


class _Counted(nn.Module):
    """The model, refusing to run more often than any correct loop needs (a loop that never ends)."""

    def __init__(self, model, limit: int):
        super().__init__()
        self.model, self.limit, self.calls = model, limit, 0

    def forward(self, x, state=None):
        self.calls += 1
        if self.calls > self.limit:
            raise ExerciseError(f"{EXERCISES['generate']}: the loop called the model more than {self.limit} times "
                                f"for names of at most {MAX_LENGTH} characters: does it stop at max_length?")
        return self.model(x, state)


class _Forgetful(nn.Module):
    """The model, every call starting from the initial state: the state not fed back."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, state=None):
        return self.model(x)


class _NoEnd(Vocab):
    """The vocabulary with no end marker the loop can meet: it never stops at '.'."""

    end = -1


def _sampler():
    """The small model generate runs on: a few names end with '.', others reach MAX_LENGTH."""
    model = _cell("tanh", seed=3, dtype=torch.float32)
    with torch.no_grad():
        model.o2o.bias[VOCAB.end] -= 0.5  # seed and bias chosen so that every mistake below shows
    return model


def _names(fn, temperature=None, *, model_of=lambda m: m, vocab=VOCAB, max_length=MAX_LENGTH, seed=0):
    """One name per start of :data:`STARTS`, all drawn with one generator seeded ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    model = _Counted(model_of(_sampler()), limit=len(STARTS) * (max_length + 2))
    torch.manual_seed(GLOBAL_SEED)
    return [fn(model, vocab, s, temperature=temperature, generator=gen, max_length=max_length) for s in STARTS]


def _sampling_mistakes(temperature) -> list[Mistake]:
    g = sample.generate
    out = [
        Mistake("it does not stop at the end marker: when the next character is '.' (vocab.end), stop "
                "without adding it", lambda: _names(g, temperature, vocab=_NoEnd.from_symbols(VOCAB.itos))),
        Mistake("the name ends with the end marker: stop at '.' without adding it to the name",
                lambda: [n + "." if len(n) < MAX_LENGTH else n for n in _names(g, temperature)]),
        Mistake("the state is not fed back: give the model the state it returned with the next character, "
                "model(one_hot([next]), state), or every step starts again from zeros",
                lambda: _names(g, temperature, model_of=_Forgetful)),
        Mistake("the names are one character too long: stop when the name has max_length characters",
                lambda: _names(g, temperature, max_length=MAX_LENGTH + 1)),
    ]
    if temperature:
        out += [
            Mistake("it is greedy although a temperature is given: sample the next character from "
                    "softmax(logits / temperature) with torch.multinomial(..., generator=generator)",
                    lambda: _names(g, None)),
            Mistake("the temperature is ignored: divide the logits by the temperature before the softmax",
                    lambda: _names(g, 1.0)),
            Mistake("the logits are multiplied by the temperature: divide them by it",
                    lambda: _names(g, 1.0 / temperature)),
            Mistake("the draws do not use the generator given: pass generator=generator to torch.multinomial "
                    "(so that a seed repeats the names)", lambda: _names(g, temperature, seed=GLOBAL_SEED)),
        ]
    return out


def generate(fn) -> None:
    """Exercise C: ``generate(model, vocab, start, ...)``: greedy names, and seeded names at a temperature."""
    ex = EXERCISES["generate"]
    if not callable(fn):
        raise ex.fail(f"expected a function, got {type(fn).__name__}")
    with torch.random.fork_rng():
        for temperature in (None, TEMPERATURE):
            got, want = _names(fn, temperature), _names(sample.generate, temperature)
            how = "greedy" if temperature is None else f"temperature {temperature}"
            if not (isinstance(got, list) and all(isinstance(n, str) for n in got)):
                raise ex.fail(f"it should return the name as a str, not {type(got[0]).__name__} ({how})")
            if got != want:
                for m in _sampling_mistakes(temperature):
                    if m.returns() == got:
                        raise ex.fail(f"{m.message} ({how})")
                bad = next(i for i in range(len(got)) if got[i] != want[i])
                raise ex.fail(f"the {how} name from {STARTS[bad]!r} is {got[bad]!r}, it should be {want[bad]!r}")
    ex.passed("The greedy names and the names sampled at a temperature equal the package's. "
              "The rest of this notebook samples with your loop.")


__all__ = ["EXERCISES", "cell", "train_step", "generate"]
