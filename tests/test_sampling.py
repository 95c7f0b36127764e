"""The sampling strategies (``dino_rnn.sample``: top-k, top-p, beam search, a prefix, seeds),
the notebooks' temperature table and ``dino-rnn sample``."""

import itertools
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from dino_rnn import cli
from dino_rnn.data import Vocab
from dino_rnn.experiment import Experiment
from dino_rnn.lab import NumpyExperiment, TorchView
from dino_rnn.models import ARCHITECTURES, build_model
from dino_rnn.numpy_nets import NumpyRNN
from dino_rnn.sample import (beam_search, generate, keep_top_k, keep_top_p, name_logprob, next_probabilities,
                             one_thread, sample, temperature_table)
from dino_rnn.settings import ParameterError

PREFIXES = ["a", "tyr", "velo", "x"]


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():  # one character at a time: far faster on one thread
        yield


@pytest.fixture(scope="module")
def model(vocab):
    torch.manual_seed(0)
    return build_model("gru", len(vocab), 16)


# -- greedy, three ways ---------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_beam_width_1_and_top_k_1_are_greedy(arch, vocab):
    torch.manual_seed(1)
    m = build_model(arch, len(vocab), 16)
    for prefix in PREFIXES:
        greedy = generate(m, vocab, prefix, max_length=12)
        assert [b.name for b in beam_search(m, vocab, prefix=prefix, width=1, max_length=12)] == [greedy]
        assert sample(m, vocab, 3, prefix=prefix, top_k=1, seed=5, max_length=12) == [greedy] * 3
        assert sample(m, vocab, 2, prefix=prefix, temperature=0, max_length=12) == [greedy] * 2


def test_the_numpy_nets_sample_through_their_view(vocab):
    view = TorchView(NumpyRNN(len(vocab), 16, seed=0))
    greedy = generate(view, vocab, "tyr", max_length=12)
    assert beam_search(view, vocab, prefix="tyr", width=1, max_length=12)[0].name == greedy
    assert sample(view, vocab, 4, prefix="tyr", top_p=0.9, seed=3) == sample(view, vocab, 4, prefix="tyr", top_p=0.9, seed=3)


# -- beam search against exhaustive search ----------------------------------------

TOY = Vocab.from_symbols([".", "a", "b", "c"])


class Table(nn.Module):
    """A toy model whose next-character probabilities depend on the last character only."""

    def __init__(self, probs):
        super().__init__()
        self.logp = nn.Parameter(torch.tensor(probs, dtype=torch.float64).log(), requires_grad=False)

    def forward(self, x, state=None):
        return x.double() @ self.logp, state


# Rows: the last character (. a b c); columns: the next one. From "a", greedy takes b (0.5)
# and then ends (0.3): "ab", 0.15. "ac" is 0.4499 * 0.95 = 0.43: greedy is not optimal.
GREEDY_IS_NOT_BEST = [[0.25, 0.25, 0.25, 0.25],
                      [0.05, 0.0001, 0.5, 0.4499],
                      [0.3, 0.24, 0.23, 0.23],
                      [0.95, 0.02, 0.02, 0.01]]


def exhaustive(model, vocab, prefix, max_length):
    """Every name up to ``max_length`` that begins with ``prefix``, scored; the best first."""
    letters = [c for c in vocab.itos if c != "."]
    names = [prefix + "".join(w) for k in range(max_length - len(prefix) + 1) for w in itertools.product(letters, repeat=k)]
    return sorted(((name_logprob(model, vocab, n, given=len(prefix))[0], n) for n in names), reverse=True)


def test_a_wide_beam_finds_the_most_probable_name_where_greedy_does_not():
    m = Table(GREEDY_IS_NOT_BEST)
    best = exhaustive(m, TOY, "a", 5)
    assert best[0][1] == "ac" and math.isclose(best[0][0], math.log(0.4499 * 0.95))
    assert generate(m, TOY, "a") == "ab"
    assert beam_search(m, TOY, prefix="a", width=1, max_length=5)[0].name == "ab"
    found = beam_search(m, TOY, prefix="a", width=2, max_length=5)
    assert found[0].name == "ac" and math.isclose(found[0].logprob, best[0][0])


@pytest.mark.parametrize("seed", range(4))
def test_an_exhaustive_beam_finds_the_exhaustive_ranking(seed):
    """On small seeded RNNs over a b c (a state, not a table), a beam as wide as the search
    finds the exhaustive search's best names, and scores them as name_logprob does."""
    torch.manual_seed(seed)
    m = build_model("rnn", len(TOY), 8)
    with torch.no_grad():
        m.fc.weight.mul_(6)  # sharp distributions: greedy and the best name part
    best = exhaustive(m, TOY, "b", 5)
    found = beam_search(m, TOY, prefix="b", width=3**4, max_length=5)
    assert [b.name for b in found[:5]] == [n for _, n in best[:5]]
    assert np.allclose([b.logprob for b in found[:5]], [s for s, _ in best[:5]])


