"""The NumPy lab in the study: its two nets on Dino Names, and its aⁿbⁿ task measured.

Two runs live here: the aⁿbⁿ lab (``notebooks/05_anbn_lab.ipynb``) and the NumPy nets on Dino Names (``notebooks/06_numpy_nets.ipynb``).

Dino Names — :class:`NumpyExperiment`
    The hand-written :class:`~dino_rnn.numpy_nets.NumpyRNN` and
    :class:`~dino_rnn.numpy_nets.NumpyLSTM` trained exactly as the PyTorch notebooks train
    theirs (:mod:`dino_rnn.train`): the same seeded split, AdamW (lr 4e-4, weight decay
    0.01, PyTorch's semantics — here in NumPy), one step per name in the same order every
    epoch, mean cross-entropy, the best-validation state kept and its train / validation /
    test losses reported. There is no dropout in the NumPy nets (and no gradient clipping,
    as in the published protocol), so their "training loss" is measured on the same
    network that is validated. It writes the same files in the same schema as
    :class:`~dino_rnn.experiment.Experiment` (metrics JSON, learning-curve PNG), and a
    ``.npz`` checkpoint instead of a ``.pt`` one::

        metrics/numpy_rnn-seed{seed}.json      plots/numpy_rnn-seed{seed}.png
        checkpoints/numpy_rnn-seed{seed}.npz   (and the same for numpy_lstm)

    Sampling reuses :func:`dino_rnn.sample.sample_names` through :class:`TorchView`, a thin
    adapter that gives a NumPy net the model interface ``logits, state = model(x, state)``.

aⁿbⁿ — :func:`run_anbn`
    The lab's task (:mod:`dino_rnn.anbn`) and its three models — NumPy RNN (SGD, lr 1e-3),
    NumPy LSTM (SGD, lr 0.1), both with global-norm clipping at 0.25, and the PyTorch
    LSTM twin (Adam, lr 3e-4) — plus, unless turned off, a control the lab did not have:
    the NumPy LSTM trained with NumPy Adam at the twin's learning rate and without
    clipping, which separates "PyTorch" from "Adam". For each model it records the
    learning curves, the determined-position accuracy and the extrapolation to n = 12..20,
    and writes::

        anbn/anbn-seed{seed}.json   plots/anbn-seed{seed}.png

:func:`dino_rnn.report.tables.anbn_section` turns every ``anbn/*.json`` into a Markdown section
for the comparison report.
"""

from __future__ import annotations

import io
import math
import platform
import time
from pathlib import Path

import numpy as np

from dino_rnn import anbn
from dino_rnn import settings as P
from dino_rnn.data import DataError, Vocab, make_pair
from dino_rnn.experiment import Experiment, checkpoint_bytes
from dino_rnn.plots import ANBN_LABELS, plot_anbn
from dino_rnn.files import NOTEBOOK_RESULTS, anbn_paths, output_dir
from dino_rnn.files import save_figure, write_json
from dino_rnn.numpy_nets import MATHS, SGD, AdamW, Maths, NumpyLSTM, NumpyRNN


NUMPY_ARCHITECTURES = ("numpy_rnn", "numpy_lstm")
NUMPY_LABELS = {
    "numpy_rnn": "NumPy RNN (hand-written BPTT)",
    "numpy_lstm": "NumPy LSTM (hand-written BPTT)",
}
NETS = {"numpy_rnn": NumpyRNN, "numpy_lstm": NumpyLSTM}
WEIGHT_DECAY = 0.01  # torch.optim.AdamW's default, as in dino_rnn.train


# ---------------------------------------------------------------------------
# The adapter: a NumPy net behind the torch model interface
# ---------------------------------------------------------------------------


class TorchView:
    """Lets :func:`dino_rnn.sample.generate` drive a NumPy net.

    ``logits, state = view(x, state)`` with ``x`` one-hot rows (T, V) as a torch tensor:
    the rows' argmax are the token indices the NumPy net reads; the logits come back as a
    float64 CPU tensor and the state is the net's own (NumPy) state. ``eval()`` does
    nothing (there is no dropout) and ``parameters()`` yields one empty CPU tensor, which
    is how ``generate`` learns the device.
    """

    def __init__(self, net):
        self.net = net

    def __call__(self, x, state=None):
        import torch

        ids = x.argmax(dim=-1).cpu().numpy()
        logits, state = self.net.forward(ids, state)
        return torch.from_numpy(logits), state

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def parameters(self):
        import torch

        yield torch.empty(0)


