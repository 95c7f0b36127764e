"""The lab's synthetic task, aⁿbⁿ: data, two measures of what was learned, and the PyTorch twin.

The data (as in the lab)
    256 sequences ``a^n b^n EOS`` with n drawn uniformly from 1..11 by NumPy's legacy
    generator seeded with 42 (``np.random.seed(42); np.random.randint(1, 12)`` per
    sequence — the lab's exact draw). Tokens ``a, b, EOS`` and ``UNK`` for anything
    unseen (indices 0..3); one-hot inputs; split 80/10/10 in order as the lab did
    (``int(0.8·256) = 204`` train, the next 25 validation, the last 25 test — two
    sequences are left out, as in the lab). Each sequence gives ``input = seq[:-1]``,
    ``target = seq[1:]``.

    There are only 11 distinct sequences, so validation and test contain sequences
    seen in training: the validation loss says how well the training set is fitted, not
    whether anything generalises. Extrapolation (below) is the test of that.

What was learned (the lab only eyeballed it)
    *Determined positions.* After ``a^n``, whether the next token is another ``a`` or the
    first ``b`` cannot be known. Once the first ``b`` has been read, everything is
    determined: n−1 more ``b``'s, then ``EOS``. :func:`determined_accuracy` scores the
    model's argmax prediction (teacher forcing: the true prefix is fed) at exactly those
    positions — the targets ``seq[n+1 .. 2n]``, n per sequence — pooled over a split; it
    also reports the share of sequences whose determined positions are *all* right.

    *Extrapolation.* :func:`complete` feeds ``a^n b`` and lets the model continue
    greedily (each argmax fed back as the next input). The completion is *exact* when the
    model emits exactly n−1 further ``b``'s and then ``EOS``. :func:`extrapolation`
    checks n = 12..20, all longer than any training sequence, and
    :func:`largest_exact` reports the largest n such that *every* n' in 12..n is
    completed exactly (``None`` when n = 12 already fails).

The PyTorch twin (the lab's last part)
    :class:`TorchTwin` is ``nn.LSTM`` (hidden 50) + ``nn.Linear`` without bias, trained by
    :func:`train_torch` with Adam (the lab's lr 3e-4), one step per sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from dino_rnn.train import History, make_step, run_epochs

A, B, EOS, UNK = "a", "b", "EOS", "UNK"
TOKENS = (A, B, EOS, UNK)
INDEX = {t: i for i, t in enumerate(TOKENS)}
N_MIN, N_MAX = 1, 11  # n in training data, inclusive
EXTRAPOLATE = tuple(range(12, 21))
DATA_SEED = 42  # the lab's NumPy seed
N_SEQUENCES = 256

# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def generate(num_sequences: int = N_SEQUENCES, seed: int = DATA_SEED, n_max: int = N_MAX) -> list[list[str]]:
    """``num_sequences`` token lists ``['a']*n + ['b']*n + ['EOS']``, n uniform in 1..n_max.

    Drawn with ``np.random.RandomState(seed).randint(1, n_max + 1)`` per sequence, which
    is what the lab's ``np.random.seed(42)`` then ``np.random.randint(1, 12)`` draws.
    """
    rs = np.random.RandomState(seed)
    out = []
    for _ in range(num_sequences):
        n = int(rs.randint(1, n_max + 1))
        out.append(sequence(n))
    return out


def sequence(n: int) -> list[str]:
    return [A] * n + [B] * n + [EOS]


def encode(tokens: Sequence[str]) -> list[int]:
    """Token strings to indices; anything not a, b or EOS becomes UNK."""
    return [INDEX.get(t, INDEX[UNK]) for t in tokens]


def decode(ids) -> list[str]:
    return [TOKENS[int(i)] for i in ids]


def one_hot(ids, size: int = len(TOKENS)) -> np.ndarray:
    """(T,) indices -> (T, size) float64 one-hot rows."""
    ids = np.asarray(ids, dtype=np.intp)
    x = np.zeros((len(ids), size))
    x[np.arange(len(ids)), ids] = 1.0
    return x


def input_and_target(ids):
    """What a language model reads and what it must predict, from one sequence's token indices:
    the input is every token but the last, the target at each step is the token that follows it."""
    ### BEGIN SOLUTION
    return ids[:-1], ids[1:]
    ### END SOLUTION


@dataclass
class Split:
    """One split: the sequences, and each as (input indices, target indices)."""

    sequences: list[list[str]]
    pairs: list[tuple[np.ndarray, np.ndarray]] = field(init=False)

    def __post_init__(self):
        self.pairs = [input_and_target(np.asarray(encode(s), dtype=np.intp)) for s in self.sequences]

    def __len__(self) -> int:
        return len(self.sequences)


def split(sequences: list, p_train: float = 0.8, p_valid: float = 0.1, p_test: float = 0.1) -> tuple[Split, Split, Split]:
    """The lab's split, in order: the first 80% train, the next 10% validation, the last 10% test."""
    n = len(sequences)
    n_train, n_valid, n_test = int(n * p_train), int(n * p_valid), int(n * p_test)
    if min(n_train, n_valid, n_test) < 1:
        raise ValueError(f"{n} sequences are too few for an 80/10/10 split with every part non-empty")
    return (
        Split(sequences[:n_train]),
        Split(sequences[n_train : n_train + n_valid]),
        Split(sequences[n - n_test :]),
    )


