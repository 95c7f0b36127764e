"""The count-model ladder (dino_rnn.baselines): the models' metric, smoothing chosen on validation only."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from dino_rnn import baselines as B
from dino_rnn.data import Vocab, make_pair, split_names

TINY = ["ab", "abc", "ba", "cab", "bb"]


def ids_of(names, vocab):
    return [vocab.encode(n) for n in names]


def synthetic(n=200, seed=1):
    """Names with structure an n-gram can learn (syllables), enough for a split."""
    rng = random.Random(seed)
    syll = ["ra", "to", "sau", "rus", "don", "ce", "ptor", "ka", "mi"]
    return ["".join(rng.choice(syll) for _ in range(rng.randint(1, 4))) for _ in range(n)]


def test_uniform_is_ln_v_nats_exactly():
    names = synthetic()
    rows = B.seed_ladder(names, 0)
    v = len(Vocab(names))
    uniform = rows[0]
    assert uniform["model"] == "uniform"
    for k in ("train_loss", "valid_loss", "test_loss"):
        assert uniform[k] == pytest.approx(math.log(v), abs=1e-12)
    assert B.bits(uniform["test_loss"]) == pytest.approx(math.log2(v))
    assert B.perplexity(uniform["test_loss"]) == pytest.approx(v)


def test_dino_names_uniform_is_ln_27(names):
    vocab = Vocab(names)
    train, valid, test = split_names(names, 0)
    m = B.choose(ids_of(train, vocab), ids_of(valid, vocab), len(vocab), vocab.end, 0, B.UNIFORM)
    assert len(vocab) == 27
    assert m.loss(ids_of(test, vocab)) == pytest.approx(math.log(27), abs=1e-12)


def test_an_unsmoothed_bigram_is_the_count_formula():
    """p(w | h) = c(h, w) / c(h), counted by hand on the targets as make_pair makes them."""
    vocab = Vocab(TINY)
    pairs = {}
    for n in TINY:  # the bigram's (previous character, target) pairs: input i -> target i
        x, y = make_pair(n, vocab)
        for h, w in zip(x, y):
            pairs.setdefault(h, []).append(w)
    expected = []
    for n in TINY:
        x, y = make_pair(n, vocab)
        nats = [-math.log(pairs[h].count(w) / len(pairs[h])) for h, w in zip(x, y)]
        expected.append(sum(nats) / len(nats))
    m = B.fit(ids_of(TINY, vocab), len(vocab), vocab.end, 2, B.ADD_K, 0.0)
    assert m.loss(ids_of(TINY, vocab)) == pytest.approx(sum(expected) / len(expected), abs=1e-12)
    # the first character is never predicted: a name's number of targets is its length
    assert [len(m.target_losses(i)) for i in ids_of(TINY, vocab)] == [len(n) for n in TINY]


def test_an_unseen_pair_without_smoothing_costs_infinitely_many_nats():
    vocab = Vocab(TINY + ["cc"])
    m = B.fit(ids_of(TINY, vocab), len(vocab), vocab.end, 2, B.ADD_K, 0.0)
    assert m.loss(ids_of(["cc"], vocab)) == math.inf


@pytest.mark.parametrize("order,smoothing,value", [(1, "add-k", 0.1), (2, "add-k", 0.5), (3, "add-k", 0.01),
                                                    (2, "kneser-ney", 0.7), (3, "kneser-ney", 0.3),
                                                    (4, "kneser-ney", 1.0)])
def test_every_context_is_a_distribution(order, smoothing, value):
    names = synthetic()
    vocab = Vocab(names)
    m = B.fit(ids_of(names[:150], vocab), len(vocab), vocab.end, order, smoothing, value)
    contexts = {h for ids in ids_of(names, vocab) for h, _ in B.events(ids, max(order, 1), len(vocab), vocab.end)}
    contexts |= {tuple([len(vocab)] * (order - 1))}  # the bare start, never seen as such
    for h in contexts:
        p = m.distribution(h)
        assert p.shape == (len(vocab),) and (p > 0).all()
        assert p.sum() == pytest.approx(1.0, abs=1e-12)


def test_the_smoothing_never_looks_at_the_test_names():
    names = synthetic(300)
    train, valid, test = split_names(names, 0)
    vocab = Vocab(names)
    other = synthetic(len(test), seed=99)  # other test names, same characters
    a = B.ladder(train, valid, test, vocab)
    b = B.ladder(train, valid, other, vocab)
    for ra, rb in zip(a, b):
        assert ra["model"] == rb["model"]
        assert ra["value"] == rb["value"] or (math.isnan(ra["value"]) and math.isnan(rb["value"]))
        assert ra["train_loss"] == rb["train_loss"] and ra["valid_loss"] == rb["valid_loss"]
    assert any(ra["test_loss"] != rb["test_loss"] for ra, rb in zip(a[1:], b[1:]))


def test_the_smoothing_is_chosen_on_validation(names):
    """On Dino Names the training names would pick the least smoothing; the validation names pick more."""
    train, valid, _ = split_names(names, 0)
    vocab = Vocab(names)
    tr, va = ids_of(train[:400], vocab), ids_of(valid, vocab)
    chosen = B.choose(tr, va, len(vocab), vocab.end, 3, B.ADD_K)
    losses = {k: B.fit(tr, len(vocab), vocab.end, 3, B.ADD_K, k).loss(va) for k in B.K_GRID}
    assert chosen.loss(va) == min(losses.values()) and chosen.value == min(losses, key=losses.get)
    assert chosen.value > min(B.K_GRID)


def test_every_rung_is_at_least_as_good_as_the_uniform_on_validation():
    names = synthetic(300)
    rows = B.seed_ladder(names, 2)
    assert [r["model"] for r in rows][:3] == ["uniform", "unigram, add-k", "bigram, add-k"]
    for r in rows[1:]:
        assert r["valid_loss"] <= rows[0]["valid_loss"]
    assert B.best(rows)["valid_loss"] == min(r["valid_loss"] for r in rows)


def test_by_position_adds_up_to_both_means():
    """The shares sum to the mean of per-name means (the models' loss); the count-weighted mean of
    the per-position means is the per-character mean."""
    names = synthetic(300)
    train, valid, test = split_names(names, 0)
    vocab = Vocab(names)
    m = B.choose(ids_of(train, vocab), ids_of(valid, vocab), len(vocab), vocab.end, 3, B.KNESER_NEY)
    per_name = [m.target_losses(i) for i in ids_of(test, vocab)]
    pos = B.losses_by_position(per_name)
    assert sum(pos["share"]) == pytest.approx(m.loss(ids_of(test, vocab)), abs=1e-12)
    mean, count = np.array(pos["mean"]), np.array(pos["count"])
    per_char = np.concatenate(per_name).mean()
    assert (mean * count).sum() / count.sum() == pytest.approx(per_char, abs=1e-12)
    assert count[0] == len(test) and list(count) == sorted(count, reverse=True)
    assert per_char != pytest.approx(m.loss(ids_of(test, vocab)), abs=1e-6)  # two different means


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["gru", "numpy_rnn"])
def test_a_run_records_its_test_loss_by_position(arch, tmp_path, dino_file):
    """Experiment and NumpyExperiment write test_loss_by_position: from the best state, its shares
    sum to the run's test loss (a mean of per-name means), its counts are the test names' lengths."""
    import json

    from dino_rnn.experiment import Experiment
    from dino_rnn.lab import NumpyExperiment

    cls = NumpyExperiment if arch.startswith("numpy") else Experiment
    exp = cls(arch, epochs=2, max_names=30, results_dir=tmp_path, data=dino_file, progress=False)
    exp.load_data(), exp.build(), exp.train()
    exp.save()
    m = json.loads(next((tmp_path / "metrics").glob("*.json")).read_text())
    pos = m["test_loss_by_position"]
    assert sum(pos["share"]) == pytest.approx(m["test_loss"], abs=1e-5)
    lengths = [len(n) for n in exp.test_names]
    assert pos["count"] == [sum(t >= p for t in lengths) for p in range(1, max(lengths) + 1)]
    mean, count = np.array(pos["mean"]), np.array(pos["count"])
    assert (mean * count).sum() / count.sum() != pytest.approx(m["test_loss"], abs=1e-4)  # per character: another mean


def test_a_warmed_ladder_is_the_one_the_report_reads(tmp_path):
    """The study counts the ladder in the comparison notebook's kernel before the notebook runs
    (goodness.warm_ladder); the notebook's ladder_rows must then find it, not count again."""
    from dino_rnn.data import sha256_of
    from dino_rnn.report import goodness

    rng = random.Random(0)
    path = tmp_path / "names.txt"
    path.write_text("\n".join("".join(rng.choice("abcde") for _ in range(rng.randint(3, 8))) for _ in range(120)) + "\n")
    runs = [{"data": {"path": str(path), "sha256": sha256_of(path)}, "parameters": {"seed": s, "max_names": 50}}
            for s in (3, 4)]
    goodness._seed_ladder.cache_clear()
    goodness.warm_ladder(path, [3, 4], 50)
    warmed = goodness._seed_ladder.cache_info()
    rows = goodness.ladder_rows(runs)
    after = goodness._seed_ladder.cache_info()
    assert (warmed.misses, after.misses, after.hits - warmed.hits) == (2, 2, 2)
    assert {r["seed"] for r in rows} == {3, 4}
