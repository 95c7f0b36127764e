"""The package's import graph has no cycles.

Every import of one package module by another counts, at the top of a module or inside a
function (a cycle through a function-level import is still a cycle: the two modules need each
other). The graph is read from the source with ``ast``, so nothing is imported to check it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dino_rnn"


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports, anywhere in it (``from . import x``, ``from .x import y``,
    ``import dino_rnn.x``, ``from dino_rnn import x``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 or node.module == "dino_rnn" or (node.module or "").startswith("dino_rnn."):
                base = node.module or ""
                base = base.removeprefix("dino_rnn").lstrip(".") if node.level == 0 else base
                if base:
                    out.add(base.split(".")[0])
                else:  # from . import a, b
                    out |= {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("dino_rnn."):
                    out.add(a.name.split(".")[1])
    return (out & modules) - {path.stem}


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    files = {p.stem: p for p in package.glob("*.py")}
    return {name: imports_of(p, set(files)) for name, p in files.items()}


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
    pkg.mkdir()
    (pkg / "a.py").write_text(
        "from . import b\nfrom .c import x\nimport dino_rnn.d\n"
        "def f():\n    from dino_rnn.e import y\n    from dino_rnn import g\n"
    )
    for m in "bcdeg":
        (pkg / f"{m}.py").write_text("import os\nfrom pathlib import Path\n")
    assert import_graph(pkg)["a"] == {"b", "c", "d", "e", "g"}
    assert import_graph(pkg)["b"] == set()


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert {"train", "steps", "report", "study", "lab", "experiment"} <= set(graph)
    assert "steps" in graph["train"]  # the reader sees the real imports
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_report_takes_what_it_is_given():
    """The report renders files it is handed; it reaches back into neither the runner nor the trainers."""
    graph = import_graph()
    assert not graph["report"] & {"study", "lab", "experiment", "train", "steps", "anbn"}
    assert not graph["models"] & {"fastgrad", "steps", "torch_private"}  # models are models, not speed code
