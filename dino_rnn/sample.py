"""Sampling: one ``generate`` for every model.

Greedy decoding (the published way: always the most likely next character) or sampling
from the softmax at a temperature, with its own seeded generator so a run repeats.
"""

from __future__ import annotations

import string
from collections.abc import Callable

import torch
from torch import nn

from dino_rnn.data import END, Vocab


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


__all__ = ["generate", "sample_names", "new_share", "END"]
