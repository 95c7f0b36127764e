"""Shared fixtures. The Dino Names file is resolved the way users get it: $DINO_RNN_DATA, or
data/dino_names.txt downloaded (checksum-verified) from $DINO_RNN_DATA_URL on first use."""

import subprocess
from pathlib import Path

import nbformat
import pytest

from dino_rnn.data import Vocab, load_names, resolve_data_path


@pytest.fixture(scope="session")
def dino_file():
    return resolve_data_path()


@pytest.fixture(scope="session")
def names(dino_file):
    return load_names(dino_file)


@pytest.fixture(scope="session")
def vocab(names):
    return Vocab(names)


@pytest.fixture
def write_names(tmp_path):
    """Write bytes to a names file in tmp_path and return its path."""

    def write(content: bytes | str, name: str = "names.txt"):
        p = tmp_path / name
        p.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return p

    return write


ROOT = Path(__file__).resolve().parent.parent


def committed(path: str) -> str:
    """A file as committed (``git show HEAD:path``), not as the working tree has it.

    Checks of what the repository holds (clean notebooks, the README's table) read this, so
    they pass on a working tree where someone has run the notebooks or the study.
    """
    p = subprocess.run(["git", "show", f"HEAD:{path}"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, f"git show HEAD:{path} failed ({p.stderr.strip()}); run the tests from a git checkout"
    return p.stdout


def committed_files(pattern: str = "") -> list[str]:
    p = subprocess.run(["git", "ls-tree", "-r", "--name-only", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, "run the tests from a git checkout"
    return [f for f in p.stdout.splitlines() if f.startswith(pattern)]


def notebook(*sources, params="EPOCHS = 1\nSEED = 0\nRESULTS_DIR = '.'\n"):
    """A notebook whose first code cell (tagged ``parameters``) is ``params``, then ``sources``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell] + [nbformat.v4.new_code_cell(s) for s in sources]
    return nb
