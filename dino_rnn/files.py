"""Where results live, and atomic file writes.

Where results live (one place decides it)::

    results/reference/   the committed five-seed run behind the README; only
                         ``dino-rnn study --reference`` writes here
    results/study/       ``dino-rnn study`` (default ``--out``); ignored by git
    results/notebooks/   the notebooks run by hand in Jupyter (their RESULTS_DIR); ignored by git

and, inside any of them, where each file goes (:func:`result_paths`, :func:`anbn_paths`).
A notebook's ``RESULTS_DIR`` goes through :func:`results_dir` and :func:`output_dir`, which
refuse the committed reference (:func:`refuse_reference`) and any folder that cannot be
written. How a study or a sweep replaces a whole folder safely is the runner's business
(:mod:`dino_rnn.runner.folders`).

Atomic writes: a reader sees the old complete file or the new complete file, never half.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from dino_rnn.settings import ParameterError


@contextmanager
def atomic_path(dest: str | os.PathLike):
    """Yield a temporary path beside ``dest``; on success it replaces ``dest`` in one step."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are for sharing
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(dest: str | os.PathLike, text: str) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(dest)


def write_json(dest: str | os.PathLike, obj) -> Path:
    return write_text(dest, json.dumps(obj, indent=1, allow_nan=True) + "\n")


def save_figure(fig, dest: str | os.PathLike, **kwargs) -> Path:
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format=dest.suffix.lstrip(".") or "png", **kwargs)
    return dest


ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
REFERENCE = RESULTS / "reference"
STUDY = RESULTS / "study"
NOTEBOOK_RESULTS = RESULTS / "notebooks"
BENCHMARK_JSON = RESULTS / "benchmark.json"  # dino-rnn bench --out results/benchmark.md writes it beside the .md

# Inside a results folder (a study's, the reference, RESULTS_DIR of a notebook run by hand):
METRICS, PLOTS, CHECKPOINTS, ANBN_DIR = "metrics", "plots", "checkpoints", "anbn"
STUDY_JSON = "study.json"  # what the study that wrote the folder ran, and how it went


def result_paths(results_dir, arch: str, seed: int, checkpoint_suffix: str = ".pt") -> dict[str, Path]:
    """Where one model run's metrics JSON, learning-curve plot and checkpoint go."""
    r, stem = Path(results_dir), f"{arch}-seed{seed}"
    return {
        "metrics": r / METRICS / f"{stem}.json",
        "plot": r / PLOTS / f"{stem}.png",
        "checkpoint": r / CHECKPOINTS / f"{stem}{checkpoint_suffix}",
    }


def anbn_paths(results_dir, seed: int) -> dict[str, Path]:
    """Where one aⁿbⁿ run's JSON and overlay plot go."""
    r = Path(results_dir)
    return {"json": r / ANBN_DIR / f"anbn-seed{seed}.json", "plot": r / PLOTS / f"anbn-seed{seed}.png"}


MANIFEST = ".dino-rnn.json"
MARKER = ".dino-rnn-staging"  # in a staging or temporary folder only: everything in it is the run's own
# In the committed reference only (tracked by git): every writer refuses a folder carrying it,
# or lying inside one, unless asked for the reference (``--reference``).
REFERENCE_MARK = ".dino-rnn-reference"
# Files of ours that are never a user's and never listed in a manifest.
OWN_MARKS = (MANIFEST, MARKER, REFERENCE_MARK)
# The longest name a results folder may have: its work folder ``.NAME.dino-rnn`` must fit in 255 bytes.
MAX_NAME_BYTES = 255 - len(".") - len(".dino-rnn")


# ---------------------------------------------------------------------------
# Where a writer may write (every writer asks here first)
# ---------------------------------------------------------------------------


def resolved(path, name: str) -> Path:
    """``path`` with ``~`` expanded and every symlink followed; one line for a path that cannot be."""
    try:
        return Path(path).expanduser().resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop, a component that is not a folder
        raise ParameterError(f"{name} {str(path)!r} cannot be resolved ({e}); give a plain folder path") from None


def reference_holding(path) -> Path | None:
    """The committed reference that ``path`` is, or lies inside (its real location), else ``None``.

    Symlinks are followed, and the mark is a file inside the reference, so a second clone's
    reference, a bind mount of it and any spelling of the path are all found.
    """
    p = resolved(path, "the path")
    for folder in (p, *p.parents):
        try:
            if (folder / REFERENCE_MARK).is_file():
                return folder
        except OSError:
            continue
    return None


def refuse_reference(path, name: str = "--out", *, allowed: bool = False) -> None:
    """Refuse, with one line, to write ``path`` when it is or lies inside a committed reference.

    ``allowed`` (``--reference``) admits the reference folder itself, never a folder inside it.
    """
    real = resolved(path, name)
    ref = reference_holding(real)
    if ref is None or (allowed and ref == real):
        return
    where = "is" if ref == real else "lies inside"
    raise ParameterError(
        f"{name} {str(path)!r} {where} the committed reference results ({ref}, marked by {REFERENCE_MARK}); "
        "give another folder (dino-rnn study --reference regenerates the reference on purpose)"
    )


