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

# Model notebook on Dino Names -> {architecture: learnable parameters at V=27, H=64, one layer}.
MODELS = {
    "01_rnn_from_scratch.ipynb": {"scratch": 10856},
    "02_rnn.ipynb": {"rnn": 7707},
    "03_lstm.ipynb": {"lstm": 25563},
    "04_gru.ipynb": {"gru": 19611},
    "06_numpy_nets.ipynb": {"numpy_rnn": 7643, "numpy_lstm": 25307},
}
ANBN = "05_anbn_lab.ipynb"  # the aⁿbⁿ lab: four models at V=4, H=50
ANBN_COUNTS = {"numpy_rnn": 2954, "numpy_lstm": 11204, "torch_lstm": 11400, "numpy_lstm_adam": 11204}
COMPARISON = "comparison.ipynb"
# How each notebook computes its gradients, by default and with AUTOGRAD=True.
GRADIENTS = {nb: ("written-out", "autograd") for nb in MODELS} | {"06_numpy_nets.ipynb": ("numpy", "autograd")}

MODEL_PARAMETERS = {
    "EPOCHS": 40,
    "LR": 4e-4,
    "HIDDEN": 64,
    "NUM_LAYERS": 1,
    "SEED": 0,
    "MAX_NAMES": None,
    "TEMPERATURE": 0.8,
    "DEVICE": "auto",
    "RESULTS_DIR": None,
    "DATA": None,
    "AUTOGRAD": False,
    "CLIP": None,
}
EXPECTED_PARAMETERS = {
    **{nb: dict(MODEL_PARAMETERS) for nb in MODELS},
    "01_rnn_from_scratch.ipynb": {**MODEL_PARAMETERS, "NONLINEARITY": "tanh"},
    "06_numpy_nets.ipynb": {k: v for k, v in MODEL_PARAMETERS.items() if k != "NUM_LAYERS"},
    ANBN: {"SEED": 0, "RESULTS_DIR": None, "ANBN_EPOCHS": 200, "ANBN_HIDDEN": 50,
           "ANBN_RNN_LR": 1e-3, "ANBN_LSTM_LR": 0.1, "ANBN_TORCH_LR": 3e-4, "ANBN_CLIP": 0.25,
           "ANBN_ADAM_CONTROL": True, "AUTOGRAD": False},
    COMPARISON: {"RESULTS_DIR": None, "REFERENCE_DIR": "../results/reference"},
}

SMOKE = {"EPOCHS": 1, "MAX_NAMES": 30, "SEED": 0}
ANBN_SMOKE = {"ANBN_EPOCHS": 2, "SEED": 0}


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
    assert set(MODELS) | {ANBN, COMPARISON} <= names
    assert set(EXPECTED_PARAMETERS) == names  # every notebook's parameters are pinned here


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


def test_the_anbn_lab_passes_every_parameter():
    source = "\n".join(c.source for c in read_committed(NOTEBOOK_DIR / ANBN).cells if c.cell_type == "code")
    call = source[source.index("run_anbn("):]
    call = call[: call.index("\n)")].replace(" ", "")
    for param in set(EXPECTED_PARAMETERS[ANBN]) - {"RESULTS_DIR", "SEED"}:
        assert f"={param}," in call, f"{param} is not passed to run_anbn"
    assert "results_dir=RESULTS_DIR," in call and "seed=SEED," in call


@pytest.mark.parametrize("name", sorted(MODELS) + [ANBN])
def test_the_notebook_says_how_its_gradients_are_computed(name):
    intro = read_committed(NOTEBOOK_DIR / name).cells[0].source
    assert "**How the gradients are computed:**" in intro and "`AUTOGRAD = True`" in intro


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


def smoke_parameters(name: str, results: Path, **extra) -> dict:
    return {**(ANBN_SMOKE if name == ANBN else SMOKE), "RESULTS_DIR": str(results), **extra}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Every model notebook with tiny parameters (EPOCHS=1, MAX_NAMES=30; 2 aⁿbⁿ epochs), then
    comparison.ipynb, into one folder."""
    results = tmp_path_factory.mktemp("results")
    for name in [*MODELS, ANBN]:
        execute(name, results, smoke_parameters(name, results))
    execute(COMPARISON, results, {"RESULTS_DIR": str(results)})
    return results


@pytest.fixture(scope="module")
def autograd_study(tmp_path_factory):
    """The same runs with AUTOGRAD=True."""
    results = tmp_path_factory.mktemp("autograd")
    for name in [*MODELS, ANBN]:
        execute(name, results, smoke_parameters(name, results, AUTOGRAD=True))
    return results


def executed_outputs(path: Path) -> list:
    """The executed copy's outputs (the committed one has none); none of them an error."""
    executed = read(path)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert outputs and not [o for o in outputs if o.output_type == "error"]
    return outputs


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_notebook_writes_its_results(study, name):
    for arch, n_params in MODELS[name].items():
        stem = f"{arch}-seed{SMOKE['SEED']}"
        metrics = json.loads((study / "metrics" / f"{stem}.json").read_text(encoding="utf-8"))
        assert metrics["architecture"] == arch
        assert metrics["status"] == "ok", metrics["message"]
        assert metrics["learnable_parameters"] == n_params
        assert metrics["parameters"]["epochs"] == SMOKE["EPOCHS"]
        assert metrics["parameters"]["max_names"] == SMOKE["MAX_NAMES"]
        assert metrics["parameters"]["autograd"] is False and metrics["gradient"] == GRADIENTS[name][0]
        assert metrics["data"]["train"] == SMOKE["MAX_NAMES"]
        assert metrics["best_epoch"] == 1
        assert len(metrics["samples"]["greedy"]) == 26
        assert (study / "plots" / f"{stem}.png").stat().st_size > 0
        suffix = ".npz" if arch.startswith("numpy_") else ".pt"
        assert (study / "checkpoints" / f"{stem}{suffix}").stat().st_size > 0
    outputs = executed_outputs(study / "executed" / name)
    shown = sum("image/png" in o.get("data", {}) for o in outputs)
    assert shown >= len(MODELS[name]), "the learning curves are not shown"