# ---------------------------------------------------------------------------
# Dino Names
# ---------------------------------------------------------------------------


class NumpyExperiment(Experiment):
    """:class:`~dino_rnn.experiment.Experiment` for the NumPy nets: same protocol, same files.

    ``DEVICE`` is accepted and checked like everywhere else, but NumPy runs on the CPU and
    the metrics say ``"cpu"``.
    """

    architectures = NUMPY_ARCHITECTURES
    checkpoint_suffix = ".npz"
    train_label = "training (no dropout)"

    def __init__(self, arch: str, **kwargs):
        super().__init__(arch, **kwargs)
        if self.settings.num_layers != 1:
            raise P.ParameterError(f"NUM_LAYERS must be 1 for the NumPy nets, not {self.settings.num_layers!r}")
        self.net = None

    @property
    def label(self) -> str:
        return NUMPY_LABELS[self.arch]

    def load_data(self):
        report = super().load_data()
        self.train_pairs, self.valid_pairs, self.test_pairs = map(self.pairs, (self.train_set, self.valid_set, self.test_set))
        return report

    def pairs(self, examples) -> list:
        """A split as the NumPy step takes it: ``(ids, targets)`` index arrays per name."""
        return [tuple(np.asarray(a, dtype=np.intp) for a in make_pair(e.name, self.vocab)) for e in examples]

    def make_model(self):
        return NETS[self.arch](len(self.vocab), self.settings.hidden, seed=self.seed)

    def build(self):
        """The seeded NumPy net; ``exp.model`` is its :class:`TorchView` for sampling."""
        self.device = "cpu"
        self.net = self.make_model()
        self.model = TorchView(self.net)
        self.n_params = self.net.n_params
        return self.net

    @property
    def trainable(self):
        return self.net

    def make_optimizer(self):
        return AdamW(self.net.params, lr=self.settings.lr, weight_decay=WEIGHT_DECAY)

    @property
    def metrics(self) -> dict:
        m = super().metrics
        m["versions"]["numpy"] = np.__version__
        return m

    def checkpoint(self) -> dict:
        return {
            "arch": np.array(self.arch),
            "vocab": np.array(self.vocab.itos),
            "hidden": np.array(self.settings.hidden),
            "seed": np.array(self.seed),
            **{f"param/{k}": v for k, v in self.net.params.items()},
        }

    def checkpoint_data(self) -> bytes:
        """The best state as a ``.npz`` file's bytes (see :func:`load_numpy_checkpoint`)."""
        buf = io.BytesIO()
        np.savez(buf, **self.checkpoint())
        return buf.getvalue()


def load_numpy_checkpoint(path):
    """A NumPy net and its vocabulary from a checkpoint written by :meth:`NumpyExperiment.save`.

    Its bytes are checked first against the sha256 its run recorded
    (:func:`dino_rnn.experiment.checkpoint_bytes`); a damaged or corrupt file raises
    :class:`DataError` naming it.
    """
    path = Path(path)
    data = checkpoint_bytes(path)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arch = str(z["arch"])
            vocab = Vocab.from_symbols([str(s) for s in z["vocab"]])
            net = NETS[arch](len(vocab), int(z["hidden"]), seed=int(z["seed"]))
            net.set_state({k: z[f"param/{k}"] for k in net.params})
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"checkpoint {path} is corrupt or not a NumPy-net checkpoint ({first}); delete it and re-run") from None
    return net, vocab


# ---------------------------------------------------------------------------
# aⁿbⁿ
# ---------------------------------------------------------------------------


