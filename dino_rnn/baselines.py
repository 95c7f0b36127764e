"""How good is good: count models of the names, measured exactly as the recurrent models are.

A loss of 1.54 nats per character means little alone. This module gives the ladder it sits on:
the uniform model, then character n-gram models counted on the training names (unigram,
bigram, trigram, 4-gram), each with its smoothing chosen on the validation names only:

- **add-k**: ``p(w | h) = (c(h, w) + k) / (c(h) + k V)``, ``k`` from :data:`K_GRID`;
- **interpolated Kneser–Ney** (orders 2 and up): the highest order discounts its counts by
  ``D`` and gives the mass it took to the next lower order, whose counts are continuation
  counts (how many distinct characters precede ``h w``), down to the uniform; one ``D`` from
  :data:`D_GRID` for every level.

**The same metric as the models** (:func:`dino_rnn.data.make_pair`): for a name of ``T``
characters the targets are its characters 2..T and then '.', the end marker; the target at
position ``t`` (1-based) is predicted from the name's first ``t`` characters, so the first
character is never predicted. An n-gram sees the last ``n - 1`` of them, the history padded on
the left with a start symbol that is not in the vocabulary (index ``V``): it knows where the
name began. A name's loss is the mean of its ``T`` targets' nats, a split's loss the mean over
its names. The vocabulary is the models' (:class:`dino_rnn.data.Vocab` of the whole file: the
characters plus '.'), so the uniform model costs ``ln V`` nats on every split.

A context never seen in training gets the uniform distribution (add-k with any ``k`` gives it
anyway); with ``k = 0`` a pair never seen in training costs infinitely many nats.

:func:`losses_by_position` summarises per-target losses by position in the name, the same way
for the count models and for the recurrent ones (:class:`dino_rnn.experiment.Experiment`
records it in its metrics): the **per-character mean** at each position, how many names reach
it, and its **share** of the split's loss, whose sum over positions is the split's loss (the
mean of per-name means); the count-weighted mean of the per-position means is the per-character
mean, a different average (long names weigh more).

NumPy only; a seed's whole ladder (:func:`seed_ladder`) takes well under a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from dino_rnn.data import Vocab, split_names

LN2 = math.log(2.0)
K_GRID = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
D_GRID = tuple(round(0.05 * i, 2) for i in range(1, 21))  # 0.05 .. 1.0
UNIFORM, ADD_K, KNESER_NEY = "uniform", "add-k", "kneser-ney"
# The ladder: (order, smoothing), from the least the data can teach to the most.
LADDER = ((0, UNIFORM), (1, ADD_K), (2, ADD_K), (2, KNESER_NEY), (3, ADD_K), (3, KNESER_NEY),
          (4, ADD_K), (4, KNESER_NEY))
ORDER_NAMES = {0: "uniform", 1: "unigram", 2: "bigram", 3: "trigram", 4: "4-gram"}


def bits(nats: float) -> float:
    """Nats per character as bits per character: ``nats / ln 2``."""
    return nats / LN2


def perplexity(nats: float) -> float:
    """Nats per character as a perplexity: ``e ** nats`` (the number of equally likely characters
    that would cost as much)."""
    return nats if math.isnan(nats) else math.exp(nats) if math.isfinite(nats) else math.inf


def model_name(order: int, smoothing: str) -> str:
    """``"trigram, Kneser–Ney"``, ``"unigram, add-k"``, ``"uniform"``."""
    if smoothing == UNIFORM:
        return "uniform"
    return f"{ORDER_NAMES.get(order, f'{order}-gram')}, {'Kneser–Ney' if smoothing == KNESER_NEY else 'add-k'}"


# ---------------------------------------------------------------------------
# Events and counts
# ---------------------------------------------------------------------------


def events(ids, order: int, vocab_size: int, end: int) -> list[tuple[tuple, int]]:
    """``(context, target)`` for every target of one name given as its input ids (``make_pair``'s):
    the context is the last ``order - 1`` symbols of the start-padded history."""
    start = vocab_size
    targets = list(ids[1:]) + [end]
    padded = [start] * max(order - 1, 0) + list(ids)
    n = max(order - 1, 0)
    return [(tuple(padded[t + 1 : t + 1 + n]) if n else (), w) for t, w in enumerate(targets)]


@dataclass
class Counts:
    """The training names' counts for every context length below ``order``: ``raw[m][h]`` the
    counts of what follows context ``h`` (length ``m``), ``continuation[m][h]`` for ``m < order - 1``
    how many distinct symbols precede ``h w`` (Kneser–Ney's lower orders). The start-padded
    context of length ``m`` is the same whatever the order, so the counts of order 4 serve every
    order up to 4."""

    vocab_size: int
    end: int
    order: int
    raw: list[dict] = field(default_factory=list)
    continuation: list[dict] = field(default_factory=list)

    @classmethod
    def of(cls, names_ids: list, vocab_size: int, end: int, order: int) -> "Counts":
        c = cls(vocab_size, end, order)
        top = max(order - 1, 0)
        c.raw = [dict() for _ in range(top + 1)]
        for ids in names_ids:
            for h, w in events(ids, order, vocab_size, end):
                for m in range(top + 1):  # every suffix of the context: the context of order m + 1
                    key = h[len(h) - m :]
                    row = c.raw[m].get(key)
                    if row is None:
                        row = c.raw[m][key] = np.zeros(vocab_size)
                    row[w] += 1
        c.continuation = [dict() for _ in range(top)]
        for m in range(top):
            for h, row in c.raw[m + 1].items():
                seen = c.continuation[m].get(h[1:])
                if seen is None:
                    seen = c.continuation[m][h[1:]] = np.zeros(vocab_size)
                seen += row > 0
        return c


# ---------------------------------------------------------------------------
# One count model
# ---------------------------------------------------------------------------


@dataclass
class CountModel:
    """An n-gram of ``order`` (0: uniform, 1: unigram, ...) with its smoothing and its value
    (``k`` for add-k, the discount ``D`` for Kneser–Ney, NaN for the uniform)."""

    counts: Counts
    order: int
    smoothing: str
    value: float = math.nan
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return model_name(self.order, self.smoothing)

    def distribution(self, context: tuple) -> np.ndarray:
        """``p(· | context)`` over the vocabulary (sums to 1); ``context`` is ``order - 1`` symbols."""
        got = self._cache.get(context)
        if got is None:
            got = self._cache[context] = self._distribution(tuple(context))
        return got

    def _distribution(self, h: tuple) -> np.ndarray:
        V = self.counts.vocab_size
        uniform = np.full(V, 1.0 / V)
        if self.smoothing == UNIFORM:
            return uniform
        if self.smoothing == ADD_K:
            c = self.counts.raw[len(h)].get(h)
            if c is None:
                return uniform
            return (c + self.value) / (c.sum() + self.value * V)
        return self._kneser_ney(h, uniform)

    def _kneser_ney(self, h: tuple, uniform: np.ndarray) -> np.ndarray:
        p = uniform
        top = len(h)
        for m in range(top + 1):  # from the empty context up to the full one
            key = h[top - m :]
            table = self.counts.raw[m] if m == top else self.counts.continuation[m]
            c = table.get(key)
            if c is None or c.sum() == 0:
                continue
            d = self.value
            p = (np.maximum(c - d, 0.0) + d * np.count_nonzero(c) * p) / c.sum()
        return p

    def target_losses(self, ids) -> np.ndarray:
        """The nats of each of one name's targets (its input ids as :func:`dino_rnn.data.make_pair` gives them)."""
        order = max(self.order, 1)
        ev = events(ids, order, self.counts.vocab_size, self.counts.end)
        with np.errstate(divide="ignore"):
            return np.array([-math.log(p) if (p := float(self.distribution(h)[w])) > 0 else math.inf for h, w in ev])

    def loss(self, names_ids: list) -> float:
        """The models' loss: the mean over names of each name's mean nats per target."""
        return float(np.mean([self.target_losses(ids).mean() for ids in names_ids]))


def fit(names_ids: list, vocab_size: int, end: int, order: int, smoothing: str, value: float = math.nan,
        counts: Counts | None = None) -> CountModel:
    """A count model of ``order`` on the training names (``counts``: theirs, if already counted)."""
    if smoothing == KNESER_NEY and order < 2:
        raise ValueError("Kneser–Ney needs order 2 or more")
    counts = counts if counts is not None else Counts.of(names_ids, vocab_size, end, max(order, 1))
    return CountModel(counts, order, smoothing, value)


def choose(train_ids: list, valid_ids: list, vocab_size: int, end: int, order: int, smoothing: str,
           grid=None, counts: Counts | None = None) -> CountModel:
    """The count model whose smoothing value (from ``grid``, default :data:`K_GRID` or
    :data:`D_GRID`) gives the lowest loss on the **validation** names; nothing else is looked at.
    ``counts``: the training names' (of this order or higher), if already counted."""
    if counts is None or counts.order < max(order, 1):
        counts = Counts.of(train_ids, vocab_size, end, max(order, 1))
    if smoothing == UNIFORM:
        return CountModel(counts, 0, UNIFORM)
    grid = grid if grid is not None else (K_GRID if smoothing == ADD_K else D_GRID)
    models = [fit(train_ids, vocab_size, end, order, smoothing, v, counts) for v in grid]
    return min(models, key=lambda m: m.loss(valid_ids))


# ---------------------------------------------------------------------------
# By position, and the ladder
# ---------------------------------------------------------------------------


def losses_by_position(per_name: list) -> dict:
    """Per-target losses of a split's names (one array per name) by target position 1, 2, ...:
    ``mean`` (the per-character mean at that position), ``count`` (how many names reach it) and
    ``share`` (the position's part of the split's loss: the sum over names of loss / T, over the
    number of names; the shares sum to the mean of per-name means)."""
    n = len(per_name)
    longest = max((len(x) for x in per_name), default=0)
    total, count, share = np.zeros(longest), np.zeros(longest, dtype=int), np.zeros(longest)
    for x in per_name:
        x = np.asarray(x, dtype=float)
        total[: len(x)] += x
        count[: len(x)] += 1
        share[: len(x)] += x / len(x) / n
    return {"mean": [float(v) for v in total / np.maximum(count, 1)], "count": [int(c) for c in count],
            "share": [float(v) for v in share]}


def ladder(train: list[str], valid: list[str], test: list[str], vocab: Vocab) -> list[dict]:
    """Every rung of :data:`LADDER` on one split: counted on ``train``, smoothing chosen on
    ``valid``, then measured on all three. One dict per rung: ``model``, ``order``, ``smoothing``,
    ``value`` (k or D), ``train_loss``, ``valid_loss``, ``test_loss`` (nats per character, the
    models' definition) and ``test_loss_by_position`` (:func:`losses_by_position`)."""
    enc = lambda names: [vocab.encode(n) for n in names]  # noqa: E731
    tr, va, te = enc(train), enc(valid), enc(test)
    counts = Counts.of(tr, len(vocab), vocab.end, max(order for order, _ in LADDER))
    rows = []
    for order, smoothing in LADDER:
        m = choose(tr, va, len(vocab), vocab.end, order, smoothing, counts=counts)
        rows.append({
            "model": m.name, "order": order, "smoothing": smoothing, "value": m.value,
            "train_loss": m.loss(tr), "valid_loss": m.loss(va), "test_loss": m.loss(te),
            "test_loss_by_position": losses_by_position([m.target_losses(ids) for ids in te]),
        })
    return rows


def seed_ladder(names: list[str], seed: int, max_names: int | None = None) -> list[dict]:
    """:func:`ladder` on seed ``seed``'s split (:func:`dino_rnn.data.split_names`, as the models')
    with the models' vocabulary (:class:`dino_rnn.data.Vocab` of all the names), counted on the
    training names the models train on (the first ``max_names``, when set); each row also says
    its ``seed``."""
    train, valid, test = split_names(names, seed)
    used = train if max_names is None else train[:max_names]
    return [{"seed": seed, **row} for row in ladder(used, valid, test, Vocab(names))]


def best(rows: list[dict]) -> dict:
    """The rung with the lowest validation loss (the one a modeller would pick without the test)."""
    return min(rows, key=lambda r: r["valid_loss"])
