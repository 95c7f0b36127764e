"""The teaching edition: the exercise notebooks, one source for every solution, and dino-rnn exercises.

The checks' own tests are test_exercises_lab.py (notebook 05) and test_exercises_scratch.py
(notebook 01); here: the notebooks' exercise cells are the package's code, nbgrader can read them,
the student version leaks no solution and stops at the first exercise, the solutions run to the
end in a folder of their own against an installed (not editable) package.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from dino_rnn.exercises import notebooks as ex

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
DINO = [sys.executable, "-m", "dino_rnn"]
# Where each notebook's solutions live in the package.
MODULES = {"05_anbn_lab": ("dino_rnn.numpy_nets", "dino_rnn.anbn"),
           "01_rnn_from_scratch": ("dino_rnn.models", "dino_rnn.train", "dino_rnn.sample")}
LEAST = {"05_anbn_lab": 10, "01_rnn_from_scratch": 3}


def source(name: str):
    return nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)


def solution_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code" and ex.BEGIN in c.source]


def package_function(notebook: str, name: str):
    modules = [importlib.import_module(m) for m in MODULES[notebook]]
    found = [getattr(m, name) for m in modules if hasattr(m, name)]
    assert len(found) == 1, f"{name} is in {len(found)} of {', '.join(MODULES[notebook])}"
    return found[0]


@pytest.mark.parametrize("name", ex.NOTEBOOKS)
def test_every_exercise_cell_is_the_package_s_own_source(name):
    """One source: the notebook defines the very function the package runs, character for character."""
    cells = solution_cells(source(name))
    assert len(cells) >= LEAST[name]
    for cell in cells:
        defs = [n for n in ast.parse(cell.source).body if isinstance(n, ast.FunctionDef)]
        assert len(defs) == 1, cell.source[:80]
        fn = package_function(name, defs[0].name)
        assert cell.source.strip() == inspect.getsource(fn).strip(), (
            f"{name}: the cell of {defs[0].name} differs from the package's source; copy "
            f"inspect.getsource({fn.__module__}.{defs[0].name}) into it")


@pytest.mark.parametrize("name", ex.NOTEBOOKS)
def test_the_exercises_are_nbgrader_cells_with_a_locked_check_after_each(name):
    nb = source(name)
    ids, letters = [], []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or ex.BEGIN not in cell.source:
            continue
        meta = cell.metadata["nbgrader"]
        assert meta["solution"] is True and meta["grade"] is False and meta["schema_version"] == 3
        letters.append(ex.exercise_of(cell)["letter"])
        after = nb.cells[i + 1]
        assert after.cell_type == "code" and after.source.startswith("check.")
        assert after.metadata["nbgrader"]["grade"] is True and after.metadata["nbgrader"]["locked"] is True
        ids += [meta["grade_id"], after.metadata["nbgrader"]["grade_id"]]
    assert len(set(ids)) == len(ids)
    assert letters == [chr(ord("A") + k) for k in range(len(letters))]  # A, B, C, … in notebook order


def solution_lines(nb) -> set[str]:
    lines = set()
    for cell in solution_cells(nb):
        for region in ex._REGION.finditer(cell.source):
            for line in region.group(0).splitlines()[1:-1]:
                code = line.split("#")[0].strip()
                if len(code) >= 12:  # `break`, `else:` and the like are in any code
                    lines.add(code)
    return lines


@pytest.mark.parametrize("name", ex.NOTEBOOKS)
def test_no_solution_line_appears_in_the_student_version(name):
    nb = source(name)
    student = ex.student_version(nb)
    lines = {line.split("#")[0].strip() for c in student.cells for line in c.source.splitlines()}
    assert solution_lines(nb) and not solution_lines(nb) & lines
    assert ex.BEGIN not in nbformat.writes(student) and ex.END not in nbformat.writes(student)
    stubs = [c for c in student.cells if "is not done yet" in c.source]
    assert len(stubs) == len(solution_cells(nb))


def test_a_cell_with_unbalanced_markers_is_refused():
    with pytest.raises(ValueError, match="unbalanced"):
        ex.student_cell_source(f"def f():\n    {ex.BEGIN}\n    return 1\n", {"letter": "A", "title": "t"})
    with pytest.raises(ValueError, match="no metadata"):
        ex.student_cell_source(f"def f():\n    {ex.BEGIN}\n    return 1\n    {ex.END}\n", None)


def run_cli(*args, cwd=ROOT):
    return subprocess.run([*DINO, *args], capture_output=True, text=True, cwd=cwd)


def test_the_command_writes_both_versions_and_replaces_no_file(tmp_path):
    out = tmp_path / "class"
    done = run_cli("exercises", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"{n}.ipynb" for n in sorted(ex.NOTEBOOKS)]
    for name in ex.NOTEBOOKS:
        written = nbformat.read(out / f"{name}.ipynb", as_version=4)
        assert nbformat.writes(written) == nbformat.writes(ex.student_version(source(name)))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = run_cli("exercises", "--out", str(out), "--solutions")
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "replaces no file" in again.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    sol = run_cli("exercises", "--out", str(tmp_path / "sol"), "--solutions")
    assert sol.returncode == 0, sol.stderr
    for name in ex.NOTEBOOKS:
        text = (tmp_path / "sol" / f"{name}.ipynb").read_text()
        assert ex.BEGIN in text and "is not done yet" not in text
        assert [c.source for c in nbformat.reads(text, as_version=4).cells] == [c.source for c in source(name).cells]
    (tmp_path / "file").write_text("x")
    bad = run_cli("exercises", "--out", str(tmp_path / "file"))
    assert bad.returncode == 2 and "is a file" in bad.stderr and bad.stderr.count("\n") == 1


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The package installed from a copy of its source into a folder of its own (not editable)."""
    tmp = tmp_path_factory.mktemp("installed")
    src = tmp / "src"
    src.mkdir()
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / part, src / part)
    shutil.copytree(ROOT / "dino_rnn", src / "dino_rnn", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(tmp / "site"), str(src)], check=True, capture_output=True)
    return tmp / "site"


