"""The aⁿbⁿ task: data, split, the two measures on hand-built models, the PyTorch twin."""

import numpy as np
import pytest

from dino_rnn import anbn
from dino_rnn.anbn import A, B, EOS, INDEX, TOKENS


def test_generate_is_the_labs_draw():
    seqs = anbn.generate()
    assert len(seqs) == 256
    rs = np.random.RandomState(42)  # the lab: np.random.seed(42); np.random.randint(1, 12) per sequence
    for s in seqs:
        n = rs.randint(1, 12)
        assert s == [A] * n + [B] * n + [EOS]
    ns = [s.index(B) for s in seqs]
    assert min(ns) == 1 and max(ns) == 11 and len(set(ns)) == 11
    assert anbn.generate() == seqs  # fixed seed, same data
    assert anbn.generate(seed=1) != seqs


def test_tokens_and_one_hot():
    assert TOKENS == ("a", "b", "EOS", "UNK")
    assert anbn.encode(["a", "b", "EOS", "c", "?"]) == [0, 1, 2, 3, 3]
    assert anbn.decode([0, 1, 2, 3]) == list(TOKENS)
    x = anbn.one_hot([0, 2, 1])
    assert x.shape == (3, 4) and x.dtype == np.float64
    np.testing.assert_array_equal(x, np.eye(4)[[0, 2, 1]])


def test_split_and_pairs():
    train, valid, test = anbn.load()
    assert (len(train), len(valid), len(test)) == (204, 25, 25)
    seqs = anbn.generate()
    assert train.sequences == seqs[:204] and valid.sequences == seqs[204:229] and test.sequences == seqs[-25:]
    for s, (x, y) in zip(train.sequences, train.pairs):
        ids = anbn.encode(s)
        assert list(x) == ids[:-1] and list(y) == ids[1:]
    with pytest.raises(ValueError):
        anbn.split(seqs[:5])


# -- hand-built models for the measures ------------------------------------------------


def counter(extra_b: int = 0, stop_at: int | None = None):
    """A perfect aⁿbⁿ "model" (optionally off by ``extra_b`` b's, or unable to count past ``stop_at``)."""

    def fn(ids):
        out = np.zeros((len(ids), 4))
        for t in range(len(ids)):
            prefix = ids[: t + 1]
            na, nb = prefix.count(INDEX[A]), prefix.count(INDEX[B])
            if nb == 0:
                nxt = A  # undetermined: say a
            elif stop_at is not None and na > stop_at:
                nxt = B  # cannot count this far: b forever
            elif nb < na + extra_b:
                nxt = B
            else:
                nxt = EOS
            out[t, INDEX[nxt]] = 1.0
        return out

    return fn


def test_determined_positions():
    assert list(anbn.determined_positions(1)) == [1]  # a b | EOS: only EOS is determined
    assert list(anbn.determined_positions(3)) == [3, 4, 5]
    s = anbn.sequence(3)
    ids = anbn.encode(s)
    # targets at the determined positions: b, b, EOS
    assert [s[t + 1] for t in anbn.determined_positions(3)] == [B, B, EOS]
    assert ids[3] == INDEX[B]  # the first b is the input at position n


def test_determined_accuracy_on_hand_built_models():
    seqs = [anbn.sequence(n) for n in (1, 2, 5)]
    perfect = anbn.determined_accuracy(counter(), seqs)
    assert perfect == {"accuracy": 1.0, "correct": 8, "positions": 8, "sequences_all_right": 1.0}
    # one b too many: every EOS is missed, every b is right
    late = anbn.determined_accuracy(counter(extra_b=1), seqs)
    assert late["correct"] == 5 and late["positions"] == 8 and late["sequences_all_right"] == 0.0
    # always b = the baseline
    always_b = lambda ids: np.tile(np.eye(4)[INDEX[B]], (len(ids), 1))  # noqa: E731
    r = anbn.determined_accuracy(always_b, seqs)
    assert r["accuracy"] == anbn.always_b_accuracy(seqs) == 5 / 8
    # the undetermined positions do not count: a model wrong everywhere else scores the same
    def wrong_before_b(ids):
        out = counter()(ids)
        first_b = ids.index(INDEX[B]) if INDEX[B] in ids else len(ids)
        out[:first_b] = np.eye(4)[INDEX["UNK"]]
        return out

    assert anbn.determined_accuracy(wrong_before_b, seqs)["accuracy"] == 1.0