def run_anbn(
    *,
    seed: int = 0,
    epochs: int = 200,
    hidden: int = 50,
    rnn_lr: float = 1e-3,
    lstm_lr: float = 0.1,
    torch_lr: float = 3e-4,
    clip: float = 0.25,
    adam_control: bool = True,
    autograd: bool = False,
    data_seed: int = anbn.DATA_SEED,
    results_dir=NOTEBOOK_RESULTS,
    progress: bool = True,
    extrapolate=anbn.EXTRAPOLATE,
    maths: Maths = MATHS,
    complete_fn=None,
) -> dict:
    """Train the lab's models on aⁿbⁿ, measure them, write the JSON and the overlay plot.

    Every model starts from ``seed``; the data always come from ``data_seed`` (the lab's
    42), so seeds vary the initialisation only. Losses are the *final* epoch's (the lab
    has no early stopping); accuracy and extrapolation are measured on the final model.
    ``autograd=True`` trains every model with autograd's gradient: the NumPy nets' equations
    written in torch instead of their hand-written backward, and the PyTorch twin with the
    plain ``loss.backward()`` step instead of the compiled one. ``maths`` (a student's
    :class:`~dino_rnn.numpy_nets.Maths`) trains the NumPy nets with those functions, in plain NumPy,
    and ``complete_fn`` measures the extrapolation with a student's :func:`~dino_rnn.anbn.complete`.
    Returns the JSON's content (``result["models"][key]`` per model).
    """
    p = _anbn_parameters(seed=seed, epochs=epochs, hidden=hidden, rnn_lr=rnn_lr, lstm_lr=lstm_lr, torch_lr=torch_lr,
                         clip=clip, adam_control=adam_control, autograd=autograd)
    data_seed = P.seed(data_seed, "ANBN_DATA_SEED")
    results_dir = output_dir(results_dir)
    train, valid, test = anbn.split(anbn.generate(anbn.N_SEQUENCES, data_seed))
    if maths.own() and not p["autograd"]:
        print(f"The NumPy nets train with your own {', '.join(maths.own())}: in plain NumPy, since the compiled "
              "kernels compute the package's functions (a minute or two at the lab's settings).")
    models = {}
    for key, make, make_opt, clip_at, opt_text in _anbn_models(p, maths):
        fn, curves, n_params, seconds = _train_anbn(key, make, make_opt, clip_at, p, train, valid, progress)
        models[key] = _measure(key, fn, curves, n_params, opt_text, seconds, (train, valid, test), extrapolate,
                               complete_fn)
    result = {"task": _anbn_task(data_seed, train, valid, test, extrapolate), "parameters": p,
              "models": models, "versions": _versions()}
    _write_anbn(result, anbn_paths(results_dir, p["seed"]))
    return result


def _anbn_parameters(**p) -> dict:
    """The lab's parameters, checked (one-line ParameterError naming the notebook's parameter)."""
    checks = {"seed": P.seed, "epochs": lambda v: P.positive_int("ANBN_EPOCHS", v),
              "hidden": lambda v: P.positive_int("ANBN_HIDDEN", v),
              "rnn_lr": lambda v: P.positive_float("ANBN_RNN_LR", v),
              "lstm_lr": lambda v: P.positive_float("ANBN_LSTM_LR", v),
              "torch_lr": lambda v: P.positive_float("ANBN_TORCH_LR", v),
              "clip": lambda v: P.positive_float("ANBN_CLIP", v), "adam_control": bool,
              "autograd": lambda v: P.boolean("AUTOGRAD", v)}
    return {k: checks[k](v) for k, v in p.items()}


def _anbn_models(p: dict, maths: Maths = MATHS) -> list[tuple]:
    """``(key, make the net, make its optimizer, clip, the optimizer in words)`` per model; the
    PyTorch twin's are made by :func:`_train_anbn`."""
    V, H, seed, clip = len(anbn.TOKENS), p["hidden"], p["seed"], p["clip"]
    specs = [
        ("numpy_rnn", lambda: NumpyRNN(V, H, seed=seed, maths=maths), lambda n: SGD(n.params, p["rnn_lr"], maths), clip,
         f"SGD lr {p['rnn_lr']:g}, clip {clip:g}"),
        ("numpy_lstm", lambda: NumpyLSTM(V, H, seed=seed, maths=maths), lambda n: SGD(n.params, p["lstm_lr"], maths), clip,
         f"SGD lr {p['lstm_lr']:g}, clip {clip:g}"),
        ("torch_lstm", None, None, None, f"Adam lr {p['torch_lr']:g} (torch.optim.Adam), no clipping"),
    ]
    if p["adam_control"]:
        specs.append(("numpy_lstm_adam", lambda: NumpyLSTM(V, H, seed=seed, maths=maths),
                      lambda n: AdamW(n.params, p["torch_lr"], weight_decay=0.0, maths=maths), None,
                      f"NumPy Adam lr {p['torch_lr']:g}, no clipping"))
    return specs


