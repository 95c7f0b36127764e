"""One notebook's run: data → model → training → samples → files.

Each model notebook is a narrated walk through an :class:`Experiment`::

    exp = Experiment("lstm", epochs=EPOCHS, lr=LR, hidden=HIDDEN, ...)  # checks every parameter
    exp.load_data()      # names, vocabulary, split, one-hot tensors
    exp.build()          # seeded model; exp.model, exp.n_params
    exp.train()          # the published protocol; exp.history
    exp.sample()         # greedy and temperature samples, new or known
    exp.save()           # metrics JSON, learning-curve PNG, checkpoint

``exp.run()`` does all five. What it writes, under ``results_dir``::

    metrics/{arch}-seed{seed}.json       the numbers (schema below)
    plots/{arch}-seed{seed}.png          training and validation curves
    checkpoints/{arch}-seed{seed}.pt     the best-validation state (loads with weights_only=True)

Metrics JSON keys: ``architecture``, ``label``, ``learnable_parameters``, ``status``
("ok" or "diverged"), ``message``, ``parameters`` (epochs, lr, hidden_size, num_layers,
seed, max_names, temperature, device, nonlinearity, autograd), ``gradient`` (how the
gradients were computed: "written-out", "autograd" or "numpy"; see :mod:`dino_rnn.steps`),
``data`` (path, sha256, names, vocab_size, train, valid, test), ``history`` (train_loss, valid_loss, seconds per
epoch), ``best_epoch`` (1-based), ``train_loss``, ``valid_loss``, ``test_loss`` (all
three at the best epoch), ``seconds_per_epoch`` (median), ``samples`` (greedy and
temperature lists of {start, name, new}, and their ``new_share``), ``versions``,
``finished`` (UTC time the files were written; the report uses it to tell the newest runs).
"""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from pathlib import Path

import torch

from . import params as P
from .data import DataError, NameReport, Vocab, encode_names, read_names, sha256_of, split_names
from .resultsdir import NOTEBOOK_RESULTS, result_paths
from .files import save_figure, save_torch, write_json
from .models import ARCHITECTURES, LABELS, build_model, count_parameters
from .sample import new_share, sample_names
from .train import History, fit, resolve_device, set_seed

