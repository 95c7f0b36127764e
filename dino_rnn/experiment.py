"""One notebook's run: data → model → training → samples → files.

Each model notebook is a narrated walk through an :class:`Experiment`::

    exp = Experiment("lstm", epochs=EPOCHS, lr=LR, hidden=HIDDEN, ...)  # checks every setting
    exp.load_data()      # names, vocabulary, split, one-hot tensors
    exp.build()          # seeded model; exp.model, exp.n_params
    exp.train()          # the published protocol; exp.history
    exp.sample()         # greedy and temperature samples, new or known
    exp.temperature_table()  # samples over temperatures, measured (not saved)
    exp.save()           # metrics JSON, learning-curve PNG, checkpoint

``exp.run()`` does all five. What it writes, under ``results_dir``::

    metrics/{arch}-seed{seed}.json       the numbers (schema below)
    plots/{arch}-seed{seed}.png          training and validation curves
    checkpoints/{arch}-seed{seed}.pt     the best-validation state (loads with weights_only=True)

The checkpoint's sha256 is recorded in the metrics JSON when it is written, and
:func:`load_checkpoint` (and :func:`dino_rnn.lab.load_numpy_checkpoint`) refuse a checkpoint
whose bytes no longer match it (:func:`checkpoint_bytes`).

Metrics JSON keys: ``architecture``, ``label``, ``learnable_parameters``, ``status``
("ok" or "diverged"), ``message``, ``parameters`` (every setting, :meth:`Settings.parameters
<dino_rnn.settings.Settings.parameters>`: epochs, lr, hidden, num_layers, max_names,
nonlinearity, clip, temperature, seed, device, autograd), ``gradient`` (how the gradients were
computed: "written-out", "autograd" or "numpy"; see :func:`dino_rnn.train.make_step`),
``data`` (path, sha256, names, vocab_size, train, valid, test), ``history`` (train_loss, valid_loss, seconds per
epoch), ``best_epoch`` (1-based), ``train_loss``, ``valid_loss``, ``test_loss`` (all
three at the best epoch), ``test_loss_by_position`` (the test names' loss at each target position
1, 2, ... from the best-validation state in eval mode, :func:`dino_rnn.baselines.losses_by_position`:
``mean``, ``count``, ``share``; ``null`` for a run with no best state; older files lack it),
``seconds_per_epoch`` (median), ``samples`` (greedy and
temperature lists of {start, name, new}, and their ``new_share``), ``versions``,
``finished`` (UTC time the files were written; the report uses it to tell the newest runs),
``checkpoint`` (``file``, relative to the results folder, and its ``sha256``; ``null`` when the
run wrote none).
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import types
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from dino_rnn import settings as P
from dino_rnn.baselines import losses_by_position
from dino_rnn.data import DataError, NameReport, Vocab, encode_names, read_names, sha256_of, split_names
from dino_rnn.files import NOTEBOOK_RESULTS, output_dir, result_paths
from dino_rnn.files import CHECKPOINTS, METRICS
from dino_rnn.files import atomic_path, save_figure, write_json
from dino_rnn.models import ARCHITECTURES, LABELS, build_model, count_parameters, scratch_forward
from dino_rnn.sample import TEMPERATURES, generate, new_share, sample_names, temperature_table
from dino_rnn.train import History, Step, make_optimizer, make_step, pairs_of, resolve_device, run_epochs, set_seed
from dino_rnn.train import train_step

OWN = {"forward": scratch_forward, "train_step": train_step, "generate": generate}  # what Experiment.use takes

class Experiment:
    """Train and document one architecture under the published protocol, for one seed.

    The keywords are the settings (:class:`~dino_rnn.settings.Settings`: the notebook's
    parameters lower-cased), checked here before any data is read; ``exp.settings`` holds them.
    """

    architectures = ARCHITECTURES
    checkpoint_suffix = ".pt"
    train_label = "training (dropout on)"

    def __init__(self, arch: str, *, results_dir=NOTEBOOK_RESULTS, data=None, progress: bool = True, **settings):
        arch = P.choice("ARCH", arch, self.architectures)
        if arch == "scratch" and settings.get("num_layers", 1) != 1:
            raise P.ParameterError(f"NUM_LAYERS must be 1 for the from-scratch RNN, not {settings['num_layers']!r}")
        self.settings = P.Settings(arch=arch, **settings)
        self.arch, self.seed = arch, self.settings.seed
        self.results_dir = output_dir(results_dir)
        self.data = data
        self.progress = progress
        self.paths = result_paths(self.results_dir, self.arch, self.seed, self.checkpoint_suffix)
        self.model = None
        self.history: History | None = None
        self.samples: dict | None = None
        self.finished: str | None = None
        self.checkpoint_record: dict | None = None  # {"file", "sha256"} of the checkpoint save() writes
        self.own: dict = {}  # the functions of your own that run in place of the package's (see use())
        self.test_by_position: dict | None = None  # the test loss by position, from the best state

    @property
    def label(self) -> str:
        return LABELS[self.arch]

    # -- your own code (notebook 01's exercises) --------------------------------
    def use(self, *, forward=None, train_step=None, generate=None) -> None:
        """Train and sample with functions of your own in place of the package's.

        ``forward(cell, x, state)`` replaces :func:`dino_rnn.models.scratch_forward` (the
        from-scratch model's forward pass: the model built here computes with it),
        ``train_step(model, optimizer, x, y, clip)`` replaces :func:`dino_rnn.train.train_step`
        (every training step runs it), ``generate(model, vocab, start, ...)`` replaces
        :func:`dino_rnn.sample.generate` (the samples are drawn with it). A function whose source
        is the package's own, character for character (a notebook cell that defines it again),
        counts as the package's and changes nothing. With a forward or a training step of your
        own, :meth:`train` computes the gradients with autograd through your code (the compiled
        kernels compute the package's own maths), which is slower, and says so in one line.
        """
        given = {"forward": forward, "train_step": train_step, "generate": generate}
        if forward is not None and self.arch != "scratch":
            raise P.ParameterError(f"forward= replaces the from-scratch RNN's forward pass; this is {self.arch!r}")
        for what, fn in given.items():
            if fn is None:
                continue
            if not callable(fn):
                raise P.ParameterError(f"{what}= must be a function, not {type(fn).__name__}")
            if P.same_source(fn, OWN[what]):
                self.own.pop(what, None)
            else:
                self.own[what] = fn
        if self.model is not None:
            self._own_forward(self.model)

    def _own_forward(self, model) -> None:
        """The model computes with your forward pass (or again with its own)."""
        if "forward" in self.own:
            model.forward = types.MethodType(self.own["forward"], model)
        else:
            model.__dict__.pop("forward", None)

    # -- data ------------------------------------------------------------------
    def load_data(self) -> NameReport:
        """Read and normalise the names, build the vocabulary, split, encode once."""
        self.names, self.name_report = read_names(self.data)
        self.data_path = Path(self.name_report.path)
        self.vocab = Vocab(self.names)
        self.train_names, self.valid_names, self.test_names = split_names(self.names, self.seed)
        n = self.settings.max_names
        used = self.train_names if n is None else self.train_names[:n]
        self.train_set = encode_names(used, self.vocab)
        self.valid_set = encode_names(self.valid_names, self.vocab)
        self.test_set = encode_names(self.test_names, self.vocab)
        return self.name_report

    # -- model -----------------------------------------------------------------
    def make_model(self):
        s = self.settings
        return build_model(self.arch, len(self.vocab), s.hidden, s.num_layers, s.nonlinearity or "tanh")

    def build(self):
        """The seeded model, on the chosen device."""
        set_seed(self.seed)
        self.device = resolve_device(self.settings.device)
        self.model = self.make_model().to(self.device)
        self._own_forward(self.model)
        self.n_params = count_parameters(self.model)
        return self.model

    # -- training --------------------------------------------------------------
    @property
    def trainable(self):
        """What the step trains: the model (a NumPy experiment: its net)."""
        return self.model

    def make_optimizer(self):
        return make_optimizer(self.model, self.settings.lr)

    def pairs(self, examples) -> list:
        """A split as the step takes it: ``(x, y)`` per name, on the model's device."""
        return pairs_of(examples, self.device)

    def train(self) -> History:
        """Fit under the published protocol (:mod:`dino_rnn.train`); the model ends holding its
        best-validation state. The step is :func:`~dino_rnn.train.make_step`'s: the compiled
        path's where it applies, the plain one with ``autograd=True``."""
        s = self.settings
        set_seed(s.seed)
        torch.set_num_threads(1)  # one-name steps: more threads only add overhead
        mine = [OWN[k].__name__ for k in ("forward", "train_step") if k in self.own]
        if mine:
            step = Step(self.trainable, self.make_optimizer(), s.clip, train_step=self.own.get("train_step", train_step))
            print(f"{self.label}: training with your {' and '.join(mine)}, gradients by autograd through your code "
                  "(the compiled kernels run only the package's): slower, about 15 times on this project's machine",
                  flush=True)
        else:
            step = make_step(self.trainable, self.make_optimizer(), clip=s.clip, autograd=s.autograd)
        splits = [self.pairs(x) for x in (self.train_set, self.valid_set, self.test_set)]
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging run is reported, not warned about
            self.history = run_epochs(step, *splits, epochs=s.epochs, progress=self.progress, desc=self.label)
        self.test_by_position = self.position_losses() if self.history.best_state is not None else None
        return self.history

    @torch.no_grad()
    def position_losses(self) -> dict:
        """The test names' loss by target position (:func:`dino_rnn.baselines.losses_by_position`),
        from the model as it stands (after :meth:`train`: the best-validation state), in eval mode.
        A forward pass only: no parameter and no random state changes."""
        import torch.nn.functional as F

        self.model.eval()
        per_name = []
        for x, y in pairs_of(self.test_set, self.device):
            logits, _ = self.model(x)
            per_name.append(F.cross_entropy(logits, y.to(logits.device), reduction="none").double().cpu().numpy())
        return losses_by_position(per_name)

    # -- samples ---------------------------------------------------------------
    def sample(self) -> dict:
        """One name per start letter, greedy (as published) and at the temperature."""
        fn = self.own.get("generate", generate)
        greedy = sample_names(self.model, self.vocab, self.train_names, generate=fn)
        warm = sample_names(self.model, self.vocab, self.train_names, temperature=self.settings.temperature,
                            seed=self.seed, generate=fn)
        self.samples = {
            "greedy": greedy,
            "greedy_new_share": new_share(greedy),
            "temperature": self.settings.temperature,
            "sampled": warm,
            "sampled_new_share": new_share(warm),
        }
        return self.samples

    def samples_frame(self):
        """The samples as a table: one row per start letter, greedy beside sampled, new or known."""
        import pandas as pd

        cols = {"greedy": self.samples["greedy"], f"T={self.settings.temperature:g}": self.samples["sampled"]}
        table = pd.concat({k: pd.DataFrame(v).set_index("start") for k, v in cols.items()}, axis=1)
        return table.replace({True: "new", False: "known"})

    def temperature_table(self, temperatures=TEMPERATURES, n: int = 50):
        """Samples at each temperature, measured (:func:`dino_rnn.sample.temperature_table`): the
        share of new names, their mean length beside the training names', and their mean
        log-probability per character under the model beside the training names'. Seeded by SEED."""
        return temperature_table(self.model, self.vocab, self.train_names, temperatures=temperatures, n=n, seed=self.seed)

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
            "parameters": self.settings.parameters(device=str(self.device)),
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
            "test_loss_by_position": self.test_by_position,
            "seconds_per_epoch": h.seconds_per_epoch,
            "samples": self.samples,
            "versions": {"python": platform.python_version(), "torch": torch.__version__},
            "finished": self.finished,
            "checkpoint": self.checkpoint_record,
        }

    def checkpoint(self) -> dict:
        return {
            "arch": self.arch,
            "vocab": self.vocab.itos,
            "hidden": self.settings.hidden,
            "num_layers": self.settings.num_layers,
            "nonlinearity": self.settings.nonlinearity or "tanh",
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
        }

    def plot(self):
        from dino_rnn.plots import plot_history

        return plot_history(self.history, title=f"{self.label} (seed {self.seed})", train_label=self.train_label)

    def checkpoint_data(self) -> bytes:
        """The best state as a torch checkpoint's bytes (see :func:`load_checkpoint`)."""
        buf = io.BytesIO()
        torch.save(self.checkpoint(), buf)
        return buf.getvalue()

    def save(self) -> dict[str, Path]:
        """Write the metrics JSON, the learning-curve PNG and the checkpoint, each atomically.

        The metrics record the checkpoint's sha256 (computed from the bytes then written).
        Returns the paths written (no checkpoint for a run that diverged before any best state).
        """
        import matplotlib.pyplot as plt

        self.finished = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        data, self.checkpoint_record = None, None
        if self.history.best_state is not None:
            data = self.checkpoint_data()
            self.checkpoint_record = {"file": f"{CHECKPOINTS}/{self.paths['checkpoint'].name}",
                                      "sha256": hashlib.sha256(data).hexdigest()}
        written = {"metrics": write_json(self.paths["metrics"], self.metrics)}
        fig = self.plot()
        written["plot"] = save_figure(fig, self.paths["plot"], dpi=110, bbox_inches="tight")
        plt.close(fig)
        if data is not None:
            with atomic_path(self.paths["checkpoint"]) as tmp:
                tmp.write_bytes(data)
            written["checkpoint"] = self.paths["checkpoint"]
        return written

    def run(self) -> dict:
        self.load_data()
        self.build()
        self.train()
        if self.history.status == "ok":
            self.sample()
        self.save()
        return self.metrics


_NO_RECORD = object()  # what _recorded_sha256 returns for a checkpoint no run recorded


def _recorded_sha256(path: Path) -> tuple[Path, object]:
    """The metrics JSON of ``path``'s run and the sha256 it records for ``path``.

    ``_NO_RECORD`` when there is no such JSON or it has no ``checkpoint`` key (older runs);
    ``None`` when it records another checkpoint or none (the run wrote none).
    """
    metrics = path.parent.parent / METRICS / f"{path.stem}.json"
    try:
        record = json.loads(metrics.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return metrics, _NO_RECORD
    except (OSError, ValueError):
        raise DataError(f"checkpoint {path}: the record of its run, {metrics}, cannot be read, so its checksum "
                        "cannot be checked; run the notebook again to rewrite both") from None
    if not isinstance(record, dict) or "checkpoint" not in record:
        return metrics, _NO_RECORD
    ck = record["checkpoint"]
    ok = isinstance(ck, dict) and ck.get("file") == f"{CHECKPOINTS}/{path.name}" and isinstance(ck.get("sha256"), str)
    return metrics, ck["sha256"] if ok else None


def checkpoint_bytes(path) -> bytes:
    """A checkpoint's bytes, checked against the sha256 its run recorded when writing it.

    The record is the same run's metrics JSON (``metrics/`` beside ``checkpoints/``): it
    travels with the results wherever they are copied (a study, a sweep). A mismatch raises
    :class:`DataError` (one line). A checkpoint without a record (written before checksums
    were recorded, or copied away from its ``metrics/``) loads with a warning: refusing it
    would strand every older run's checkpoint, and the checksum guards against damage, not
    against someone who could rewrite the record too.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"checkpoint {path} does not exist; run the notebook to create it") from None
    except OSError as e:
        raise DataError(f"checkpoint {path} cannot be read ({e.strerror}); run the notebook again to rewrite it") from None
    metrics, want = _recorded_sha256(path)
    if want is _NO_RECORD:
        warnings.warn(f"checkpoint {path} has no recorded checksum (written before checksums were recorded, "
                      "or away from its metrics/); it is not checked", stacklevel=3)
        return data
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        shown = f"sha256 {want[:12]}… in {metrics}, {got[:12]}… now" if want else f"{metrics} records no such checkpoint"
        raise DataError(f"checkpoint {path} does not match the checksum recorded when it was written ({shown}); "
                        "it was changed or damaged: run the notebook again to rewrite it")
    return data


def load_checkpoint(path):
    """A model and its vocabulary from a checkpoint written by :meth:`Experiment.save`.

    Its bytes are checked first (:func:`checkpoint_bytes`), then loaded with
    ``weights_only=True``; a damaged, corrupt or truncated file raises :class:`DataError` naming it.
    """
    path = Path(path)
    data = checkpoint_bytes(path)
    try:
        ck = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        vocab = Vocab.from_symbols(ck["vocab"])
        model = build_model(ck["arch"], len(vocab.itos), ck["hidden"], ck["num_layers"], ck["nonlinearity"])
        model.load_state_dict(ck["state_dict"])
    except Exception as e:  # pickle/zip errors, missing keys, wrong shapes
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"checkpoint {path} is corrupt or not a dino_rnn checkpoint ({first}); delete it and re-run") from None
    model.eval()
    return model, vocab
