import json

import pytest
import torch

from dino_rnn.data import DataError
from dino_rnn.experiment import Experiment, load_checkpoint
from dino_rnn.settings import ParameterError


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"epochs": 0}, "EPOCHS must be a whole number of at least 1, not 0"),
        ({"epochs": 2.5}, "EPOCHS must be a whole number"),
        ({"lr": -1e-3}, "LR must be a number greater than 0"),
        ({"lr": float("nan")}, "LR must be a number greater than 0"),
        ({"hidden": 0}, "HIDDEN must be"),
        ({"num_layers": "2"}, "NUM_LAYERS must be"),
        ({"max_names": 0}, "MAX_NAMES must be a whole number of at least 1 or None"),
        ({"temperature": 0}, "TEMPERATURE must be a number greater than 0"),
        ({"seed": -1}, "SEED must be a whole number >= 0"),
        ({"seed": "zero"}, "SEED must be a whole number >= 0"),
        ({"device": "tpu"}, "DEVICE must be"),
        ({"nonlinearity": "relu"}, "NONLINEARITY must be one of tanh, none"),
    ],
)
def test_bad_parameters_are_refused_before_any_work(tmp_path, kwargs, message):
    with pytest.raises(ParameterError) as e:
        Experiment("rnn", results_dir=tmp_path / "r", data=tmp_path / "never-read.txt", **kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unknown_architecture_and_scratch_layers(tmp_path):
    with pytest.raises(ParameterError, match="ARCH must be one of scratch, rnn, lstm, gru, not 'cnn'"):
        Experiment("cnn", results_dir=tmp_path)
    with pytest.raises(ParameterError, match="NUM_LAYERS must be 1 for the from-scratch RNN"):
        Experiment("scratch", num_layers=2, results_dir=tmp_path)


def test_results_dir_that_is_a_file_or_read_only(tmp_path, monkeypatch):
    f = tmp_path / "file"
    f.write_text("keep me")
    with pytest.raises(ParameterError, match="is a file, not a folder"):
        Experiment("rnn", results_dir=f)
    assert f.read_text() == "keep me"
    import dino_rnn.runner.folders as R

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(R.tempfile, "mkstemp", refuse)
    with pytest.raises(ParameterError, match=r"is not writable \(Permission denied\)"):
        Experiment("rnn", results_dir=tmp_path / "ro")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    exp = Experiment("lstm", epochs=2, max_names=40, results_dir=out, progress=False)
    exp.run()
    return exp


def test_run_writes_metrics_plot_and_checkpoint(finished):
    m = json.loads(finished.paths["metrics"].read_text())
    assert m["architecture"] == "lstm" and m["learnable_parameters"] == 25563 and m["status"] == "ok"
    assert (m["data"]["names"], m["data"]["train"], m["data"]["valid"], m["data"]["test"]) == (1536, 40, 30, 46)
    assert m["parameters"]["epochs"] == 2 and len(m["history"]["train_loss"]) == 2
    assert m["valid_loss"] == min(m["history"]["valid_loss"])
    assert len(m["samples"]["greedy"]) == 26
    assert finished.paths["plot"].read_bytes()[:4] == b"\x89PNG"


def test_checkpoint_round_trip_with_weights_only(finished, vocab):
    model, v = load_checkpoint(finished.paths["checkpoint"])
    assert v.itos == vocab.itos
    x = vocab.one_hot(vocab.encode("rex"))
    finished.model.eval()
    torch.testing.assert_close(model(x)[0], finished.model(x)[0])


def test_corrupt_checkpoint_names_the_file(finished, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(finished.paths["checkpoint"].read_bytes()[:200])
    with pytest.raises(DataError) as e:
        load_checkpoint(bad)
    assert str(bad) in str(e.value) and "corrupt" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DataError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")


def test_diverged_run_is_marked(tmp_path):
    exp = Experiment("rnn", epochs=3, max_names=20, results_dir=tmp_path, progress=False)
    exp.load_data()
    exp.build()
    with torch.no_grad():
        exp.model.fc.bias[0] = float("nan")
    exp.train()
    exp.save()
    m = json.loads(exp.paths["metrics"].read_text())
    assert m["status"] == "diverged" and "NaN" in m["message"] and m["best_epoch"] == 0
    assert not exp.paths["checkpoint"].exists()


def test_result_files_are_readable_by_others(finished):
    import os

    mask = os.umask(0)
    os.umask(mask)
    for p in finished.paths.values():
        assert p.stat().st_mode & 0o777 == 0o666 & ~mask


def test_clip_is_a_setting_checked_recorded_and_used(tmp_path):
    """CLIP: None by default (the published protocol); a bad value is one line naming CLIP; a run
    records it in its metrics and its numbers move with it."""
    from dino_rnn.settings import Settings

    assert Settings().clip is None
    for bad in (0, -1.0, "1", float("nan")):
        with pytest.raises(ParameterError, match="^CLIP must be a number greater than 0"):
            Experiment("rnn", clip=bad, results_dir=tmp_path)
    runs = {}
    for clip in (None, 0.01):
        exp = Experiment("rnn", epochs=1, max_names=40, clip=clip, results_dir=tmp_path, progress=False)
        m = exp.run()
        assert m["parameters"]["clip"] == clip
        runs[clip] = m["train_loss"]
    assert runs[None] != runs[0.01]
