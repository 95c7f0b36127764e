"""Sampling: names from any model behind ``logits, state = model(x_onehot_rows, state)``.

Two layers, read in this order:

``generate`` (notebook 01's Exercise C)
    The published loop, as a student writes it: greedy decoding (always the most likely next
    character) or sampling from the softmax at a temperature, with a seeded generator.
    :func:`sample_names` uses it for the names every run records (one per start letter).

The strategies you can play with (``dino-rnn sample``, the notebooks' temperature tables)
    :func:`sample` draws ``n`` names with a temperature, top-k and nucleus (top-p) filtering
    and a priming prefix, seeded; :func:`beam_search` finds the most probable complete names;
    :func:`name_logprob` scores a name under the model; :func:`temperature_table` measures
    samples over temperatures. :func:`next_probabilities` is the one place a distribution over
    the next character is shaped (temperature, then top-k, then top-p). Bad options raise
    :class:`~dino_rnn.settings.ParameterError` with one line naming the option
    (:func:`check_options`).

The four PyTorch models and the NumPy nets (through :class:`dino_rnn.lab.TorchView`) all work.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import string
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from dino_rnn.data import END, Vocab
from dino_rnn.settings import ParameterError


@torch.no_grad()
def generate(
    model: nn.Module,
    vocab: Vocab,
    start: str,
    *,
    temperature: float | None = None,
    generator: torch.Generator | None = None,
    max_length: int = 40,
) -> str:
    """A name that begins with ``start``, continued until '.' or ``max_length`` characters.

    The model reads ``start`` (its one-hot rows, ``vocab.one_hot(vocab.encode(start))``); then,
    from the last row of logits, the next character is picked: ``temperature=None`` (or 0) is
    greedy (the most likely), a positive temperature samples from ``softmax(logits / temperature)``
    with ``torch.multinomial(..., generator=generator)``. The end marker (``vocab.end``) stops the
    name and is not part of it; any other character is added and fed back to the model with the
    state it returned, until the name has ``max_length`` characters.
    """
    if temperature is not None and temperature < 0:
        raise ValueError(f"temperature must be positive (or None for greedy), not {temperature}")
    if not start:
        raise ValueError("start must be at least one character")
    model.eval()
    device = next(model.parameters()).device
    ### BEGIN SOLUTION
    ids = vocab.encode(start)
    logits, state = model(vocab.one_hot(ids).to(device))
    out = list(start)
    while len(out) < max_length:
        last = logits[-1]
        if not temperature:
            nxt = int(last.argmax())
        else:
            probs = torch.softmax(last.double() / temperature, dim=0).cpu()
            nxt = int(torch.multinomial(probs, 1, generator=generator))
        if nxt == vocab.end:
            break
        out.append(vocab.itos[nxt])
        logits, state = model(vocab.one_hot([nxt]).to(device), state)
    return "".join(out)
    ### END SOLUTION


def sample_names(
    model: nn.Module,
    vocab: Vocab,
    training_names: list[str],
    *,
    starts: str | None = None,
    temperature: float | None = None,
    seed: int = 0,
    generate: Callable = generate,
) -> list[dict]:
    """One name per start letter (a–z that are in the vocabulary), each marked new or not,
    made by ``generate`` (this module's, or one of your own: notebook 01's exercise).

    Returns ``[{"start": "a", "name": "...", "new": True}, ...]``; "new" means the name is
    not one of ``training_names``.
    """
    if starts is None:
        starts = "".join(c for c in string.ascii_lowercase if c in vocab.stoi)
    known = set(training_names)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for s in starts:
        name = generate(model, vocab, s, temperature=temperature, generator=gen)
        rows.append({"start": s, "name": name, "new": name not in known})
    return rows


def new_share(rows: list[dict]) -> float:
    """The share of sampled names that are not training names."""
    return sum(r["new"] for r in rows) / len(rows) if rows else float("nan")




# ---------------------------------------------------------------------------
# The strategies you can play with
# ---------------------------------------------------------------------------

TEMPERATURES = (0.5, 0.8, 1.0, 1.2, 1.5)  # the notebooks' temperature table
MAX_LENGTH = 40  # as generate's


@contextlib.contextmanager
def one_thread():
    """Torch on one thread for a while: a model run one character at a time is about 20 times
    slower on several (each call is too small to share out), as the training loop finds too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class Beam(NamedTuple):
    """A complete name found by :func:`beam_search` and its log-probability under the model."""

    name: str
    logprob: float


