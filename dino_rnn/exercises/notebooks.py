"""``dino-rnn exercises``: the student notebooks and the solutions, made from the project's notebooks.

The project's notebooks are the solutions, marked as nbgrader marks them: the body of each
exercise's function lies between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` in a cell whose
metadata say which exercise it is (``metadata.dino_rnn.exercise``: its letter and title) and that
it is nbgrader's solution cell. The student version replaces every marked region with a stub that
raises ``NotImplementedError`` naming the exercise; the solutions version is the notebook as it
is. Both are written without outputs.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import nbformat

from dino_rnn.files import ROOT, write_text
from dino_rnn.settings import ParameterError

NOTEBOOKS = ("01_rnn_from_scratch", "05_anbn_lab")  # the notebooks with exercises
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
_REGION = re.compile(rf"^([ \t]*){re.escape(BEGIN)}[ \t]*\n.*?^[ \t]*{re.escape(END)}[ \t]*$", re.M | re.S)


def exercise_of(cell) -> dict | None:
    """The ``{"letter", "title"}`` of a solution cell, or None for any other cell."""
    return cell.get("metadata", {}).get("dino_rnn", {}).get("exercise")


def stub(indent: str, exercise: dict) -> str:
    """What a student finds in place of a solution region."""
    label = f"Exercise {exercise['letter']} ({exercise['title']})"
    return (f"{indent}# YOUR CODE HERE\n"
            f'{indent}raise NotImplementedError("{label} is not done yet: write your code here, '
            f'then run the check below it")')


def student_cell_source(source: str, exercise: dict | None) -> str:
    """``source`` with every solution region replaced by the stub (unchanged if it has none)."""
    if BEGIN not in source and END not in source:
        return source
    if exercise is None:
        raise ValueError(f"a cell has {BEGIN} but no metadata.dino_rnn.exercise: {source[:60]!r}")
    out = _REGION.sub(lambda m: stub(m.group(1), exercise), source)
    if BEGIN in out or END in out:
        raise ValueError(f"unbalanced {BEGIN} / {END} in the cell of exercise {exercise['letter']}")
    return out


def _clean(nb):
    """No outputs, no execution counts: what the student or teacher runs first."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def student_version(nb):
    """A copy of ``nb`` with every solution region a stub."""
    nb = _clean(copy.deepcopy(nb))
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = student_cell_source(cell.source, exercise_of(cell))
    return nb


def exercises_in(nb) -> list[dict]:
    """Every exercise of a notebook, in order."""
    return [exercise_of(c) for c in nb.cells if c.cell_type == "code" and exercise_of(c)]


def source_notebooks(folder: Path | None = None) -> dict[str, Path]:
    """The project's notebooks that hold exercises; a one-line error when this is no clone."""
    folder = ROOT / "notebooks" if folder is None else Path(folder)
    paths = {name: folder / f"{name}.ipynb" for name in NOTEBOOKS}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ParameterError(f"cannot find {', '.join(missing)}: run dino-rnn exercises from a clone of the "
                             "project (an editable install), where notebooks/ holds them")
    return paths


def write_exercises(out, *, solutions: bool = False, folder: Path | None = None) -> list[Path]:
    """Write the student notebooks (or with ``solutions``, the solutions) into ``out``; refuse to
    replace a file that is there. Returns the paths written."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ParameterError(f"--out {str(out)!r} is a file; give a folder (it is created if missing)")
    paths = source_notebooks(folder)
    targets = {name: out / f"{name}.ipynb" for name in paths}
    there = [str(p) for p in targets.values() if p.exists() or p.is_symlink()]
    if there:
        raise ParameterError(f"already there: {', '.join(there)}; dino-rnn exercises replaces no file: "
                             "give an empty or new folder, or move them away")
    out.mkdir(parents=True, exist_ok=True)
    for name, src in paths.items():
        nb = nbformat.read(src, as_version=4)
        nb = _clean(copy.deepcopy(nb)) if solutions else student_version(nb)
        write_text(targets[name], nbformat.writes(nb) + "\n")
    return list(targets.values())


__all__ = ["NOTEBOOKS", "BEGIN", "END", "student_version", "student_cell_source", "exercises_in",
           "write_exercises", "exercise_of"]
