"""The package's shape: layers that import one way, no cycles, a light core, small functions.

Every import of one package module by another counts, at the top of a module or inside a
function. The graph is read from the source with ``ast``, so nothing is imported to check it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dino_rnn"


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports, anywhere in it, as dotted names below ``dino_rnn``
    (``fast.steps``; a subpackage's ``__init__`` is the subpackage's name, ``fast``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "dino_rnn":
            base = node.module.removeprefix("dino_rnn").lstrip(".")
            for a in node.names:  # `from dino_rnn.fast import steps` is the module fast.steps
                sub = f"{base}.{a.name}" if base else a.name
                out.add(sub if sub in modules else base)
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; the package imports absolutely (from dino_rnn.x import y)")
        elif isinstance(node, ast.Import):
            out |= {a.name.removeprefix("dino_rnn.") for a in node.names if a.name.startswith("dino_rnn.")}
    return out & modules


def name_of(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    files = {name_of(p, package): p for p in package.rglob("*.py") if name_of(p, package)}
    return {name: imports_of(p, set(files)) - {name} for name, p in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"b2", "c"}, "b2": set(), "c": {"b"}}) == ["b", "c", "b"]


def test_the_graph_reader_sees_every_form_of_import(tmp_path):
    pkg = tmp_path / "dino_rnn"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text(
        "from dino_rnn import b\nfrom dino_rnn.c import x\nimport dino_rnn.d\n"
        "def f():\n    from dino_rnn.e import y\n    from dino_rnn.sub import g\n    from dino_rnn import sub\n"
    )
    for m in ("b", "c", "d", "e", "sub/__init__", "sub/g"):
        (pkg / f"{m}.py").write_text("import os\nfrom pathlib import Path\n")
    graph = import_graph(pkg)
    assert graph["a"] == {"b", "c", "d", "e", "sub.g", "sub"}
    assert graph["b"] == set() and graph["sub"] == set()


# The layers, lowest first. A module imports only from its own layer or lower ones: the core
# knows nothing of the report or the runner, the report renders what it is given, and the
# compiled path sits between the models it differentiates and the training loop that calls it.
LAYERS = [
    ("settings", "files", "data", "baselines", "models", "numpy_nets"),
    ("fast",),
    ("train", "sample", "plots", "experiment", "anbn", "lab"),
    ("exercises",),
    ("report",),
    ("runner",),
    ("cli", "__main__"),
]


def layer_of(module: str) -> int:
    for rank, names in enumerate(LAYERS):
        if module.split(".")[0] in names:
            return rank
    raise AssertionError(f"dino_rnn.{module} is in no layer; add it to LAYERS in {__file__}")


def test_the_layers_import_one_way():
    graph = import_graph()
    assert {"train", "fast.steps", "report.tables", "runner.study", "lab", "experiment"} <= set(graph)
    assert "fast" in graph["train"] and "report.tables" in graph["runner.study"]  # the reader sees the real imports
    upward = [f"{a} -> {b}" for a, bs in graph.items() for b in bs if layer_of(b) > layer_of(a)]
    assert not upward, "imports against the layers: " + ", ".join(sorted(upward))
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_layer_check_sees_an_upward_import(tmp_path):
    """The check above fails on a core module that imports the runner."""
    graph = {"train": {"runner.study"}, "runner.study": set()}
    assert [a for a, bs in graph.items() for b in bs if layer_of(b) > layer_of(a)] == ["train"]


def test_importing_the_experiment_loads_only_the_core():
    """``from dino_rnn import Experiment`` (what a notebook does) loads none of the runner's,
    the report's or the compiled path's libraries."""
    heavy = ["numba", "llvmlite", "distributed", "dask", "papermill", "nbclient", "nbconvert", "jinja2", "filelock"]
    code = ("import sys; from dino_rnn import Experiment; import dino_rnn.lab, dino_rnn.train; "
            f"print([m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


MAX_LINES = 60
# The compiled kernels' straight-line maths is exempt: each kernel is one name's forward and
# backward pass, kept whole so that it reads against the equations it implements.
EXEMPT = {"fast/kernels.py"}


def long_functions(package: Path = PACKAGE) -> list[str]:
    out = []
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package).as_posix() in EXEMPT:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_LINES:
                    out.append(f"{path.relative_to(package)}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_no_function_is_longer_than_a_screen(tmp_path):
    assert not long_functions(), "split these into named pieces: " + "; ".join(long_functions())
    (tmp_path / "m.py").write_text("def f():\n" + "    x = 1\n" * MAX_LINES)  # the check sees one
    assert long_functions(tmp_path) == [f"m.py:1 f ({MAX_LINES + 1} lines)"]


def private_torch(path: Path) -> list[int]:
    """Lines of ``path`` that use ``torch._x`` (an attribute or an import): private PyTorch."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        name = ""
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "torch":
            name = node.attr
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torch."):
            name = node.module.split(".")[1]
        elif isinstance(node, ast.Import):
            name = next((a.name.split(".")[1] for a in node.names if a.name.startswith("torch.")), "")
        if name.startswith("_") and not name.endswith("__"):  # torch.__version__ is public
            lines.append(node.lineno)
    return lines


def test_private_torch_lives_in_one_module(tmp_path):
    """Private, undocumented PyTorch is used in fast/torch_private.py only."""
    found = [f"{p.relative_to(PACKAGE)}:{n}" for p in PACKAGE.rglob("*.py") if p.name != "torch_private.py"
             for n in private_torch(p)]
    assert not found, "private torch outside dino_rnn/fast/torch_private.py: " + ", ".join(found)
    (tmp_path / "m.py").write_text("import torch._dynamo\nfrom torch._C import x\ny = torch._foreach_add\nz = torch.nn, torch.__version__\n")
    assert private_torch(tmp_path / "m.py") == [1, 2, 3]


def test_paths_computed_from_the_package_point_into_this_clone():
    """Modules moved between folders compute the clone's root with the right number of ``..``."""
    from dino_rnn import data, files
    from dino_rnn.runner import study

    root = PACKAGE.parent
    assert files.ROOT == root and (files.ROOT / "pyproject.toml").is_file()
    assert files.REFERENCE == root / "results" / "reference" and files.REFERENCE.is_dir()
    assert data.DATA_DIR == root / "data"
    assert study.NOTEBOOK_DIR == root / "notebooks" and (study.NOTEBOOK_DIR / "02_rnn.ipynb").is_file()
