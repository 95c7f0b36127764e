"""What every exercise check shares.

A check runs a student's function on small random inputs and compares what it returns with
the package's own function (the solution) and, for gradients, with central finite differences.
When they differ it looks the difference up in a *catalogue of mistakes*: each entry is a
classic mistake, its message, and what a function with that mistake returns on the same inputs.
The message of the first entry that matches is the diagnosis; when none matches, the check says
which output is wrong and where.

Every failure is one :class:`ExerciseError` whose message names the exercise, the output that is
wrong, and the likely cause.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from dino_rnn.settings import same_source  # one definition; Experiment.use (the core) needs it too

TOLERANCE = 1e-6  # relative to the output's scale; the inputs are small and in float64


class ExerciseError(AssertionError):
    """A check failed: the message says which exercise, what is wrong and the likely cause."""


@dataclass(frozen=True)
class Exercise:
    """One exercise: its letter in its notebook, and what it asks for in a few words."""

    letter: str
    title: str

    def __str__(self) -> str:
        return f"Exercise {self.letter} ({self.title})"

    def fail(self, message: str) -> ExerciseError:
        return ExerciseError(f"{self}: {message}")

    def passed(self, what: str) -> None:
        print(f"{self}: passed. {what}")


@dataclass(frozen=True)
class Mistake:
    """A classic mistake: its message, and what a function with the mistake returns on the check's inputs."""

    message: str
    returns: Callable[[], object]


def difference(got, want) -> float:
    """The largest absolute difference, relative to the size of ``want`` (at least 1)."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return float(np.max(np.abs(got - want), initial=0.0) / max(1.0, float(np.max(np.abs(want), initial=0.0))))


def close(got, want, tol: float = TOLERANCE) -> bool:
    """Same shape and every entry within ``tol`` (relative to ``want``'s scale)."""
    if isinstance(want, Mapping):
        return isinstance(got, Mapping) and set(got) == set(want) and all(close(got[k], want[k], tol) for k in want)
    if isinstance(want, tuple):
        return isinstance(got, tuple) and len(got) == len(want) and all(close(g, w, tol) for g, w in zip(got, want))
    got_a, want_a = np.asarray(got), np.asarray(want)
    return got_a.shape == want_a.shape and np.all(np.isfinite(got_a)) and difference(got_a, want_a) <= tol


def where(got, want) -> str:
    """``"[2, 4]: 0.31 instead of 0.12"``: the entry that differs most."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.ndim == 0:
        return f"{got:.6g} instead of {want:.6g}"
    idx = np.unravel_index(int(np.argmax(np.abs(got - want))), want.shape)
    at = ", ".join(str(int(i)) for i in idx)
    return f"[{at}]: {got[idx]:.6g} instead of {want[idx]:.6g}"


def check_array(ex: Exercise, name: str, got, want, tol: float = TOLERANCE) -> None:
    """Raise unless ``got`` is an array of ``want``'s shape that equals it; say how it is wrong."""
    if got is None:
        raise ex.fail(f"{name} is None; did the function forget to return it?")
    got_a = np.asarray(got)
    want_a = np.asarray(want)
    if got_a.shape != want_a.shape:
        raise ex.fail(f"{name} has shape {got_a.shape}, it should be {want_a.shape}")
    if not np.all(np.isfinite(got_a.astype(np.float64))):
        raise ex.fail(f"{name} contains NaN or infinity")
    if difference(got_a, want_a) > tol:
        raise ex.fail(f"{name} is wrong, largest difference at {where(got_a, want_a)}")


def check_dict(ex: Exercise, name: str, got, want: Mapping, tol: float = TOLERANCE) -> None:
    """A dict of arrays (gradients, parameters): the same keys, and each array right."""
    if not isinstance(got, Mapping):
        raise ex.fail(f"{name} should be a dict with the keys {sorted(want)}, not {type(got).__name__}")
    if set(got) != set(want):
        raise ex.fail(f"{name} has the keys {sorted(got)}, it should have {sorted(want)}")
    for k in want:
        check_array(ex, f"{name}[{k!r}]", got[k], want[k], tol)


def diagnose(ex: Exercise, got, mistakes: list[Mistake], tol: float = TOLERANCE) -> None:
    """Raise with the message of the first mistake whose output equals ``got``, if one does."""
    for m in mistakes:
        if close(got, m.returns(), tol):
            raise ex.fail(m.message)


def finite_differences(loss: Callable[[], float], params: Mapping[str, np.ndarray], eps: float = 1e-6) -> dict:
    """The gradient of ``loss()`` with respect to every entry of ``params``, by central differences
    (``params`` changed in place and restored)."""
    grads = {}
    for k, p in params.items():
        g = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + eps
            up = loss()
            p[idx] = old - eps
            down = loss()
            p[idx] = old
            g[idx] = (up - down) / (2 * eps)
        grads[k] = g
    return grads


def call(ex: Exercise, fn: Callable, *args, **kwargs):
    """Call the student's function; a stub's NotImplementedError passes through as it is."""
    if not callable(fn):
        raise ex.fail(f"expected a function, got {type(fn).__name__}")
    return fn(*args, **kwargs)


__all__ = ["Exercise", "ExerciseError", "Mistake", "check_array", "check_dict", "diagnose", "finite_differences",
           "same_source", "close", "difference", "call"]