@pytest.mark.slow
def test_the_anbn_lab_writes_its_results(study):
    from dino_rnn.report.tables import anbn_section

    r = json.loads((study / "anbn" / "anbn-seed0.json").read_text(encoding="utf-8"))
    assert r["parameters"]["epochs"] == ANBN_SMOKE["ANBN_EPOCHS"] and r["parameters"]["autograd"] is False
    assert {k: v["learnable_parameters"] for k, v in r["models"].items()} == ANBN_COUNTS
    assert {k: v["gradient"] for k, v in r["models"].items()} == {
        "numpy_rnn": "numpy", "numpy_lstm": "numpy", "torch_lstm": "written-out", "numpy_lstm_adam": "numpy"}
    assert all(m["status"] == "ok" for m in r["models"].values())
    assert (study / "plots" / "anbn-seed0.png").stat().st_size > 0
    assert sum("image/png" in o.get("data", {}) for o in executed_outputs(study / "executed" / ANBN)) >= 1
    assert anbn_section(study).startswith("## aⁿbⁿ: the NumPy lab")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_autograd_parameter_gives_the_default_paths_numbers(study, autograd_study, name):
    """AUTOGRAD=True trains with autograd; every loss agrees with the default path's to float rounding."""
    default, autograd = GRADIENTS[name]
    for arch in MODELS[name]:
        a, b = (json.loads((d / "metrics" / f"{arch}-seed0.json").read_text(encoding="utf-8")) for d in (study, autograd_study))
        assert (a["gradient"], b["gradient"]) == (default, autograd)
        assert (a["parameters"]["autograd"], b["parameters"]["autograd"]) == (False, True)
        tol = 1e-10 if default == "numpy" else 1e-5  # float64 NumPy nets, float32 PyTorch models
        for key in ("train_loss", "valid_loss"):
            assert b["history"][key] == pytest.approx(a["history"][key], rel=0, abs=tol), (arch, key)
        assert b["test_loss"] == pytest.approx(a["test_loss"], rel=0, abs=tol)


@pytest.mark.slow
def test_the_anbn_labs_autograd_parameter_gives_the_same_numbers(study, autograd_study):
    a, b = (json.loads((d / "anbn" / "anbn-seed0.json").read_text(encoding="utf-8")) for d in (study, autograd_study))
    assert b["parameters"]["autograd"] is True
    for key, m in a["models"].items():
        n = b["models"][key]
        assert n["gradient"] == "autograd"
        tol = 1e-5 if key == "torch_lstm" else 1e-10  # float32 PyTorch LSTM, float64 NumPy nets
        for curve in ("train_loss", "valid_loss"):
            assert n["history"][curve] == pytest.approx(m["history"][curve], rel=0, abs=tol), (key, curve)


@pytest.mark.slow
def test_comparison_notebook_reads_every_model(study):
    text = (study / "comparison.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append(line)
    assert len(table) - 2 == sum(len(archs) for archs in MODELS.values())  # header and separator, then one row per model
    for f in ("comparison.csv", "per_seed.csv", "validation_curves.png", "curves_by_model.png"):
        assert (study / f).stat().st_size > 0
    executed = read(study / "executed" / COMPARISON)
    images = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2


@pytest.mark.slow
def test_bad_parameter_stops_before_training(tmp_path):
    from papermill.exceptions import PapermillExecutionError

    with pytest.raises(PapermillExecutionError) as err:
        execute("02_rnn.ipynb", tmp_path, {**SMOKE, "EPOCHS": 0, "RESULTS_DIR": str(tmp_path)})
    e = err.value
    assert e.ename == "ParameterError"
    assert "EPOCHS" in str(e) and "EPOCHS" in e.evalue
    assert "Experiment(" in e.source  # the Experiment cell, not training
    assert not (tmp_path / "metrics").exists()


@pytest.mark.slow
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