class Experiment:
    """Train and document one architecture under the published protocol, for one seed."""

    architectures = ARCHITECTURES
    checkpoint_suffix = ".pt"
    train_label = "training (dropout on)"

    def __init__(
        self,
        arch: str,
        *,
        epochs: int = 40,
        lr: float = 4e-4,
        hidden: int = 64,
        num_layers: int = 1,
        seed: int = 0,
        max_names: int | None = None,
        results_dir=NOTEBOOK_RESULTS,
        device: str = "auto",
        data=None,
        temperature: float = 0.8,
        nonlinearity: str = "tanh",
        autograd: bool = False,
        progress: bool = True,
    ):
        # Every parameter is checked here, before any data is read or anything trained.
        self.arch = P.choice("ARCH", arch, self.architectures)
        self.epochs = P.positive_int("EPOCHS", epochs)
        self.lr = P.positive_float("LR", lr)
        self.hidden = P.positive_int("HIDDEN", hidden)
        self.num_layers = P.positive_int("NUM_LAYERS", num_layers)
        if self.arch == "scratch" and self.num_layers != 1:
            raise P.ParameterError(f"NUM_LAYERS must be 1 for the from-scratch RNN, not {num_layers!r}")
        self.seed = P.seed(seed)
        self.max_names = P.positive_int("MAX_NAMES", max_names, allow_none=True)
        self.temperature = P.positive_float("TEMPERATURE", temperature)
        self.nonlinearity = P.choice("NONLINEARITY", nonlinearity, ("tanh", "none"))
        self.device_name = P.device(device)
        self.autograd = P.boolean("AUTOGRAD", autograd)
        self.results_dir = P.output_dir(results_dir)
        self.data = data
        self.progress = progress
        self.paths = result_paths(self.results_dir, self.arch, self.seed, self.checkpoint_suffix)
        self.model = None
        self.history: History | None = None
        self.samples: dict | None = None
        self.finished: str | None = None

    @property
    def label(self) -> str:
        return LABELS[self.arch]

    # -- data ------------------------------------------------------------------
    def load_data(self) -> NameReport:
        """Read and normalise the names, build the vocabulary, split, encode once."""
        self.names, self.name_report = read_names(self.data)
        self.data_path = Path(self.name_report.path)
        self.vocab = Vocab(self.names)
        self.train_names, self.valid_names, self.test_names = split_names(self.names, self.seed)
        used = self.train_names if self.max_names is None else self.train_names[: self.max_names]
        self.train_set = encode_names(used, self.vocab)
        self.valid_set = encode_names(self.valid_names, self.vocab)
        self.test_set = encode_names(self.test_names, self.vocab)
        return self.name_report

    # -- model -----------------------------------------------------------------
    def make_model(self):
        return build_model(self.arch, len(self.vocab), self.hidden, self.num_layers, self.nonlinearity)

    def build(self):
        """The seeded model, on the chosen device."""
        set_seed(self.seed)
        self.device = resolve_device(self.device_name)
        self.model = self.make_model().to(self.device)
        self.n_params = count_parameters(self.model)
        return self.model

    # -- training --------------------------------------------------------------
    def train(self) -> History:
        """Fit under the published protocol; the model ends holding its best-validation state."""
        set_seed(self.seed)
        self.history = fit(
            self.model,
            self.train_set,
            self.valid_set,
            self.test_set,
            epochs=self.epochs,
            lr=self.lr,
            autograd=self.autograd,
            progress=self.progress,
            desc=self.label,
        )
        return self.history

    # -- samples ---------------------------------------------------------------
    def sample(self) -> dict:
        """One name per start letter, greedy (as published) and at the temperature."""
        greedy = sample_names(self.model, self.vocab, self.train_names)
        warm = sample_names(self.model, self.vocab, self.train_names, temperature=self.temperature, seed=self.seed)
        self.samples = {
            "greedy": greedy,
            "greedy_new_share": new_share(greedy),
            "temperature": self.temperature,
            "sampled": warm,
            "sampled_new_share": new_share(warm),
        }
        return self.samples

    def samples_frame(self):
        """The samples as a table: one row per start letter, greedy beside sampled, new or known."""
        import pandas as pd

        cols = {"greedy": self.samples["greedy"], f"T={self.temperature:g}": self.samples["sampled"]}
        table = pd.concat({k: pd.DataFrame(v).set_index("start") for k, v in cols.items()}, axis=1)
        return table.replace({True: "new", False: "known"})

    def parameter_table(self):
        """The model's learnable tensors: name, shape and number of parameters."""
        import pandas as pd

        rows = [(n, tuple(p.shape), p.numel()) for n, p in self.model.named_parameters() if p.requires_grad]
        return pd.DataFrame(rows, columns=["tensor", "shape", "parameters"])

    # -- files -----------------------------------------------------------------
    @property
    def metrics(self) -> dict:
        h = self.history
        return {
            "architecture": self.arch,
            "label": self.label,
            "learnable_parameters": self.n_params,
            "status": h.status,
            "message": h.message,
            "parameters": {
                "epochs": self.epochs,
                "lr": self.lr,
                "hidden_size": self.hidden,
                "num_layers": self.num_layers,
                "seed": self.seed,
                "max_names": self.max_names,
                "temperature": self.temperature,
                "device": str(self.device),
                "nonlinearity": self.nonlinearity if self.arch == "scratch" else None,
                "autograd": self.autograd,
            },
            "gradient": h.gradient,
            "data": {
                "path": str(self.data_path),
                "sha256": sha256_of(self.data_path),
                "names": len(self.names),
                "vocab_size": len(self.vocab),
                "mean_name_length": sum(map(len, self.names)) / len(self.names),
                "train": len(self.train_set),
                "valid": len(self.valid_set),
                "test": len(self.test_set),
            },
            "history": {"train_loss": h.train_loss, "valid_loss": h.valid_loss, "seconds": h.seconds},
            "best_epoch": h.best_epoch,
            "train_loss": h.best_train_loss,
            "valid_loss": h.best_valid_loss,
            "test_loss": h.test_loss,
            "seconds_per_epoch": h.seconds_per_epoch,
            "samples": self.samples,
            "versions": {"python": platform.python_version(), "torch": torch.__version__},
            "finished": self.finished,
        }

    def checkpoint(self) -> dict:
        return {
            "arch": self.arch,
            "vocab": self.vocab.itos,
            "hidden": self.hidden,
            "num_layers": self.num_layers,
            "nonlinearity": self.nonlinearity,
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
        }

    def plot(self):
        from .report import plot_history

        return plot_history(self.history, title=f"{self.label} (seed {self.seed})", train_label=self.train_label)

    def write_checkpoint(self, path: Path) -> Path:
        """The best state as a torch checkpoint (see :func:`load_checkpoint`)."""
        return save_torch(self.checkpoint(), path)

    def save(self) -> dict[str, Path]:
        """Write the metrics JSON, the learning-curve PNG and the checkpoint, each atomically.

        Returns the paths written (no checkpoint for a run that diverged before any best state).
        """
        import matplotlib.pyplot as plt

        self.finished = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        written = {"metrics": write_json(self.paths["metrics"], self.metrics)}
        fig = self.plot()
        written["plot"] = save_figure(fig, self.paths["plot"], dpi=110, bbox_inches="tight")
        plt.close(fig)
        if self.history.best_state is not None:
            written["checkpoint"] = self.write_checkpoint(self.paths["checkpoint"])
        return written

    def run(self) -> dict:
        self.load_data()
        self.build()
        self.train()
        if self.history.status == "ok":
            self.sample()
        self.save()
        return self.metrics


def load_checkpoint(path):
    """A model and its vocabulary from a checkpoint written by :meth:`Experiment.save`.

    Loads with ``weights_only=True``; a corrupt or truncated file raises :class:`DataError`
    naming it.
    """
    path = Path(path)
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        vocab = Vocab.from_symbols(ck["vocab"])
        model = build_model(ck["arch"], len(vocab.itos), ck["hidden"], ck["num_layers"], ck["nonlinearity"])
        model.load_state_dict(ck["state_dict"])
    except FileNotFoundError:
        raise DataError(f"checkpoint {path} does not exist; run the notebook to create it") from None
    except Exception as e:  # pickle/zip errors, missing keys, wrong shapes
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"checkpoint {path} is corrupt or not a dino_rnn checkpoint ({first}); delete it and re-run") from None
    model.eval()
    return model, vocab
