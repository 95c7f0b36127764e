"""What the repository promises: two README commands, CI runs the test one, clean notebooks,
no dataset committed, pinned torch."""

import json
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- commands -->\s*```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert block, "README.md must have its two commands in a fenced block after <!-- commands -->"
    return [line for line in block[1].splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_readme_has_exactly_two_commands_and_ci_runs_the_test_one():
    study, test = readme_commands()
    assert "dino-rnn study" in study and "pytest" in test
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test in ci.splitlines()


def test_torch_is_pinned():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"torch==2.13.0"' in pyproject


def test_committed_notebooks_have_no_outputs():
    nbs = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert len(nbs) >= 5
    for p in nbs:
        nb = json.loads(p.read_text(encoding="utf-8"))
        for c in nb["cells"]:
            if c["cell_type"] == "code":
                assert c["outputs"] == [] and c["execution_count"] is None, p.name


def test_dataset_is_not_committed():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert files, "run the tests from a git checkout"
    assert not [f for f in files if re.search(r"(^|/)dino_?names\.txt$", f, re.I)]
    assert "data/README.md" in files and "data/published_dino_names.csv" in files


def _table(text: str) -> list[str]:
    """The first Markdown table in ``text``."""
    lines, started = [], False
    for line in text.splitlines():
        if line.startswith("|"):
            started = True
            lines.append(line)
        elif started:
            break
    return lines


def test_readme_table_is_the_generated_one():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- comparison:start -->(.*?)<!-- comparison:end -->", readme, re.S)
    assert block, "README.md must show the comparison table between its markers"
    generated = (ROOT / "results" / "comparison.md").read_text(encoding="utf-8")
    table = _table(generated)
    assert len(table) == 2 + 6  # header, rule, six models
    assert _table(block[1]) == table
