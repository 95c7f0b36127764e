"""The settings of a run, and the checks every parameter goes through.

:class:`Settings` holds every setting of one training run, each under one name: the
notebook's parameter lower-cased (``HIDDEN`` -> ``hidden``). The same name is the keyword of
:class:`~dino_rnn.experiment.Experiment`, the key in the metrics JSON's ``parameters``, the
column of the report, the axis of a sweep grid and the key the claims read. :data:`COMPARED`
lists, once, the settings that make a run's numbers (runs sharing them differ by seed only),
and :func:`settings_of` reads them back from a metrics JSON.

:func:`same_source` says whether a function given in place of the package's (notebook 01's
exercises, :meth:`Experiment.use <dino_rnn.experiment.Experiment.use>`) is the package's own.

Parameter checks shared by the notebooks' ``parameters`` cells and the CLI:

Every check raises :class:`ParameterError` with one line that names the parameter, the
bad value and what to give instead — before any data is read or any model is trained.

Seeds are whole numbers from 0 to 2**64-1 (the largest seed torch accepts); a study runs
at most :data:`MAX_SEEDS` (100) of them unless ``DINO_RNN_MAX_SEEDS`` allows more.

The notebooks' own check is here too: :func:`check_names` (a parameter the notebook does not
have, e.g. a misspelt ``-p EPOCSH 2``, is refused naming the nearest one, against the table
:data:`NOTEBOOK_PARAMETERS`). Where a notebook writes (``RESULTS_DIR``) is for
:mod:`dino_rnn.runner.folders` to say (``results_dir``, ``output_dir``).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import os
import re
import textwrap


# The four Dino Names models (dino_rnn.models builds them): here, where checking an --arch needs no torch.
ARCHITECTURES = ("scratch", "rnn", "lstm", "gru")
# How a run's gradients were computed, as its metrics record it ("gradient"): autograd (the plain
# steps of dino_rnn.train), the compiled written-out BPTT (dino_rnn.fast), the NumPy nets' own BPTT.
AUTOGRAD, WRITTEN_OUT, NUMPY = "autograd", "written-out", "numpy"
MAX_SEEDS = 100  # seeds per study; the environment variable DINO_RNN_MAX_SEEDS overrides it
MAX_SEED = 2**64 - 1  # the largest seed torch.manual_seed accepts


def same_source(fn, reference) -> bool:
    """Whether ``fn`` is ``reference`` or was defined from the same source text (a notebook's
    solution cell defines the package's function again, character for character)."""
    if fn is reference:
        return True
    try:
        a, b = inspect.getsource(fn), inspect.getsource(reference)
    except (OSError, TypeError):
        return False
    return textwrap.dedent(a).strip() == textwrap.dedent(b).strip()


class ParameterError(ValueError):
    """A parameter that cannot be used; the message is one line that says what to give."""


def _shorten(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _too_large_seed(name: str, shown: str) -> ParameterError:
    return ParameterError(
        f"{name} {_shorten(shown, 30)} is larger than {MAX_SEED} (2**64-1), "
        "the largest seed torch accepts; give a smaller seed"
    )


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def positive_int(name: str, value, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if not _is_int(value) or value < 1:
        extra = " or None" if allow_none else ""
        raise ParameterError(f"{name} must be a whole number of at least 1{extra}, not {value!r}")
    return value


def seed(value, name: str = "SEED") -> int:
    if not _is_int(value) or value < 0:
        raise ParameterError(f"{name} must be a whole number >= 0, not {value!r}")
    if value > MAX_SEED:
        # str() of a number with thousands of digits raises; show its size instead
        shown = str(value) if value.bit_length() < 200 else f"(a {value.bit_length()}-bit number)"
        raise _too_large_seed(name, shown)
    return value


def max_seeds() -> int:
    """The most seeds a study may run: ``$DINO_RNN_MAX_SEEDS``, else :data:`MAX_SEEDS`."""
    raw = os.environ.get("DINO_RNN_MAX_SEEDS", "")
    if not raw.strip():
        return MAX_SEEDS
    n = int(raw.strip()) if re.fullmatch(r"\d{1,18}", raw.strip()) else 0
    if n < 1:
        raise ParameterError(f"DINO_RNN_MAX_SEEDS must be a whole number of at least 1, not {_shorten(raw, 40)!r}")
    return n


def positive_float(name: str, value, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok:
        raise ParameterError(f"{name} must be a number greater than 0, not {value!r}")
    return float(value)


def boolean(name: str, value) -> bool:
    """``True`` or ``False`` only (papermill passes ``-p AUTOGRAD True`` as a bool)."""
    if not isinstance(value, bool):
        raise ParameterError(f"{name} must be True or False, not {value!r}")
    return value


def choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ParameterError(f"{name} must be one of {', '.join(map(str, choices))}, not {value!r}")
    return value


def device(value) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", value):
        raise ParameterError(f"DEVICE must be 'auto', 'cpu' or 'cuda', not {value!r}")
    if value.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ParameterError(f"DEVICE={value!r} but this machine has no CUDA device; use 'auto' or 'cpu'")
    return value


def parse_seeds(text) -> list[int]:
    """Seeds from a list (``[0, 1, 2]``), words (``"0 1 2"``, ``"0,1,2"``) or a range (``"0-4"``).

    At most :func:`max_seeds` seeds (100, or ``$DINO_RNN_MAX_SEEDS``): the count is checked
    before the list is built, so ``0-1000000000000000`` is refused without allocating it.
    """
    limit = max_seeds()
    if _is_int(text):
        return [seed(text)]
    parts: list[str] = []
    if isinstance(text, (list, tuple)):
        for t in text:
            if _is_int(t) and t > MAX_SEED:
                seed(t, "seed")  # refuses it before str() is asked to print thousands of digits
            parts.extend(str(t).replace(",", " ").split())
        shown = " ".join(map(str, text))
    elif isinstance(text, str):
        parts = text.replace(",", " ").split()
        shown = text.strip()
    else:
        shown = repr(text)
    digits = len(str(MAX_SEED))
    ranges: list[tuple[int, int]] = []
    for p in parts:
        m = re.fullmatch(r"(\d+)(?:-|\.\.)(\d+)|(\d+)", p)
        if not m:
            raise ParameterError(
                f"seeds must be whole numbers >= 0, a list (0 1 2) or a range (0-4), not {_shorten(p, 40)!r}"
            )
        ends = [m[1], m[2]] if m[1] is not None else [m[3], m[3]]
        for e in ends:  # int() of thousands of digits raises: look at the length first
            if len(e.lstrip("0")) > digits or int(e) > MAX_SEED:
                raise _too_large_seed("seed", e)
        lo, hi = int(ends[0]), int(ends[1])
        if hi < lo:
            raise ParameterError(f"seed range {p!r} runs backwards; write it low-high, e.g. 0-4")
        ranges.append((lo, hi))
    if not ranges:
        raise ParameterError(f"no seeds given in {text!r}; give e.g. 0 or 0 1 2 or 0-4")
    count = sum(hi - lo + 1 for lo, hi in ranges)
    if count > limit:
        raise ParameterError(
            f"--seeds {_shorten(shown)} asks for {count} seeds; a study runs at most {limit} "
            "(set DINO_RNN_MAX_SEEDS=N to allow more)"
        )
    out = [s for lo, hi in ranges for s in range(lo, hi + 1)]
    if len(set(out)) != len(out):
        raise ParameterError(f"seed list {text!r} repeats a seed; give each seed once")
    return out


# ---------------------------------------------------------------------------
# The notebooks: their parameters, and where RESULTS_DIR = None writes
# ---------------------------------------------------------------------------

_MODEL = ("EPOCHS", "LR", "HIDDEN", "NUM_LAYERS", "SEED", "MAX_NAMES", "TEMPERATURE", "DEVICE",
          "RESULTS_DIR", "DATA", "AUTOGRAD", "CLIP")
# Each notebook's parameters, in the order of its parameters cell (a test checks that they are
# exactly what papermill finds there). A notebook copied elsewhere still has its table.
NOTEBOOK_PARAMETERS: dict[str, tuple[str, ...]] = {
    "01_rnn_from_scratch": (*_MODEL[:-1], "NONLINEARITY", "CLIP"),
    "02_rnn": _MODEL,
    "03_lstm": _MODEL,
    "04_gru": _MODEL,
    "05_anbn_lab": ("SEED", "RESULTS_DIR", "ANBN_EPOCHS", "ANBN_HIDDEN", "ANBN_RNN_LR", "ANBN_LSTM_LR",
                    "ANBN_TORCH_LR", "ANBN_CLIP", "ANBN_ADAM_CONTROL", "AUTOGRAD"),
    "06_numpy_nets": tuple(p for p in _MODEL if p != "NUM_LAYERS"),
    "comparison": ("RESULTS_DIR", "REFERENCE_DIR"),
}
# What check_names takes for a parameter: ALL_CAPS, two characters or more (the notebooks'
# one-letter names, V, H, L, P, are not parameters and may be in the namespace on a re-run),
# holding a value papermill can inject (a class such as SGD, imported by a cell, is not one).
_PARAMETER_LIKE = re.compile(r"[A-Z][A-Z0-9_]+")
_INJECTABLE = (str, int, float, bool, list, dict, tuple, type(None))


def _declared(notebook: str) -> tuple[str, ...]:
    try:
        return NOTEBOOK_PARAMETERS[notebook]
    except KeyError:
        raise ValueError(f"no parameter table for notebook {notebook!r}; add it to NOTEBOOK_PARAMETERS") from None


def check_names(namespace, notebook: str) -> None:
    """Refuse a name in ``namespace`` that looks like a parameter but is not one of ``notebook``'s.

    Run by each notebook's first cell after its parameters (papermill's injected ones among
    them), before any work. Looked at: names holding a plain value (what papermill injects)
    that are ALL_CAPS of two characters or more, or differ from a parameter only in case
    (``epochs``). The one-line ParameterError names the nearest parameter
    (``EPOCSH is not a parameter of 02_rnn; did you mean EPOCHS?``).
    """
    declared = _declared(notebook)
    unknown = [n for n, v in sorted(namespace.items()) if n not in declared and isinstance(v, _INJECTABLE)
               and (_PARAMETER_LIKE.fullmatch(n) or n.upper() in declared)]
    if not unknown:
        return
    lines = []
    for name in unknown:
        near = difflib.get_close_matches(name.upper(), declared, n=1)
        hint = f"did you mean {near[0]}?" if near else f"its parameters are {', '.join(declared)}"
        lines.append(f"{_shorten(name, 40)} is not a parameter of {notebook}; {hint}")
    raise ParameterError("; ".join(lines))


# ---------------------------------------------------------------------------
# The settings of one run
# ---------------------------------------------------------------------------

NONLINEARITIES = ("tanh", "none")  # the from-scratch cell's hidden-state nonlinearity


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting of one training run, checked when made (one-line :class:`ParameterError`).

    Each field is the notebook's parameter lower-cased; :meth:`parameters` is what the metrics
    JSON records under ``parameters``. ``nonlinearity`` is the from-scratch cell's only (``None``
    for every other model); ``clip`` is the global gradient-norm limit (``None``: no clipping,
    the published protocol).
    """

    arch: str = "lstm"
    epochs: int = 40
    lr: float = 4e-4
    hidden: int = 64
    num_layers: int = 1
    max_names: int | None = None
    nonlinearity: str | None = "tanh"
    clip: float | None = None
    temperature: float = 0.8
    seed: int = 0
    device: str = "auto"
    autograd: bool = False

    def __post_init__(self):
        for name, check in _CHECKS.items():
            object.__setattr__(self, name, check(getattr(self, name)))
        if self.arch != "scratch":
            object.__setattr__(self, "nonlinearity", None)
        elif self.nonlinearity is None:
            object.__setattr__(self, "nonlinearity", "tanh")

    def parameters(self, **resolved) -> dict:
        """The metrics JSON's ``parameters``: every setting but ``arch`` (recorded as
        ``architecture``), with ``resolved`` ones (the device actually used) replacing them."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "arch"}
        return {**out, **resolved}


_CHECKS = {
    "epochs": lambda v: positive_int("EPOCHS", v),
    "lr": lambda v: positive_float("LR", v),
    "hidden": lambda v: positive_int("HIDDEN", v),
    "num_layers": lambda v: positive_int("NUM_LAYERS", v),
    "max_names": lambda v: positive_int("MAX_NAMES", v, allow_none=True),
    "nonlinearity": lambda v: v if v is None else choice("NONLINEARITY", v, NONLINEARITIES),
    "clip": lambda v: positive_float("CLIP", v, allow_none=True),
    "temperature": lambda v: positive_float("TEMPERATURE", v),
    "seed": seed,
    "device": device,
    "autograd": lambda v: boolean("AUTOGRAD", v),
}
DEFAULTS = {f.name: f.default for f in dataclasses.fields(Settings)}

# The settings that make a run's numbers: two runs that share them (and the names file) are
# the same experiment, seeds apart. The report's rows, a sweep's grid points and the claims'
# comparisons are all told apart by these, and only these.
COMPARED = ("arch", "epochs", "lr", "hidden", "num_layers", "max_names", "nonlinearity", "clip", "temperature")


# Metrics written before every setting had one name recorded these under another key.
RECORDED_AS = {"hidden": "hidden_size"}


def settings_of(metrics: dict) -> dict:
    """A run's :data:`COMPARED` settings, read from its metrics JSON (a setting the file does not
    record, written before the setting existed, has its default)."""
    p = metrics["parameters"]
    out = {"arch": metrics["architecture"]}
    for k in COMPARED[1:]:
        out[k] = p.get(k, p.get(RECORDED_AS.get(k), DEFAULTS[k]))
    out["lr"] = float(out["lr"])
    if out["arch"] != "scratch":
        out["nonlinearity"] = None
    return out