def papermill(notebook: Path, installed: Path, *params: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(installed))
    cmd = [sys.executable, "-m", "papermill", "-k", "python3", notebook.name, "out.ipynb", "--log-level", "ERROR"]
    for p in params:
        cmd += ["-p", *p.split("=", 1)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=notebook.parent, env=env)


QUICK = {"05_anbn_lab": ("ANBN_EPOCHS=2",), "01_rnn_from_scratch": ("EPOCHS=1", "MAX_NAMES=50")}


@pytest.mark.slow
@pytest.mark.parametrize("name", ex.NOTEBOOKS)
def test_in_a_folder_of_its_own_the_student_version_stops_at_the_first_exercise_and_the_solutions_run(
        name, tmp_path, installed):
    """As a student gets them: copied into an empty folder, against an installed package."""
    for kind, flags in (("student", ()), ("solutions", ("--solutions",))):
        made = run_cli("exercises", "--out", str(tmp_path / kind), *flags)
        assert made.returncode == 0, made.stderr
        alone = tmp_path / f"{kind}-alone"
        alone.mkdir()
        shutil.copy(tmp_path / kind / f"{name}.ipynb", alone)
        done = papermill(alone / f"{name}.ipynb", installed, *QUICK[name])
        first = ex.exercises_in(source(name))[0]
        if kind == "student":
            assert done.returncode != 0
            assert f"Exercise {first['letter']} ({first['title']}) is not done yet" in done.stderr, done.stderr[-2000:]
        else:
            assert done.returncode == 0, done.stderr[-3000:]
            assert (alone / "dino_rnn_results").is_dir()  # the installed package's place for results, beside it
            out = nbformat.read(alone / "out.ipynb", as_version=4)
            text = "".join(o.get("text", "") for c in out.cells if c.cell_type == "code" for o in c.outputs)
            assert text.count(": passed.") == len(solution_cells(source(name)))


def test_the_teachers_page_names_every_exercise():
    text = (ROOT / "docs" / "teaching.md").read_text(encoding="utf-8")
    for name in ex.NOTEBOOKS:
        for e in ex.exercises_in(source(name)):
            assert f"{e['letter']} {e['title']}" in text, f"docs/teaching.md's table leaves out {name}'s {e}"