# -- the distribution: top-k and top-p ----------------------------------------------

P = torch.tensor([0.05, 0.4, 0.1, 0.3, 0.15], dtype=torch.float64)


@pytest.mark.parametrize("p, kept", [(0.3, {1}), (0.4, {1}), (0.41, {1, 3}), (0.7, {1, 3}), (0.71, {1, 3, 4}),
                                     (0.95, {1, 2, 3, 4}), (0.96, {0, 1, 2, 3, 4}),
                                     (1.0, {0, 1, 2, 3, 4})])
def test_top_p_keeps_the_smallest_set_that_reaches_p(p, kept):
    got = keep_top_p(P, p)
    assert set(torch.nonzero(got).flatten().tolist()) == kept
    assert math.isclose(float(got.sum()), 1.0)
    assert torch.allclose(got[list(kept)], P[list(kept)] / P[list(kept)].sum())


@pytest.mark.parametrize("k", [1, 2, 3, 5, 9])
def test_top_k_keeps_exactly_k(k):
    assert set(torch.nonzero(keep_top_k(P, k)).flatten().tolist()) == set(torch.argsort(P, descending=True)[:k].tolist())
    assert int((keep_top_k(torch.full((6,), 1 / 6, dtype=torch.float64), min(k, 6)) > 0).sum()) == min(k, 6)


def test_next_probabilities_applies_temperature_then_top_k_then_top_p():
    logits = P.log()
    assert torch.allclose(next_probabilities(logits), P)
    assert torch.allclose(next_probabilities(logits, temperature=0.5), P**2 / (P**2).sum())
    assert next_probabilities(logits, temperature=0).tolist() == [0, 1, 0, 0, 0]
    both = next_probabilities(logits, top_k=3, top_p=0.8)  # top 3: .4 .3 .15 -> .47 .35 .18: .8 needs two
    assert set(torch.nonzero(both).flatten().tolist()) == {1, 3}


# -- seeds and prefixes ------------------------------------------------------------


@pytest.mark.parametrize("how", [{}, {"temperature": 1.3}, {"top_k": 5}, {"top_p": 0.8}])
def test_the_same_seed_gives_the_same_names(model, vocab, how):
    run = lambda seed: sample(model, vocab, 6, seed=seed, max_length=12, **how)  # noqa: E731
    assert run(7) == run(7)
    assert run(7) != run(8)


def test_without_filters_a_draw_is_generates(model, vocab):
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        assert sample(model, vocab, 1, prefix="ste", temperature=0.8, seed=seed) == [
            generate(model, vocab, "ste", temperature=0.8, generator=g)]


def test_the_prefix_is_kept_and_continued(model, vocab):
    for prefix in PREFIXES:
        names = sample(model, vocab, 8, prefix=prefix, seed=1, max_length=15)
        assert all(n.startswith(prefix) for n in names) and any(len(n) > len(prefix) for n in names)
        assert all(b.name.startswith(prefix) for b in beam_search(model, vocab, prefix=prefix, width=3, max_length=15))
    starts = {n[0] for n in sample(model, vocab, 30, seed=2, max_length=3)}
    assert len(starts) > 5 and "." not in starts  # no prefix: a random first letter each


@pytest.mark.parametrize("options, named", [
    ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"), ({"top_k": 0}, "top_k"), ({"top_k": 2.5}, "top_k"),
    ({"temperature": -0.1}, "temperature"), ({"temperature": float("nan")}, "temperature"),
    ({"prefix": "T-rex"}, "prefix"), ({"prefix": "ab.c"}, "prefix"), ({"n": 0}, "n"), ({"max_length": 0}, "max_length"),
])
def test_bad_options_raise_one_line_naming_the_option(model, vocab, options, named):
    with pytest.raises(ParameterError, match=f"^{named} ") as e:
        sample(model, vocab, **{"n": 2, **options})
    assert "\n" not in str(e.value)
    with pytest.raises(ParameterError, match="^width "):
        beam_search(model, vocab, prefix="a", width=0)


# -- the temperature table ---------------------------------------------------------