def _whole(value, name: str, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        raise ParameterError(f"{name} must be a whole number of at least {least}, not {value!r}")
    return value


def check_options(vocab: Vocab | None = None, *, prefix: str = "", temperature: float = 1.0, top_k=None,
                  top_p=None, n: int = 1, width: int = 1, max_length: int = MAX_LENGTH, spelled=None) -> None:
    """Refuse a bad option with a :class:`ParameterError` of one line that names it.

    ``temperature`` is a finite number >= 0 (0 is greedy); ``top_k`` None or a whole number >= 1;
    ``top_p`` None or in (0, 1]; ``n``, ``width`` and ``max_length`` whole numbers >= 1; ``prefix``
    characters of ``vocab`` other than the end marker. ``spelled`` maps an option to the name to
    show (the command line shows ``--top-p`` where Python shows ``top_p``).
    """
    say = (spelled or {}).get
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not 0 <= temperature < math.inf:
        raise ParameterError(f"{say('temperature', 'temperature')} must be a number >= 0 (0 is greedy), not {temperature!r}")
    if top_k is not None:
        _whole(top_k, say("top_k", "top_k"))
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, numbers.Real) or not 0 < top_p <= 1):
        raise ParameterError(f"{say('top_p', 'top_p')} must be in (0, 1] (the share of probability kept), not {top_p!r}")
    for name, value in (("n", n), ("width", width), ("max_length", max_length)):
        _whole(value, say(name, name))
    if not isinstance(prefix, str):
        raise ParameterError(f"{say('prefix', 'prefix')} must be text, not {type(prefix).__name__}")
    if vocab is not None:
        bad = sorted({c for c in prefix if c not in vocab.stoi or c == END})
        if bad:
            allowed = "".join(c for c in vocab.itos if c != END)
            raise ParameterError(f"{say('prefix', 'prefix')} {prefix!r} has {''.join(bad)!r}, not in the vocabulary "
                                 f"{allowed!r} (the end marker {END!r} ends a name, it cannot be in one)")


def keep_top_k(probs: torch.Tensor, k: int) -> torch.Tensor:
    """``probs`` with all but its ``k`` most likely entries set to 0, renormalised (exactly k kept)."""
    if k >= len(probs):
        return probs
    kept = torch.zeros_like(probs)
    idx = torch.topk(probs, k).indices
    kept[idx] = probs[idx]
    return kept / kept.sum()


