"""Attacks on the notebooks, as a careless user makes them: the plain papermill CLI, real files.

Part of the issue "Your files, by construction". The promises under attack:

1. The default ``RESULTS_DIR`` (None) is found from the notebook's place, never from the
   current folder: ``papermill notebooks/02_rnn.ipynb out.ipynb`` run from a clone's root
   writes into that clone's ``results/notebooks``, not ``../results/notebooks`` outside it.
2. A parameter the notebook does not have (``-p EPOCSH 2``) stops it before any work,
   naming the nearest one.
3. A checkpoint changed after it was written (one flipped byte) is refused with one line.
4. A ``RESULTS_DIR`` that is, or lies inside, a folder marked as the committed reference
   (``.dino-rnn-reference``), however reached, is refused before any work.
"""

from __future__ import annotations

import ast
import io
import json
import os
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import nbformat
import pytest

from dino_rnn import settings as P
from dino_rnn import files as F
from dino_rnn.data import DataError

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
PAPERMILL = shutil.which("papermill", path=str(Path(sys.executable).parent)) or shutil.which("papermill")
TINY = ["-p", "EPOCHS", "1", "-p", "MAX_NAMES", "20"]


def code_cells(path: Path) -> list:
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def papermill(notebook, out, *args, cwd, env) -> subprocess.CompletedProcess:
    """The plain papermill CLI, in its own process."""
    return subprocess.run([PAPERMILL, str(notebook), str(out), "--log-level", "ERROR", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def env(dino_file) -> dict:
    """The environment of a papermill run: the names file, this tree's package, no Jupyter session of ours."""
    e = {k: v for k, v in os.environ.items() if k != "JPY_SESSION_NAME"}
    return {**e, "DINO_RNN_DATA": str(dino_file), "PYTHONPATH": str(ROOT)}


# ---------------------------------------------------------------------------
# 2. The parameter table, and a misspelt parameter
# ---------------------------------------------------------------------------


def test_the_parameter_table_is_every_notebooks_parameters_cell():
    """NOTEBOOK_PARAMETERS is what papermill finds in each parameters cell, in order."""
    import papermill as pm

    assert {p.stem for p in NOTEBOOKS} == set(P.NOTEBOOK_PARAMETERS)
    for path in NOTEBOOKS:
        assert tuple(pm.inspect_notebook(str(path))) == P.NOTEBOOK_PARAMETERS[path.stem], path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_cell_after_the_parameters_checks_the_names_first(path):
    """Before any other statement: the names checked and RESULTS_DIR resolved, for this notebook."""
    source = code_cells(path)[1].source
    lines = [ln for ln in source.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[0] == "from dino_rnn import settings as P" and lines[1].startswith("from dino_rnn.files import ")
    assert lines[2:4] == [f'P.check_names(globals(), "{path.stem}")',
                          f'RESULTS_DIR = results_dir(RESULTS_DIR, "{path.stem}")'], path.name


def _names_bound(source: str) -> dict:
    """Every name a cell binds in the notebook's namespace: assigned ones hold a plain value (0 here),
    imported or defined ones an object. A function's locals are its own (an exercise's ``device``)."""
    tree = ast.parse("\n".join(ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))))
    names = {}
    for node in _outside_functions(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names[node.id] = 0
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names[node.name] = object()
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update({(a.asname or a.name).split(".")[0]: object() for a in node.names})
    return names


def _outside_functions(tree):
    """Every node of ``tree`` but those inside a function's or a class's body."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            stack.extend(ast.iter_child_nodes(node))


def test_a_function_s_locals_are_not_the_notebook_s_names():
    names = _names_bound("X = 1\ndef f(a):\n    device = 2\n    return device\nfor i in range(2):\n    pass\n")
    assert set(names) == {"X", "f", "i"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_running_the_check_again_after_the_whole_notebook_passes(path):
    """In Jupyter the check cell may run again after every cell: no name a cell binds trips it."""
    names = {n: v for c in code_cells(path) for n, v in _names_bound(c.source).items()}
    P.check_names({**names, **dict.fromkeys(P.NOTEBOOK_PARAMETERS[path.stem], 0)}, path.stem)


def test_check_names_names_the_nearest_parameter():
    ok = dict.fromkeys(P.NOTEBOOK_PARAMETERS["02_rnn"]) | {"In": [], "_i1": "", "P": P, "V": 27, "exp": None,
                                                           "SGD": type("SGD", (), {})}  # a class, not a value
    P.check_names(ok, "02_rnn")
    with pytest.raises(P.ParameterError) as e:
        P.check_names({**ok, "EPOCSH": 2}, "02_rnn")
    assert str(e.value) == "EPOCSH is not a parameter of 02_rnn; did you mean EPOCHS?"
    with pytest.raises(P.ParameterError, match="^epochs is not a parameter of 02_rnn; did you mean EPOCHS[?]$"):
        P.check_names({**ok, "epochs": 2}, "02_rnn")
    with pytest.raises(P.ParameterError, match="NONLINEARITY is not a parameter of 02_rnn; its parameters are EPOCHS, LR"):
        P.check_names({**ok, "NONLINEARITY": "none"}, "02_rnn")  # 01's parameter, not 02's
    with pytest.raises(ValueError, match="no parameter table"):
        P.check_names(ok, "07_transformer")


@pytest.mark.slow
def test_a_misspelt_parameter_stops_the_notebook_before_any_work(tmp_path, env):
    """`papermill 02_rnn.ipynb out.ipynb -p EPOCSH 2`: one line naming EPOCHS; nothing trained or written."""
    results, out = tmp_path / "results", tmp_path / "out.ipynb"
    run = papermill(NOTEBOOK_DIR / "02_rnn.ipynb", out, "-p", "EPOCSH", "2", *TINY, "-p", "RESULTS_DIR", str(results),
                    cwd=tmp_path, env=env)
    assert run.returncode != 0
    assert "ParameterError: EPOCSH is not a parameter of 02_rnn; did you mean EPOCHS?" in run.stdout + run.stderr
    assert not results.exists()  # nothing trained, no folder made
    cells = code_cells(out)
    failed = next(i for i, c in enumerate(cells) if any(o.output_type == "error" for o in c.outputs))
    assert "P.check_names(" in cells[failed].source and "Experiment(" in cells[failed].source
    assert all(c.execution_count is None for c in cells[failed + 1:])


def test_the_study_passes_only_declared_names():
    """`dino-rnn study` reads each notebook's parameters as the table has them, and passes no other."""
    from dino_rnn.runner.study import declared_parameters, model_notebooks

    for path in model_notebooks():
        declared = declared_parameters(path)
        assert declared == set(P.NOTEBOOK_PARAMETERS[path.stem])
        base = {"EPOCHS": 1, "SEED": 0, "MAX_NAMES": 20, "RESULTS_DIR": "x", "DATA": None, "NONLINEARITY": "none"}
        P.check_names({k: v for k, v in base.items() if k in declared}, path.stem)


# ---------------------------------------------------------------------------
# 1. RESULTS_DIR = None: found from the notebook's place, never from the current folder
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A copy of the clone (package with its published table, notebooks) in a tree of its own; the
    copy's package is the one imported (PYTHONPATH), so its results go into the copy."""
    tree = tmp_path_factory.mktemp("tree")
    c = tree / "clone"
    shutil.copytree(ROOT / "dino_rnn", c / "dino_rnn")  # with __pycache__: the compiled kernels' cache
    shutil.copytree(NOTEBOOK_DIR, c / "notebooks")
    return c


@pytest.mark.slow
def test_papermill_from_the_clones_root_writes_into_the_clone(clone, env):
    """`papermill notebooks/02_rnn.ipynb out.ipynb` from the root: the default RESULTS_DIR was
    ../results/notebooks of the current folder, outside the clone; now results/notebooks inside it."""
    env = {**env, "PYTHONPATH": str(clone)}
    where = subprocess.run([sys.executable, "-c", "import dino_rnn; print(dino_rnn.__file__)"],
                           env=env, cwd=clone, capture_output=True, text=True)
    assert where.stdout.strip() == str(clone / "dino_rnn" / "__init__.py")  # the copy is the one imported
    tree = clone.parent
    before = sorted(p.name for p in tree.iterdir())
    run = papermill("notebooks/02_rnn.ipynb", "out.ipynb", *TINY, "-p", "SEED", "3", cwd=clone, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    metrics = json.loads((clone / "results" / "notebooks" / "metrics" / "rnn-seed3.json").read_text())
    assert metrics["parameters"]["epochs"] == 1
    assert (clone / "results" / "notebooks" / "checkpoints" / "rnn-seed3.pt").is_file()
    assert sorted(p.name for p in tree.iterdir()) == before  # nothing outside the clone: no ../results


def test_results_dir_resolves_none_from_the_notebooks_place(tmp_path, monkeypatch):
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert F.results_dir("/some/where", "02_rnn") == "/some/where"  # given: as given
    assert F.results_dir(None, "02_rnn") == F.NOTEBOOK_RESULTS  # the clone the package is installed from
    other = tmp_path / "other"  # JupyterLab: the notebook's path, in another clone
    (other / "dino_rnn").mkdir(parents=True)
    (other / "dino_rnn" / "__init__.py").write_text("")
    (other / "notebooks").mkdir()
    (other / "notebooks" / "02_rnn.ipynb").write_text("{}")
    monkeypatch.setenv("JPY_SESSION_NAME", str(other / "notebooks" / "02_rnn.ipynb"))
    assert F.results_dir(None, "02_rnn") == other.resolve() / "results" / "notebooks"
    assert F.results_dir(None, "03_lstm") == F.NOTEBOOK_RESULTS  # another notebook's session: not ours
    (tmp_path / "mine").mkdir()  # a notebook copied out of any clone: results beside it
    (tmp_path / "mine" / "02_rnn.ipynb").write_text("{}")
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "mine" / "02_rnn.ipynb"))
    assert F.results_dir(None, "02_rnn") == tmp_path.resolve() / "mine" / "dino_rnn_results"
    monkeypatch.delenv("JPY_SESSION_NAME")
    monkeypatch.setattr(F, "ROOT", tmp_path / "site-packages")  # installed from an index, used elsewhere
    assert F.results_dir(None, "02_rnn") == Path.cwd() / "dino_rnn_results"


# ---------------------------------------------------------------------------
# 4. RESULTS_DIR in the committed reference, however reached
# ---------------------------------------------------------------------------


@pytest.fixture
def reference(tmp_path) -> Path:
    ref = tmp_path / "reference"
    (ref / "metrics").mkdir(parents=True)
    (ref / F.REFERENCE_MARK).write_text("the committed reference\n")
    (tmp_path / "link").symlink_to(ref, target_is_directory=True)
    return ref


def test_output_dir_refuses_the_reference_however_reached(tmp_path, reference):
    for given in (reference, reference / "metrics", reference / "new" / "deeper", tmp_path / "link",
                  tmp_path / "link" / "sub", tmp_path / "x" / ".." / "reference"):
        with pytest.raises(P.ParameterError, match="committed reference") as e:
            F.output_dir(given)
        assert "\n" not in str(e.value) and "RESULTS_DIR" in str(e.value)
    assert sorted(p.name for p in reference.iterdir()) == [F.REFERENCE_MARK, "metrics"]  # nothing made there
    assert F.output_dir(tmp_path / "mine") == tmp_path / "mine"


@pytest.mark.slow
@pytest.mark.parametrize("name, where", [("02_rnn", "reference/sub"), ("05_anbn_lab", "link"),
                                         ("06_numpy_nets", "link/sub"), ("comparison", "reference")])
def test_a_notebook_into_the_reference_stops_before_any_work(tmp_path, reference, env, name, where):
    before = sorted(p.relative_to(reference) for p in reference.rglob("*"))
    args = {"comparison": [], "05_anbn_lab": ["-p", "ANBN_EPOCHS", "1"]}.get(name, TINY)
    run = papermill(NOTEBOOK_DIR / f"{name}.ipynb", tmp_path / "out.ipynb", *args,
                    "-p", "RESULTS_DIR", str(tmp_path / where), cwd=tmp_path, env=env)
    assert run.returncode != 0
    assert "ParameterError: RESULTS_DIR" in run.stdout + run.stderr and "committed reference" in run.stdout + run.stderr
    assert sorted(p.relative_to(reference) for p in reference.rglob("*")) == before
    cells = code_cells(tmp_path / "out.ipynb")
    failed = next(i for i, c in enumerate(cells) if any(o.output_type == "error" for o in c.outputs))
    assert failed == 2  # parameters, papermill's injected parameters, then the check cell


# ---------------------------------------------------------------------------
# 3. A checkpoint changed after it was written
# ---------------------------------------------------------------------------


def _flip_a_weight_byte(path: Path) -> None:
    """One bit flipped in the middle of the largest stored entry (a weight tensor's bytes)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)
    assert info.compress_type == zipfile.ZIP_STORED
    data[info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.file_size // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, dino_file) -> dict:
    """One tiny run of a PyTorch model and of a NumPy net, with their files."""
    from dino_rnn.experiment import Experiment
    from dino_rnn.lab import NumpyExperiment

    out = tmp_path_factory.mktemp("runs")
    made = {}
    for cls, arch in ((Experiment, "rnn"), (NumpyExperiment, "numpy_rnn")):
        exp = cls(arch, epochs=1, max_names=20, results_dir=out, data=dino_file, progress=False)
        exp.run()
        made[arch] = exp
    return made


def _loader(arch):
    from dino_rnn.experiment import load_checkpoint
    from dino_rnn.lab import load_numpy_checkpoint

    return load_numpy_checkpoint if arch.startswith("numpy_") else load_checkpoint


@pytest.mark.parametrize("arch", ["rnn", "numpy_rnn"])
def test_a_checkpoint_with_one_flipped_byte_is_refused(runs, tmp_path, arch):
    import hashlib

    exp, load = runs[arch], _loader(arch)
    metrics = json.loads(exp.paths["metrics"].read_text())
    ck = exp.paths["checkpoint"]
    assert metrics["checkpoint"] == {"file": f"checkpoints/{ck.name}", "sha256": hashlib.sha256(ck.read_bytes()).hexdigest()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an intact checkpoint with its record: no warning
        load(ck)
    # the same files elsewhere, one bit of a weight flipped
    copy = tmp_path / "results"
    shutil.copytree(exp.results_dir, copy)
    bad = copy / "checkpoints" / ck.name
    _flip_a_weight_byte(bad)
    if arch == "rnn":  # without the check, torch loads it and says nothing
        import torch

        torch.load(io.BytesIO(bad.read_bytes()), weights_only=True)
    with pytest.raises(DataError) as e:
        load(bad)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"checkpoint {bad} does not match the checksum recorded when it was written (sha256 ")
    assert msg.endswith("it was changed or damaged: run the notebook again to rewrite it")


def test_a_checkpoint_without_a_record_loads_with_a_warning(runs, tmp_path):
    """Written before checksums were recorded (its metrics have no "checkpoint"), or copied alone."""
    exp, load = runs["rnn"], _loader("rnn")
    alone = tmp_path / "alone.pt"
    shutil.copy2(exp.paths["checkpoint"], alone)
    with pytest.warns(UserWarning, match="no recorded checksum"):
        load(alone)
    old = tmp_path / "old"
    shutil.copytree(exp.results_dir, old)
    m = json.loads((old / "metrics" / "rnn-seed0.json").read_text())
    del m["checkpoint"]
    (old / "metrics" / "rnn-seed0.json").write_text(json.dumps(m))
    with pytest.warns(UserWarning, match="no recorded checksum"):
        load(old / "checkpoints" / "rnn-seed0.pt")
    m["checkpoint"] = None  # a later run wrote no checkpoint (it diverged): this one is not its
    (old / "metrics" / "rnn-seed0.json").write_text(json.dumps(m))
    with pytest.raises(DataError, match="records no such checkpoint"):
        load(old / "checkpoints" / "rnn-seed0.pt")