def test_the_temperature_table(model, vocab, names):
    table = temperature_table(model, vocab, names, temperatures=(0.5, 1.0, 1.5), n=8, max_length=10)
    assert list(table.index) == [0.5, 1.0, 1.5] and table.index.name == "temperature"
    assert list(table.columns) == ["new", "mean length", "real mean length", "log-prob per char", "real log-prob per char"]
    assert np.isfinite(table.to_numpy()).all() and (table["log-prob per char"] < 0).all()
    assert table["new"].between(0, 1).all() and (table["mean length"] <= 10).all()
    assert table["real mean length"].tolist() == [sum(map(len, names)) / len(names)] * 3
    assert table.equals(temperature_table(model, vocab, names, temperatures=(0.5, 1.0, 1.5), n=8, max_length=10))


# -- dino-rnn sample ------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, dino_file):
    """A .pt and a .npz written by tiny runs (1 epoch, 50 names), with their metrics."""
    out = tmp_path_factory.mktemp("ck")
    for kind, arch in ((Experiment, "lstm"), (NumpyExperiment, "numpy_rnn")):
        kind(arch, epochs=1, max_names=50, hidden=16, autograd=True, results_dir=out, data=dino_file, progress=False).run()
    return {"pt": out / "checkpoints" / "lstm-seed0.pt", "npz": out / "checkpoints" / "numpy_rnn-seed0.npz"}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pt", "npz"])
@pytest.mark.parametrize("options", [[], ["--prefix", "ste", "--top-k", "4"], ["--top-p", "0.9", "--temperature", "0.8"]])
def test_dino_rnn_sample_prints_n_names(checkpoints, kind, options, capsys):
    assert cli.main(["sample", str(checkpoints[kind]), "--n", "7", *options]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 7 and all(n.isalpha() for n in lines) and err == ""
    if "--prefix" in options:
        assert all(n.startswith("ste") for n in lines)
    assert cli.main(["sample", str(checkpoints[kind]), "--n", "7", *options]) == 0
    assert capsys.readouterr().out.splitlines() == lines  # seeded


@pytest.mark.slow
def test_dino_rnn_sample_beam_prints_names_and_log_probabilities(checkpoints, capsys):
    assert cli.main(["sample", str(checkpoints["pt"]), "--beam", "4", "--prefix", "a"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert 1 <= len(rows) <= 4 and all(n.startswith("a") and float(s) < 0 for n, s in rows)
    assert [float(s) for _, s in rows] == sorted((float(s) for _, s in rows), reverse=True)


@pytest.mark.slow
@pytest.mark.parametrize("options, says", [
    (["--top-p", "1.5"], "--top-p must be in (0, 1]"), (["--top-k", "0"], "--top-k must be"),
    (["--top-k", "many"], "--top-k must be a whole number"), (["--temperature", "-1"], "--temperature must be"),
    (["--prefix", "Rex!"], "--prefix 'Rex!' has"), (["--beam", "0"], "--beam must be"), (["--n", "-3"], "--n must be"),
    (["--beam", "3", "--top-p", "0.5"], "--beam searches"), (["--seed", "-1"], "--seed must be"),
])
def test_dino_rnn_sample_refuses_a_bad_option_in_one_line(checkpoints, options, says, capsys):
    assert cli.main(["sample", str(checkpoints["pt"]), *options]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith(f"dino-rnn: error: {says}")


def test_dino_rnn_sample_refuses_a_bad_checkpoint_in_one_line(tmp_path, capsys):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 cut short")
    (tmp_path / "dir.pt").mkdir()
    (tmp_path / "names.txt").write_text("a\n")
    for path, says in ((tmp_path / "missing.pt", "does not exist"), (tmp_path / "junk.pt", "is corrupt"),
                       (tmp_path / "junk.npz", "is corrupt"), (tmp_path / "dir.pt", "is not a file"),
                       (tmp_path / "names.txt", "not a .pt")):
        assert cli.main(["sample", str(path)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and says in err, err


@pytest.mark.slow
def test_the_command_runs_and_says_one_line(checkpoints, tmp_path):
    """As a user runs it: a process, its exit status and its stderr."""
    run = lambda *a: subprocess.run([sys.executable, "-m", "dino_rnn", "sample", *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    ok = run(str(checkpoints["npz"]), "--n", "3", "--seed", "4")
    assert ok.returncode == 0 and len(ok.stdout.splitlines()) == 3, ok.stderr
    bad = run(str(tmp_path / "none.npz"))
    assert bad.returncode == 2 and bad.stdout == "" and bad.stderr.count("\n") == 1
    helped = subprocess.run([sys.executable, "-m", "dino_rnn", "--help"], capture_output=True, text=True)
    assert "sample" in helped.stdout and "training nothing" in helped.stdout