def _write_test(folder: Path) -> None:
    """Create and remove a file in ``folder``: an OSError if this process cannot write there
    (a real write, so it holds for root without its DAC override too)."""
    fd, tmp = tempfile.mkstemp(prefix=".write-test-", dir=folder)
    os.close(fd)
    os.unlink(tmp)


def claim_file(path, name: str, is_ours) -> Path:
    """Check, before any work, that a writer may write the single file ``path``; returns it resolved.

    Refused with one line: a path in the committed reference, a folder, a file that
    ``is_ours(path)`` does not recognise as this writer's own (never overwritten), a folder
    that cannot be written.
    """
    refuse_reference(path, name)
    p = resolved(path, name)
    refuse_work_folder(p, name)
    if p.is_dir():
        raise ParameterError(f"{name} {str(path)!r} is a folder; give a file path")
    if p.exists() and not is_ours(p):
        raise ParameterError(
            f"{name} {str(path)!r} exists and was not written by this command; give a new file name, or move it away"
        )
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        _write_test(p.parent)
    except OSError as e:
        raise ParameterError(f"{name} {str(path)!r}: cannot write in its folder ({e.strerror}); give another path") from None
    return p


def output_dir(value, name: str = "RESULTS_DIR") -> Path:
    """A folder we can write to: created if missing; a file, a read-only folder, or the
    committed reference (or a folder inside it, however reached) is refused."""
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ParameterError(f"{name} must be a folder path, not {value!r}")
    p = Path(value).expanduser()
    refuse_reference(p, name)  # before anything is created there
    if p.exists() and not p.is_dir():
        raise ParameterError(f"{name} {str(p)!r} is a file, not a folder; give a folder path")
    try:
        p.mkdir(parents=True, exist_ok=True)
        _write_test(p)
    except OSError as e:
        raise ParameterError(f"{name} {str(p)!r} is not writable ({e.strerror}); give a folder you can write to") from None
    return p



def notebook_file(notebook: str) -> Path | None:
    """This notebook's file when Jupyter says which it is, else ``None``.

    jupyter_server 2 starts a notebook's kernel with ``JPY_SESSION_NAME`` set to the
    notebook's path; it counts only when it names an existing ``{notebook}.ipynb`` (a kernel
    started by a command run from another notebook inherits that notebook's).
    """
    raw = os.environ.get("JPY_SESSION_NAME", "")
    if not raw.endswith(".ipynb"):
        return None
    p = Path(raw).expanduser()
    for candidate in ([p] if p.is_absolute() else [Path.cwd() / p, Path.cwd() / p.name]):
        if candidate.stem == notebook and candidate.is_file():
            return candidate.resolve()
    return None


def results_dir(value, notebook: str) -> Path | str:
    """``RESULTS_DIR`` as given, or for ``None`` the notebooks' results folder, never cwd-relative.

    ``None`` is, in this order: ``<project>/results/notebooks`` of the project whose
    ``notebooks/`` holds this notebook, when Jupyter says which file it is (else
    ``dino_rnn_results/`` beside that file); the project the package is installed from
    (``results/notebooks`` of an editable install in a clone); ``dino_rnn_results/`` in the
    current folder (a package installed from an index, used elsewhere).
    """
    if value is not None:
        return value
    nb = notebook_file(notebook)
    if nb is not None:
        project = nb.parent.parent
        in_project = nb.parent.name == "notebooks" and (project / "dino_rnn" / "__init__.py").is_file()
        return project / "results" / "notebooks" if in_project else nb.parent / "dino_rnn_results"
    if (ROOT / "notebooks").is_dir():
        return NOTEBOOK_RESULTS
    return Path.cwd() / "dino_rnn_results"


def refuse_work_folder(path: Path, name: str) -> None:
    """Refuse a results folder inside a run's hidden work folder (``.NAME.dino-rnn``)."""
    inside = [f for f in (path, *path.parents) if f.name.startswith(".") and f.name.endswith(".dino-rnn")]
    if inside:
        raise ParameterError(f"{name} {str(path)!r} lies inside {inside[0]}, a hidden folder where dino-rnn "
                             "keeps a run's work; give a folder outside it")


def check_name(path: Path, name: str) -> None:
    """Refuse a folder name too long for the work folder beside it."""
    if len(os.fsencode(path.name)) > MAX_NAME_BYTES:
        raise ParameterError(
            f"{name} name {path.name[:40]!r}... is {len(os.fsencode(path.name))} bytes long; a run keeps a hidden "
            f"folder .NAME.dino-rnn beside it, so give a name of at most {MAX_NAME_BYTES} bytes"
        )


def check_same_filesystem(path: Path, name: str) -> None:
    """Refuse a folder that is a mount point: its files are swapped with folders beside it."""
    if path.is_dir() and os.path.ismount(path):
        raise ParameterError(
            f"{name} {str(path)!r} is a mount point; a run moves files between it and a hidden folder "
            f"beside it on the same file system, so give a folder inside it (e.g. {str(path / 'results')!r})"
        )