def keep_top_p(probs: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: the smallest set of most likely entries whose probability reaches ``p``,
    renormalised; every other entry 0. Ties are kept in index order."""
    if p >= 1:
        return probs
    order = torch.argsort(probs, descending=True, stable=True)
    reached = probs[order].cumsum(0) >= p * (1 - 1e-12)  # a sum that rounds just below p still reaches it
    count = int(reached.int().argmax()) + 1 if bool(reached.any()) else len(probs)
    kept = torch.zeros_like(probs)
    kept[order[:count]] = probs[order[:count]]
    return kept / kept.sum()


def next_probabilities(logits: torch.Tensor, *, temperature: float = 1.0, top_k=None, top_p=None) -> torch.Tensor:
    """The distribution the next character is drawn from (float64, on the CPU): the softmax of
    ``logits / temperature`` (temperature 0: all the probability on the most likely), then only
    the ``top_k`` most likely kept, then only the nucleus of probability ``top_p``."""
    logits = logits.detach().double().cpu()
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(), len(logits)).double()
    probs = torch.softmax(logits / temperature, dim=0)
    if top_k is not None:
        probs = keep_top_k(probs, top_k)
    if top_p is not None:
        probs = keep_top_p(probs, top_p)
    return probs


def _read(model, vocab: Vocab, text: str, state=None):
    """The model run over ``text``: the logits of the character after it, and the state."""
    device = next(model.parameters()).device
    logits, state = model(vocab.one_hot(vocab.encode(text)).to(device), state)
    return logits[-1], state


def _continue(model, vocab: Vocab, start: str, generator, max_length: int, **how) -> str:
    """``start`` continued one drawn character at a time until '.' or ``max_length`` characters."""
    last, state = _read(model, vocab, start)
    out = list(start)
    while len(out) < max_length:
        if how.get("temperature") == 0:
            nxt = int(last.argmax())
        else:
            nxt = int(torch.multinomial(next_probabilities(last, **how), 1, generator=generator))
        if nxt == vocab.end:
            break
        out.append(vocab.itos[nxt])
        last, state = _read(model, vocab, vocab.itos[nxt], state)
    return "".join(out)


@torch.no_grad()
def sample(model, vocab: Vocab, n: int = 10, *, prefix: str = "", temperature: float = 1.0, top_k: int | None = None,
           top_p: float | None = None, seed: int = 0, max_length: int = MAX_LENGTH) -> list[str]:
    """``n`` names drawn from the model, each beginning with ``prefix``.

    Each next character is drawn from :func:`next_probabilities` (``temperature`` 0 is greedy:
    every name the same), until the end marker '.' (not part of the name) or ``max_length``
    characters. An empty ``prefix`` starts each name with a letter drawn uniformly from the
    vocabulary (the models have no start symbol). One ``torch.Generator`` seeded with ``seed``
    makes every draw: the same seed gives the same names. With no top-k or top-p a name repeats
    ``generate(model, vocab, prefix, temperature=..., generator=...)`` draw for draw.
    """
    check_options(vocab, prefix=prefix, temperature=temperature, top_k=top_k, top_p=top_p, n=n, max_length=max_length)
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    letters = [c for c in vocab.itos if c != END]
    names = []
    with one_thread():
        for _ in range(n):
            start = prefix or letters[int(torch.randint(len(letters), (1,), generator=gen))]
            names.append(_continue(model, vocab, start, gen, max_length, temperature=temperature, top_k=top_k, top_p=top_p))
    return names


def _expand(live: list, vocab: Vocab, max_length: int, done: list) -> list:
    """Every one-character extension of the live names, best first; a name already
    ``max_length`` long is complete instead (scored as ending there)."""
    out = []
    for score, text, last, state in live:
        logp = torch.log_softmax(last.detach().double().cpu(), dim=0).tolist()
        if len(text) >= max_length:
            done.append(Beam(text, score + logp[vocab.end]))
            continue
        out += [(score + lp, text, i, state) for i, lp in enumerate(logp)]
    return sorted(out, key=lambda e: -e[0])  # stable: ties keep the lower index, as argmax does


@torch.no_grad()
def beam_search(model, vocab: Vocab, *, prefix: str = "", width: int = 5, max_length: int = MAX_LENGTH) -> list[Beam]:
    """The most probable complete names that begin with ``prefix``, best first (at most ``width``).

    A name's score is its log-probability under the model: the sum of ``log p(next character)``
    over what follows the prefix, the end marker '.' included. At every step each of the ``width``
    best names so far is extended by every symbol and the ``width`` best extensions are kept; an
    extension by '.' is a complete name and leaves the beam; a name that reaches ``max_length``
    characters is complete there (scored as if '.' followed). The search stops when the beam is
    empty, or when no name in it can enter the ``width`` best complete ones (a log-probability
    only falls). Width 1 is greedy
    decoding; a width of every possible name is exhaustive search. An empty prefix starts from
    every letter at once (the first letter is given, not scored). Beam search favours short names:
    each extra character costs log-probability.
    """
    check_options(vocab, prefix=prefix, width=width, max_length=max_length)
    model.eval()
    starts = [prefix] if prefix else [c for c in vocab.itos if c != END]
    with one_thread():
        return _search(model, vocab, starts, width, max_length)


def _search(model, vocab: Vocab, starts: list[str], width: int, max_length: int) -> list[Beam]:
    """:func:`beam_search` from these beginnings."""
    live = [(0.0, s, *_read(model, vocab, s)) for s in starts]
    done: list[Beam] = []
    while live:
        live, kept = [], _expand(live, vocab, max_length, done)[:width]
        for score, text, i, state in kept:
            if i == vocab.end:
                done.append(Beam(text, score))
            else:
                live.append((score, text + vocab.itos[i], *_read(model, vocab, vocab.itos[i], state)))
        best = sorted(b.logprob for b in done)[-width:]
        if live and len(best) == width and best[0] >= max(e[0] for e in live):
            break  # the best ``width`` complete names can no longer change
    return sorted(done, key=lambda b: -b.logprob)[:width]


@torch.no_grad()
def name_logprob(model, vocab: Vocab, name: str, *, given: int = 1) -> tuple[float, int]:
    """The log-probability of ``name`` under the model, and how many characters it scores.

    The first ``given`` characters are given (the models predict from the first character on);
    what follows them and the end marker '.' are scored: ``len(name) - given + 1`` characters.
    """
    model.eval()
    ids = vocab.encode(name)
    logits, _ = model(vocab.one_hot(ids).to(next(model.parameters()).device))
    logp = torch.log_softmax(logits.detach().double().cpu(), dim=-1)[given - 1:]
    targets = torch.tensor(ids[given:] + [vocab.end])
    return float(logp.gather(1, targets[:, None]).sum()), len(targets)


def per_character(model, vocab: Vocab, names: list[str]) -> float:
    """The mean log-probability per scored character of ``names`` (pooled over all of them)."""
    scores = [name_logprob(model, vocab, name) for name in names]
    return sum(s for s, _ in scores) / sum(c for _, c in scores)


@torch.no_grad()
def temperature_table(model, vocab: Vocab, training_names: list[str], *, temperatures=TEMPERATURES, n: int = 50,
                      seed: int = 0, max_length: int = MAX_LENGTH):
    """Samples over temperatures, measured: a pandas DataFrame indexed by temperature.

    For each temperature, ``n`` names are sampled, started with the first letters of ``n``
    training names drawn with ``seed`` (the same letters at every temperature, so the rows differ
    only in the temperature). Columns: ``new`` (the share not among ``training_names``),
    ``mean length`` of the samples and ``real mean length`` (of ``training_names``),
    ``log-prob per char`` (the samples' mean log-probability per scored character under the
    model itself, at temperature 1: :func:`name_logprob`, pooled) and ``real log-prob per char``
    (the same for the drawn training names).
    """
    for t in temperatures:
        check_options(temperature=t, n=n, max_length=max_length)
    model.eval()
    with one_thread():
        return _measure(model, vocab, training_names, temperatures, n, seed, max_length)


def _measure(model, vocab, training_names, temperatures, n, seed, max_length):
    """The rows of :func:`temperature_table`."""
    import pandas as pd

    picks = torch.randint(len(training_names), (n,), generator=torch.Generator().manual_seed(seed)).tolist()
    real = [training_names[i] for i in picks]
    known, real_logprob = set(training_names), per_character(model, vocab, real)
    real_length = sum(map(len, training_names)) / len(training_names)
    rows = {}
    for t in temperatures:
        gen = torch.Generator().manual_seed(seed)
        names = [_continue(model, vocab, r[0], gen, max_length, temperature=t) for r in real]
        rows[t] = {"new": sum(x not in known for x in names) / n, "mean length": sum(map(len, names)) / n,
                   "real mean length": real_length, "log-prob per char": per_character(model, vocab, names),
                   "real log-prob per char": real_logprob}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("temperature")


__all__ = ["generate", "sample_names", "new_share", "END", "Beam", "TEMPERATURES", "check_options", "keep_top_k",
           "keep_top_p", "next_probabilities", "sample", "beam_search", "name_logprob", "per_character",
           "temperature_table", "one_thread"]
