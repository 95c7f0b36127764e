"""The notebooks: committed clean, parameterised for papermill, and runnable end to end.

The structural checks are instant. The execution checks run every model notebook once
(module-scoped) with tiny parameters into a temporary results folder, then the comparison
notebook on that folder. Data comes from wherever the package resolves it ($DINO_RNN_DATA,
or data/dino_names.txt downloaded from $DINO_RNN_DATA_URL).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import nbformat
import pytest
from conftest import committed

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))

# Model notebook -> (architecture, learnable parameters at V=27, H=64, one layer).
MODELS = {
    "01_rnn_from_scratch.ipynb": ("scratch", 10856),
    "02_rnn.ipynb": ("rnn", 7707),
    "03_lstm.ipynb": ("lstm", 25563),
    "04_gru.ipynb": ("gru", 19611),
}
COMPARISON = "comparison.ipynb"

MODEL_PARAMETERS = {
    "EPOCHS": 40,
    "LR": 4e-4,
    "HIDDEN": 64,
    "NUM_LAYERS": 1,
    "SEED": 0,
    "MAX_NAMES": None,
    "TEMPERATURE": 0.8,
    "DEVICE": "auto",
    "RESULTS_DIR": "../results/notebooks",
    "DATA": None,
}
EXPECTED_PARAMETERS = {
    **{nb: dict(MODEL_PARAMETERS) for nb in MODELS},
    "01_rnn_from_scratch.ipynb": {**MODEL_PARAMETERS, "NONLINEARITY": "tanh"},
    COMPARISON: {"RESULTS_DIR": "../results/notebooks", "REFERENCE_DIR": "../results/reference"},
}

SMOKE = {"EPOCHS": 1, "MAX_NAMES": 30, "SEED": 0}


def read(path: Path):
    return nbformat.read(path, as_version=nbformat.NO_CONVERT)


def read_committed(path: Path):
    """The notebook as committed: the structural checks hold on a tree where someone ran it."""
    return nbformat.reads(committed(f"notebooks/{path.name}"), as_version=nbformat.NO_CONVERT)


def parameters_cell(nb):
    return next(c for c in nb.cells if c.cell_type == "code")


def assigned_literals(source: str) -> dict:
    """name -> value for every ``NAME = literal`` in a parameters cell; anything else fails."""
    out = {}
    for node in ast.parse(source).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, ast.dump(node)
        target = node.targets[0]
        assert isinstance(target, ast.Name), ast.dump(target)
        out[target.id] = ast.literal_eval(node.value)
    return out


# ---------------------------------------------------------------------------
# Structure (fast)
# ---------------------------------------------------------------------------


def test_the_study_notebooks_exist():
    names = {p.name for p in NOTEBOOKS}
    assert set(MODELS) | {COMPARISON} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_valid_and_committed_clean(path):
    nb = read_committed(path)
    assert nb.nbformat == 4
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    assert nb.metadata.kernelspec.language == "python"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} has outputs; clear them before committing"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_is_the_parameters_cell(path):
    cell = parameters_cell(read_committed(path))
    assert "parameters" in cell.metadata.get("tags", []), f"{path.name}: first code cell is not tagged 'parameters'"
    values = assigned_literals(cell.source)  # only plain literal assignments, which papermill can override
    if path.name in EXPECTED_PARAMETERS:
        assert values == EXPECTED_PARAMETERS[path.name]
    elif path.name[:2].isdigit():  # a model notebook added later: the study runner passes these
        assert {"EPOCHS", "SEED", "MAX_NAMES", "RESULTS_DIR", "DATA"} <= set(values)
    else:
        assert values


@pytest.mark.parametrize("name", sorted(MODELS))
def test_experiment_is_built_from_every_parameter(name):
    """The cell after the parameters constructs the Experiment and passes every parameter."""
    nb = read_committed(NOTEBOOK_DIR / name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    source = code[1].source
    assert "Experiment(" in source
    for param in EXPECTED_PARAMETERS[name]:
        assert f"={param}" in source.replace(" ", ""), f"{name}: {param} is not passed to Experiment"


# ---------------------------------------------------------------------------
# Execution (papermill): each notebook once, with tiny parameters
# ---------------------------------------------------------------------------


def execute(name: str, out_dir: Path, parameters: dict) -> Path:
    import papermill

    out = out_dir / "executed" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(NOTEBOOK_DIR / name),
        str(out),
        parameters=parameters,
        cwd=str(NOTEBOOK_DIR),
        kernel_name="python3",
        progress_bar=False,
        log_output=False,
    )
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Every model notebook with EPOCHS=1, MAX_NAMES=30, then comparison.ipynb, into one folder."""
    results = tmp_path_factory.mktemp("results")
    for name in MODELS:
        execute(name, results, {**SMOKE, "RESULTS_DIR": str(results)})
    execute(COMPARISON, results, {"RESULTS_DIR": str(results)})
    return results


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_notebook_writes_its_results(study, name):
    arch, n_params = MODELS[name]
    stem = f"{arch}-seed{SMOKE['SEED']}"
    metrics = json.loads((study / "metrics" / f"{stem}.json").read_text(encoding="utf-8"))
    assert metrics["architecture"] == arch
    assert metrics["status"] == "ok", metrics["message"]
    assert metrics["learnable_parameters"] == n_params
    assert metrics["parameters"]["epochs"] == SMOKE["EPOCHS"]
    assert metrics["parameters"]["max_names"] == SMOKE["MAX_NAMES"]
    assert metrics["data"]["train"] == SMOKE["MAX_NAMES"]
    assert metrics["best_epoch"] == 1
    assert len(metrics["samples"]["greedy"]) == 26
    assert (study / "plots" / f"{stem}.png").stat().st_size > 0
    assert (study / "checkpoints" / f"{stem}.pt").stat().st_size > 0
    # The executed copy has outputs (the committed one has none) and no error.
    executed = read(study / "executed" / name)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert outputs and not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the learning curves are not shown"


def test_comparison_notebook_reads_every_model(study):
    text = (study / "comparison.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append(line)
    assert len(table) - 2 == len(MODELS)  # header and separator, then one row per model
    for f in ("comparison.csv", "per_seed.csv", "validation_curves.png", "curves_by_model.png"):
        assert (study / f).stat().st_size > 0
    executed = read(study / "executed" / COMPARISON)
    images = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2


def test_bad_parameter_stops_before_training(tmp_path):
    from papermill.exceptions import PapermillExecutionError

    with pytest.raises(PapermillExecutionError) as err:
        execute("02_rnn.ipynb", tmp_path, {**SMOKE, "EPOCHS": 0, "RESULTS_DIR": str(tmp_path)})
    e = err.value
    assert e.ename == "ParameterError"
    assert "EPOCHS" in str(e) and "EPOCHS" in e.evalue
    assert "Experiment(" in e.source  # the Experiment cell, not training
    assert not (tmp_path / "metrics").exists()


def test_comparison_without_runs_shows_the_reference_and_writes_nothing(tmp_path):
    """A student opens comparison.ipynb before running anything: the committed reference, read only."""
    reference = NOTEBOOK_DIR.parent / "results" / "reference"
    before = {p: p.stat().st_mtime_ns for p in reference.rglob("*")}
    mine = tmp_path / "mine"
    mine.mkdir()
    executed = execute(COMPARISON, tmp_path / "out", {"RESULTS_DIR": str(mine)})
    assert list(mine.iterdir()) == []
    assert {p: p.stat().st_mtime_ns for p in reference.rglob("*")} == before
    text = json.dumps(read(executed).cells)
    assert "No runs in" in text and "nn.GRU" in text