def load(num_sequences: int = N_SEQUENCES, seed: int = DATA_SEED) -> tuple[Split, Split, Split]:
    """The lab's data set, split: 204 / 25 / 25 sequences."""
    return split(generate(num_sequences, seed))


# ---------------------------------------------------------------------------
# What was learned
# ---------------------------------------------------------------------------

# A model, for the measures, is a function from a prefix of token indices to its
# logits (or probabilities) at every position: (T,) -> (T, 4). Only the argmax is used.
LogitsFn = Callable[[Sequence[int]], np.ndarray]


def determined_positions(n: int) -> range:
    """Input positions (0-based, into ``seq[:-1]``) whose next token is determined: n..2n−1.

    At input position t the model has read ``seq[0..t]``; the first b is ``seq[n]``, so
    from t = n on the targets (n−1 b's, then EOS) follow from what was read.
    """
    return range(n, 2 * n)


def determined_accuracy(logits_fn: LogitsFn, sequences: list[list[str]]) -> dict:
    """Argmax accuracy at the determined positions, with the true prefix fed (teacher forcing).

    Returns ``{"accuracy": correct / positions, "correct", "positions", "sequences_all_right":
    share of sequences with every determined position right}``.
    """
    correct = total = all_right = 0
    for s in sequences:
        n = s.index(B)
        ids = encode(s)
        pred = np.asarray(logits_fn(ids[:-1])).argmax(axis=-1)
        pos = list(determined_positions(n))
        hits = sum(int(pred[t] == ids[t + 1]) for t in pos)
        correct += hits
        total += len(pos)
        all_right += hits == len(pos)
    return {
        "accuracy": correct / total if total else math.nan,
        "correct": correct,
        "positions": total,
        "sequences_all_right": all_right / len(sequences) if sequences else math.nan,
    }


def always_b_accuracy(sequences: list[list[str]]) -> float:
    """The determined-position accuracy of a model that always predicts b: Σ(n−1) / Σn.

    Everything above this is the model knowing *where* EOS goes.
    """
    ns = [s.index(B) for s in sequences]
    return sum(n - 1 for n in ns) / sum(ns) if ns else math.nan


def complete(logits_fn: LogitsFn, n: int, max_new: int | None = None) -> list[str]:
    """Feed ``a^n b``, then greedily emit tokens until EOS, a wrong token, or ``max_new``.

    Stops early at the first token that is not b (it can no longer be exact), so the
    result is the emitted tokens up to and including the first non-b.
    """
    ids = encode([A] * n + [B])
    out: list[str] = []
    max_new = 2 * n + 5 if max_new is None else max_new
    ### BEGIN SOLUTION
    while len(out) < max_new:
        nxt = int(np.asarray(logits_fn(ids))[-1].argmax())  # the most likely next token after all of ids
        out.append(TOKENS[nxt])
        if nxt != INDEX[B]:
            break
        ids.append(nxt)  # fed back: the next prediction reads it
    ### END SOLUTION
    return out


def is_exact(n: int, emitted: list[str]) -> bool:
    """Exactly n−1 b's, then EOS."""
    return emitted == [B] * (n - 1) + [EOS]


def extrapolation(logits_fn: LogitsFn, ns: Sequence[int] = EXTRAPOLATE, complete_fn=None) -> list[dict]:
    """Per n: ``{"n", "exact", "b_emitted" (b's before the first non-b), "then" (that token)}``;
    ``complete_fn`` in place of :func:`complete` (a student's)."""
    rows = []
    for n in ns:
        out = (complete_fn or complete)(logits_fn, n)
        n_b = len(out) - (0 if out and out[-1] == B else 1) if out else 0
        rows.append({"n": int(n), "exact": is_exact(n, out), "b_emitted": n_b, "then": out[-1] if out and out[-1] != B else None})
    return rows


def largest_exact(rows: list[dict], start: int = EXTRAPOLATE[0]) -> int | None:
    """The largest n with every n' in start..n completed exactly; None if n = start fails."""
    by_n = {r["n"]: r["exact"] for r in rows}
    best, n = None, start
    while by_n.get(n):
        best, n = n, n + 1
    return best


