"""Models: four next-character models behind one interface.

Every model maps a whole name, as one-hot rows ``x`` of shape (T, V), and an optional
recurrent state to per-step logits (T, V) and the final state::

    logits, state = model(x, state=None)

so training, evaluation and sampling (:mod:`dino_rnn.train`, :mod:`dino_rnn.sample`)
are written once for all of them. ``build_model`` is the one way to make a model.

=========  ==========================================================  ===========
arch       what it is                                                  parameters
=========  ==========================================================  ===========
scratch    an RNN made of three ``nn.Linear`` layers (the published    10856
           "from scratch" cell)
rnn        ``nn.RNN`` + ``nn.Linear`` read-out                         7707
lstm       ``nn.LSTM`` + ``nn.Linear`` read-out                        25563
gru        ``nn.GRU`` + ``nn.Linear`` read-out                         19611
=========  ==========================================================  ===========

(counts at V=27 symbols, H=64 hidden units, one layer; dropout 0.25 on the logits.)
"""

from __future__ import annotations

import torch
from torch import nn

from dino_rnn.settings import ARCHITECTURES

LABELS = {
    "scratch": "RNN from scratch (nn.Linear)",
    "rnn": "nn.RNN",
    "lstm": "nn.LSTM",
    "gru": "nn.GRU",
}
DROPOUT = 0.25


class ScratchRNN(nn.Module):
    """The published from-scratch RNN cell, built only from ``nn.Linear`` layers.

    At each step, with ``[a, b]`` meaning concatenation::

        h_t    = act(i2h([x_t, h_{t-1}]))          # Linear(V+H -> H)
        o_t    = i2o([x_t, h_{t-1}])               # Linear(V+H -> V)
        logits = dropout(o2o([h_t, o_t]))          # Linear(H+V -> V)

    The published cell has no nonlinearity on the hidden state, so its recurrence is
    linear; ``nonlinearity="tanh"`` (our default) bounds it, ``"none"`` reproduces the
    published cell exactly. Both have 10856 parameters at V=27, H=64.

    The forward pass is :func:`scratch_forward` (notebook 01's first exercise): the recurrence
    ``h_{t-1} -> h_t`` runs in a Python loop, one character at a time; ``i2o`` and ``o2o``, which
    feed nothing back, then run once over the whole name.
    """

    def __init__(self, vocab_size: int, hidden_size: int = 64, nonlinearity: str = "tanh"):
        super().__init__()
        if nonlinearity not in ("tanh", "none"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'none', not {nonlinearity!r}")
        self.vocab_size, self.hidden_size, self.nonlinearity = vocab_size, hidden_size, nonlinearity
        self.i2h = nn.Linear(vocab_size + hidden_size, hidden_size)
        self.i2o = nn.Linear(vocab_size + hidden_size, vocab_size)
        self.o2o = nn.Linear(hidden_size + vocab_size, vocab_size)
        self.dropout = nn.Dropout(DROPOUT)

    def init_state(self, device=None) -> torch.Tensor:
        return torch.zeros(self.hidden_size, device=device)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None):
        return scratch_forward(self, x, state)


def scratch_forward(cell: ScratchRNN, x: torch.Tensor, state: torch.Tensor | None = None):
    """The from-scratch cell run over a whole name: its (T, V) logits and its last hidden state (H,).

    ``cell`` holds the layers: ``cell.i2h`` (V+H -> H), ``cell.i2o`` (V+H -> V), ``cell.o2o``
    (H+V -> V), ``cell.dropout``, and ``cell.nonlinearity`` ("tanh" or "none"). ``x`` holds the
    name's one-hot rows (T, V); ``state`` is the hidden state before its first character (None:
    zeros). At each step t, with [a; b] a concatenation::

        h_t      = tanh(i2h([x_t; h_{t-1}]))      # no tanh when cell.nonlinearity == "none"
        o_t      = i2o([x_t; h_{t-1}])
        logits_t = o2o([h_t; o_t])

    and dropout acts on the stacked (T, V) logits, once.
    """
    h = cell.init_state(x.device) if state is None else state
    ### BEGIN SOLUTION
    h_prev, h_new = [], []
    for x_t in x:  # the recurrence, one character at a time
        h_prev.append(h)
        h = cell.i2h(torch.cat([x_t, h]))  # i2h([x_t; h_{t-1}])
        if cell.nonlinearity == "tanh":
            h = torch.tanh(h)
        h_new.append(h)
    h_prev, h_new = torch.stack(h_prev), torch.stack(h_new)  # (T, H) each
    o = cell.i2o(torch.cat([x, h_prev], dim=1))  # no feedback: every step at once, (T, V)
    logits = cell.dropout(cell.o2o(torch.cat([h_new, o], dim=1)))
    ### END SOLUTION
    return logits, h


class RecurrentLM(nn.Module):
    """``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` (chosen by ``cell``) + Linear(H -> V) + dropout.

    One class for the three PyTorch cells, as in pytorch/examples' word_language_model.
    """

    CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

    def __init__(self, cell: str, vocab_size: int, hidden_size: int = 64, num_layers: int = 1):
        super().__init__()
        self.cell, self.vocab_size = cell, vocab_size
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.rnn = self.CELLS[cell](vocab_size, hidden_size, num_layers)
        self.fc = nn.Linear(hidden_size, vocab_size)
        self.dropout = nn.Dropout(DROPOUT)

    def init_state(self, device=None):
        h = torch.zeros(self.num_layers, self.hidden_size, device=device)
        return (h, torch.zeros_like(h)) if self.cell == "lstm" else h

    def forward(self, x: torch.Tensor, state=None):
        out, state = self.rnn(x, state)  # unbatched: x (T, V) -> out (T, H)
        return self.dropout(self.fc(out)), state

    def written_out_parts(self):
        """(recurrent layer, read-out, dropout): what :mod:`dino_rnn.fast.fastgrad` differentiates."""
        return self.rnn, self.fc, self.dropout


def build_model(
    arch: str,
    vocab_size: int,
    hidden_size: int = 64,
    num_layers: int = 1,
    nonlinearity: str = "tanh",
) -> nn.Module:
    """Make one of :data:`ARCHITECTURES`; ``nonlinearity`` applies to ``"scratch"`` only."""
    if arch == "scratch":
        if num_layers != 1:
            raise ValueError("the from-scratch RNN has one layer; num_layers must be 1")
        return ScratchRNN(vocab_size, hidden_size, nonlinearity)
    if arch in RecurrentLM.CELLS:
        return RecurrentLM(arch, vocab_size, hidden_size, num_layers)
    raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")


def count_parameters(model: nn.Module) -> int:
    """Learnable parameters (those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