def test_completion_and_extrapolation():
    assert anbn.complete(counter(), 12) == [B] * 11 + [EOS]
    assert anbn.is_exact(12, [B] * 11 + [EOS])
    assert not anbn.is_exact(12, [B] * 12 + [EOS])
    assert not anbn.is_exact(12, [B] * 10 + [EOS])
    rows = anbn.extrapolation(counter())
    assert [r["n"] for r in rows] == list(range(12, 21)) and all(r["exact"] for r in rows)
    assert anbn.largest_exact(rows) == 20
    # counts correctly up to 15 a's, then emits b forever
    rows = anbn.extrapolation(counter(stop_at=15))
    assert [r["exact"] for r in rows] == [True] * 4 + [False] * 5
    assert anbn.largest_exact(rows) == 15
    r16 = rows[4]
    assert r16["n"] == 16 and r16["b_emitted"] == 2 * 16 + 5 and r16["then"] is None
    # off by one everywhere: none
    rows = anbn.extrapolation(counter(extra_b=1))
    assert anbn.largest_exact(rows) is None
    assert rows[0]["b_emitted"] == 12 and rows[0]["then"] == EOS
    # a gap: exact at 12, 13, wrong at 14, exact again later -> 13
    gap = [{"n": n, "exact": n != 14} for n in range(12, 21)]
    assert anbn.largest_exact(gap) == 13
    # a model that stops with a wrong token
    says_a = lambda ids: np.tile(np.eye(4)[INDEX[A]], (len(ids), 1))  # noqa: E731
    assert anbn.complete(says_a, 12) == [A]
    assert anbn.extrapolation(says_a, [12])[0] == {"n": 12, "exact": False, "b_emitted": 0, "then": A}


@pytest.mark.slow
def test_torch_twin_and_trainers_are_seeded():
    torch = pytest.importorskip("torch")
    train, valid, _ = anbn.load()
    small = anbn.Split(train.sequences[:20])
    twin = anbn.make_torch_twin(seed=0)
    n = sum(p.numel() for p in twin.parameters())
    assert n == 4 * 50 * (4 + 50) + 2 * 4 * 50 + 50 * 4 == 11400
    assert twin.l_out.bias is None
    runs = []
    for _ in range(2):
        m = anbn.make_torch_twin(seed=3)
        c = anbn.train_torch(m, small, valid, epochs=2)
        runs.append((c.train_loss, c.valid_loss, [p.detach().clone() for p in m.parameters()]))
    assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][2], runs[1][2]))
    assert runs[0][1][1] < runs[0][1][0]
    fn = anbn.torch_logits_fn(m)
    assert fn([0, 0, 1]).shape == (3, 4)


def test_numpy_trainer_learns_and_repeats():
    from dino_rnn.numpy_nets import SGD, NumpyLSTM

    train, valid, _ = anbn.load()
    small = anbn.Split(train.sequences[:30])
    results = []
    for _ in range(2):
        net = NumpyLSTM(4, 16, seed=0)
        c = anbn.train_numpy(net, SGD(net.params, 0.1), small, valid, epochs=3, clip=0.25)
        results.append((c.train_loss, c.valid_loss, net.flat.copy()))
    assert results[0][0] == results[1][0] and np.array_equal(results[0][2], results[1][2])
    assert results[0][1][-1] < results[0][1][0]
    assert len(results[0][0]) == 3
