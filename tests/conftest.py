"""Shared fixtures. The Dino Names file is resolved the way users get it: $DINO_RNN_DATA, or
data/dino_names.txt downloaded (checksum-verified) from $DINO_RNN_DATA_URL on first use."""

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
