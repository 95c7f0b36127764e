
from pathlib import Path

import pytest
import torch

from dino_rnn import data as D
from dino_rnn.data import DataError, Vocab, encode_names, load_names, make_pair, read_names, split_names


def test_dino_names_counts(names, vocab):
    assert len(names) == 1536
    assert len(vocab) == 27
    assert vocab.itos[0] == "." and "".join(vocab.itos[1:]) == "abcdefghijklmnopqrstuvwxyz"
    assert names[:2] == ["aachenosaurus", "aardonyx"]


def test_split_sizes_and_disjoint(names):
    train, valid, test = split_names(names, seed=0)
    assert (len(train), len(valid), len(test)) == (1460, 30, 46)
    assert sorted(train + valid + test) == sorted(names)


def test_same_seed_same_split_other_seed_other_split(names):
    assert split_names(names, 0) == split_names(names, 0)
    assert split_names(names, 0)[2] != split_names(names, 1)[2]


def test_input_target_pair(vocab):
    inp, tgt = make_pair("abc", vocab)
    assert vocab.decode(inp) == "abc"
    assert vocab.decode(tgt) == "bc."
    (ex,) = encode_names(["abc"], vocab)
    assert ex.x.shape == (3, 27) and ex.x.dtype == torch.float32
    assert torch.equal(ex.x.argmax(1), torch.tensor(inp)) and ex.x.sum().item() == 3
    assert ex.y.tolist() == tgt


# -- the download path ---------------------------------------------------------


@pytest.fixture
def fresh_default(tmp_path, monkeypatch):
    """No local file: the package must download into a (temporary) data folder."""
    monkeypatch.delenv("DINO_RNN_DATA", raising=False)
    monkeypatch.setattr(D, "DEFAULT_FILE", tmp_path / "data" / "dino_names.txt")
    return D.DEFAULT_FILE


def test_download_through_file_url(fresh_default, dino_file, monkeypatch):
    monkeypatch.setenv("DINO_RNN_DATA_URL", dino_file.resolve().as_uri())
    names = load_names()
    assert len(names) == 1536
    assert D.sha256_of(fresh_default) == D.DATA_SHA256
    assert [p.name for p in fresh_default.parent.iterdir()] == ["dino_names.txt"]  # no temp files


def test_download_checksum_mismatch_is_refused(fresh_default, write_names, monkeypatch):
    wrong = write_names("not\ndinosaurs\n", "other.txt")
    monkeypatch.setenv("DINO_RNN_DATA_URL", wrong.as_uri())
    with pytest.raises(DataError) as e:
        load_names()
    msg = str(e.value)
    assert "checksum mismatch" in msg and D.DATA_SHA256 in msg and D.sha256_of(wrong) in msg
    assert "\n" not in msg
    assert not fresh_default.parent.exists() or list(fresh_default.parent.iterdir()) == []


def test_download_unreachable_names_the_variable(fresh_default, tmp_path, monkeypatch):
    monkeypatch.setenv("DINO_RNN_DATA_URL", (tmp_path / "missing.txt").as_uri())
    with pytest.raises(DataError, match="DINO_RNN_DATA=") as e:
        load_names()
    assert "\n" not in str(e.value)
    assert not fresh_default.exists()


def test_corrupted_local_copy_is_refused(fresh_default, write_names):
    fresh_default.parent.mkdir(parents=True)
    fresh_default.write_text("tampered\n")
    with pytest.raises(DataError, match="delete it to download it again"):
        load_names()


def test_dino_rnn_data_points_at_any_names_file(write_names, monkeypatch):
    p = write_names("\n".join(f"name{c}" for c in "abcdefghij") + "\n")
    monkeypatch.setenv("DINO_RNN_DATA", str(p))
    assert load_names()[:2] == ["namea", "nameb"]


# -- names files users bring -----------------------------------------------------


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"\n  \n\t\n", "only blank lines"),
        (b"rex\n\xff\xfeabc\n", "line 2 is not valid UTF-8"),
        (b"rex\nt-rex\nab\x00c\n", "line 3 contains a NUL byte"),
        (b"rex\nt.rex\n", "line 2 ('t.rex') contains '.'"),
    ],
)
def test_bad_names_files(write_names, content, message):
    p = write_names(content)
    with pytest.raises(DataError) as e:
        load_names(p)
    assert message in str(e.value) and str(p) in str(e.value) and "\n" not in str(e.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_names(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="is a directory"):
        load_names(tmp_path)


def test_unreadable_file(write_names, monkeypatch):
    # (chmod 000 does not stop root, so the open is made to fail the way it would)
    p = write_names("rex\n")
    real = D.os.open

    def deny(path, *args, **kwargs):
        if Path(path) == p:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(D.os, "open", deny)
    with pytest.raises(DataError, match=r"cannot be read \(Permission denied\)"):
        load_names(p)


def test_normalisation_is_reported(write_names):
    p = write_names("\ufeffT Rex\r\n  Raptor \r\n\r\ntrex\r\nRaptor\r\n".encode("utf-8"))
    names, report = read_names(p)
    assert names == ["trex", "raptor", "trex", "raptor"]
    assert report.bom and report.crlf
    assert (report.names, report.blank_lines, report.duplicates) == (4, 1, 2)
    assert (report.lowercased, report.whitespace) == (3, 2)
    text = str(report)
    assert "4 names" in text and "2 duplicates kept" in text and "byte-order mark removed" in text


def test_other_characters_join_the_vocabulary(write_names):
    from dino_rnn.models import build_model, count_parameters

    p = write_names("éoraptor\nt-rex\nd'artagnan2\n")
    names = load_names(p)
    v = Vocab(names)
    assert {"é", "-", "'", "2"} <= set(v.itos) and len(v) == 15
    # parameters follow the vocabulary: nn.RNN (V*H + H*H + 2H) + Linear (H*V + V)
    assert count_parameters(build_model("rnn", len(v))) == 15 * 64 + 64 * 64 + 128 + 64 * 15 + 15


def test_too_few_names_for_the_split():
    with pytest.raises(DataError, match="at least 50 names"):
        split_names([f"n{i}" for i in range(49)], 0)
    train, valid, test = split_names([f"n{i}" for i in range(50)], 0)
    assert (len(train), len(valid), len(test)) == (48, 1, 1)