def _train_anbn(key, make, make_opt, clip_at, p, train, valid, progress):
    """Train one of the lab's models: ``(logits function, history, parameters, seconds)``; the
    seconds leave out the compiling of the kernels (``history.compile_seconds``)."""
    t0 = time.perf_counter()
    if key == "torch_lstm":
        net = anbn.make_torch_twin(len(anbn.TOKENS), p["hidden"], p["seed"])
        n_params = sum(x.numel() for x in net.parameters())
        curves = anbn.train_torch(net, train, valid, epochs=p["epochs"], lr=p["torch_lr"], progress=progress,
                                  desc=ANBN_LABELS[key], autograd=p["autograd"])
        fn = anbn.torch_logits_fn(net)
    else:
        net = make()
        n_params = net.n_params
        with np.errstate(over="ignore", invalid="ignore"):
            curves = anbn.train_numpy(net, make_opt(net), train, valid, epochs=p["epochs"], clip=clip_at,
                                      progress=progress, desc=ANBN_LABELS[key], autograd=p["autograd"])
        fn = anbn.numpy_logits_fn(net)
    return fn, curves, n_params, time.perf_counter() - t0 - curves.compile_seconds


def _anbn_task(data_seed, train, valid, test, extrapolate) -> dict:
    always_b = {name: anbn.always_b_accuracy(s.sequences) for name, s in (("train", train), ("valid", valid), ("test", test))}
    return {"name": "a^n b^n EOS", "tokens": list(anbn.TOKENS), "n_range": [anbn.N_MIN, anbn.N_MAX],
            "sequences": anbn.N_SEQUENCES, "data_seed": data_seed, "train": len(train), "valid": len(valid),
            "test": len(test), "extrapolate": [int(n) for n in extrapolate], "always_b_accuracy": always_b}


def _write_anbn(result: dict, paths: dict) -> None:
    import matplotlib.pyplot as plt

    write_json(paths["json"], result)
    fig = plot_anbn(result)
    save_figure(fig, paths["plot"], dpi=110, bbox_inches="tight")
    plt.close(fig)


def _measure(key, fn, curves, n_params, opt_text, train_seconds, splits, extrapolate, complete_fn=None) -> dict:
    train, valid, test = splits
    ok = curves.status == "ok"
    rows = anbn.extrapolation(fn, extrapolate, complete_fn) if ok else []
    in_range = anbn.extrapolation(fn, range(anbn.N_MIN, anbn.N_MAX + 1), complete_fn) if ok else []
    test_loss = math.nan
    if ok:
        test_loss = float(np.mean([_ce(fn(x), y) for x, y in test.pairs]))
    return {
        "label": ANBN_LABELS[key],
        "learnable_parameters": int(n_params),
        "optimizer": opt_text,
        "status": curves.status,
        "message": curves.message,
        "gradient": curves.gradient,
        "history": {"train_loss": curves.train_loss, "valid_loss": curves.valid_loss, "seconds": curves.seconds},
        "final_train_loss": curves.train_loss[-1] if curves.train_loss else math.nan,
        "final_valid_loss": curves.valid_loss[-1] if curves.valid_loss else math.nan,
        "test_loss": test_loss,
        "determined": {name: anbn.determined_accuracy(fn, s.sequences) for name, s in (("train", train), ("valid", valid), ("test", test))} if ok else None,
        "in_range_exact": sum(r["exact"] for r in in_range),
        "in_range": in_range,
        "extrapolation": rows,
        "extrapolated": sum(r["exact"] for r in rows),
        "largest_n": anbn.largest_exact(rows, extrapolate[0]) if rows else None,
        "seconds": train_seconds,
        "compile_seconds": curves.compile_seconds,
        "seconds_per_epoch": float(np.median(curves.seconds)) if curves.seconds else math.nan,
    }


def _ce(logits, targets) -> float:
    from dino_rnn.numpy_nets import cross_entropy

    return cross_entropy(np.asarray(logits, dtype=np.float64), targets)


def _versions() -> dict:
    import torch

    return {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__}


__all__ = [
    "NumpyExperiment",
    "TorchView",
    "load_numpy_checkpoint",
    "run_anbn",
    "plot_anbn",
    "NUMPY_LABELS",
    "ANBN_LABELS",
]