# ---------------------------------------------------------------------------
# The PyTorch twin
# ---------------------------------------------------------------------------


def make_torch_twin(vocab_size: int = len(TOKENS), hidden: int = 50, seed: int = 0):
    """The lab's PyTorch LSTM: ``nn.LSTM(V, hidden)`` + ``nn.Linear(hidden, V, bias=False)``, seeded."""
    import torch

    torch.manual_seed(seed)
    return __getattr__("TorchTwin")(vocab_size, hidden)


def _twin_class():
    import torch
    from torch import nn

    class TorchTwin(nn.Module):
        """``nn.LSTM`` + a bias-free Linear read-out: ``logits, state = model(x (T, V), state)``."""

        def __init__(self, vocab_size: int = len(TOKENS), hidden: int = 50):
            super().__init__()
            self.lstm = nn.LSTM(vocab_size, hidden, num_layers=1)
            self.l_out = nn.Linear(hidden, vocab_size, bias=False)

        def forward(self, x: torch.Tensor, state=None):
            out, state = self.lstm(x, state)
            return self.l_out(out), state

        def written_out_parts(self):  # for the written-out gradient (dino_rnn.fast.fastgrad)
            return self.lstm, self.l_out, None

    return TorchTwin


def __getattr__(name):  # TorchTwin is built on first use
    if name == "TorchTwin":
        if "TorchTwin" not in globals():
            globals()["TorchTwin"] = _twin_class()
        return globals()["TorchTwin"]
    raise AttributeError(name)


def torch_logits_fn(model) -> LogitsFn:
    """A :data:`LogitsFn` for a torch model with the ``logits, state = model(x)`` interface."""
    import torch

    def fn(ids):
        with torch.no_grad():
            x = torch.nn.functional.one_hot(torch.as_tensor(list(ids), dtype=torch.long), len(TOKENS)).float()
            return model(x)[0].double().numpy()

    return fn


def numpy_logits_fn(net) -> LogitsFn:
    """A :data:`LogitsFn` for a :mod:`dino_rnn.numpy_nets` network."""
    return lambda ids: net.forward(ids)[0]


def train_torch(model, train: Split, valid: Split, *, epochs: int, lr: float = 3e-4, progress: bool = False,
                desc: str = "PyTorch LSTM", autograd: bool = False) -> History:
    """Adam (the lab's choice, lr 3e-4; its fused kernel), mean cross-entropy, one step per sequence, in order.

    The step is :func:`dino_rnn.train.make_step`'s: the compiled path's (as for the Dino Names
    models), or with ``autograd=True`` the plain ``loss.backward()`` step, as the lab computed it.

    On :func:`dino_rnn.train.run_epochs`, the one epoch loop, without keeping a best state
    (the lab has no early stopping): the model ends as the last epoch left it.
    """
    import torch
    import torch.nn.functional as F

    def tensors(s: Split):
        return [(F.one_hot(torch.as_tensor(x), len(TOKENS)).float(), torch.as_tensor(y)) for x, y in s.pairs]

    # Adam's fused kernel: the same update as its default for-each path, to float rounding.
    step = make_step(model, torch.optim.Adam(model.parameters(), lr=lr, fused=True), autograd=autograd)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one-sequence steps: more threads only add overhead
    try:
        return run_epochs(step, tensors(train), tensors(valid), epochs=epochs, keep_best=False, progress=progress, desc=desc)
    finally:
        torch.set_num_threads(threads)


def train_numpy(net, optimizer, train: Split, valid: Split, *, epochs: int, clip: float | None = 0.25,
                progress: bool = False, desc: str = "NumPy", autograd: bool = False) -> History:
    """The lab's loop: per sequence, forward, hand-written backward, clip the global norm, step.

    ``autograd=True``: the gradient from autograd on the same equations written in torch
    (:class:`dino_rnn.train.NumpyAutogradStep`) instead of the hand-written backward.
    """
    step = make_step(net, optimizer, clip=clip, autograd=autograd)
    return run_epochs(step, train.pairs, valid.pairs, epochs=epochs, keep_best=False, progress=progress, desc=desc)


__all__ = [
    "TOKENS",
    "generate",
    "sequence",
    "encode",
    "decode",
    "one_hot",
    "input_and_target",
    "split",
    "load",
    "Split",
    "determined_positions",
    "determined_accuracy",
    "always_b_accuracy",
    "complete",
    "is_exact",
    "extrapolation",
    "largest_exact",
    "make_torch_twin",
    "torch_logits_fn",
    "numpy_logits_fn",
    "train_torch",
    "train_numpy",
]
