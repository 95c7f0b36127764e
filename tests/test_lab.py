"""The lab in the study: NumpyExperiment on Dino Names, the aⁿbⁿ runner, its report section.

The notebooks behind them (05_anbn_lab, 06_numpy_nets) run in test_notebooks.py."""

from __future__ import annotations

import json
import math

import pytest

from dino_rnn import anbn, lab
from dino_rnn.report import tables as report
from dino_rnn.files import anbn_paths
from dino_rnn.experiment import Experiment
from dino_rnn.settings import ParameterError

COUNTS = {"numpy_rnn": 7643, "numpy_lstm": 25307}  # V=27, H=64
ANBN_COUNTS = {"numpy_rnn": 2954, "numpy_lstm": 11204, "torch_lstm": 11400, "numpy_lstm_adam": 11204}  # V=4, H=50


def key_paths(d: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in d.items():
        out.add(prefix + k)
        if isinstance(v, dict):
            out |= key_paths(v, prefix + k + ".")
    return out


def run_numpy(arch, tmp_path, dino_file, **kw):
    exp = lab.NumpyExperiment(arch, epochs=2, max_names=30, results_dir=tmp_path, data=dino_file, progress=False, **kw)
    return exp, exp.run()


@pytest.fixture(scope="module")
def torch_metrics(tmp_path_factory, dino_file):
    """The schema to match: what a PyTorch notebook's Experiment writes."""
    exp = Experiment("rnn", epochs=1, max_names=30, results_dir=tmp_path_factory.mktemp("torch"), data=dino_file, progress=False)
    return exp.run()


@pytest.mark.parametrize("arch", lab.NUMPY_ARCHITECTURES)
def test_numpy_experiment_writes_the_pytorch_schema(arch, tmp_path, dino_file, torch_metrics):
    exp, m = run_numpy(arch, tmp_path, dino_file)
    assert key_paths(m) - {"versions.numpy"} == key_paths(torch_metrics)
    assert m["architecture"] == arch and m["label"] == lab.NUMPY_LABELS[arch]
    assert m["learnable_parameters"] == COUNTS[arch]
    assert m["status"] == "ok" and m["message"] == ""
    assert m["parameters"]["device"] == "cpu" and m["parameters"]["nonlinearity"] is None
    assert m["data"] == {**torch_metrics["data"]}  # same file, same split sizes
    h = m["history"]
    assert len(h["train_loss"]) == len(h["valid_loss"]) == len(h["seconds"]) == 2
    assert m["valid_loss"] == min(h["valid_loss"]) == h["valid_loss"][m["best_epoch"] - 1]
    assert m["train_loss"] == h["train_loss"][m["best_epoch"] - 1]
    assert math.isfinite(m["test_loss"])
    # the test loss is the best state's, and the checkpoint holds that state
    net, vocab = lab.load_numpy_checkpoint(exp.paths["checkpoint"])
    assert vocab.itos == exp.vocab.itos
    assert sum(net.loss(x, y) for x, y in exp.test_pairs) / len(exp.test_pairs) == pytest.approx(m["test_loss"], abs=1e-12)
    # samples: greedy and at the temperature, one per start letter, marked new or not
    s = m["samples"]
    assert len(s["greedy"]) == len(s["sampled"]) == 26
    assert s["greedy_new_share"] == sum(r["new"] for r in s["greedy"]) / 26
    for path in exp.paths.values():
        assert path.stat().st_size > 0
    assert exp.paths["checkpoint"].suffix == ".npz"
    on_disk = json.loads(exp.paths["metrics"].read_text(encoding="utf-8"))
    assert on_disk["learnable_parameters"] == COUNTS[arch]


def test_numpy_experiment_repeats_exactly(tmp_path, dino_file):
    _, a = run_numpy("numpy_lstm", tmp_path / "a", dino_file)
    _, b = run_numpy("numpy_lstm", tmp_path / "b", dino_file)
    for m in (a, b):
        m["history"].pop("seconds")
        m.pop("seconds_per_epoch")
        m.pop("finished")  # when the files were written
        m["data"].pop("path", None)
    assert a == b


def test_greedy_samples_go_through_the_one_generate(tmp_path, dino_file):
    from dino_rnn.sample import generate

    exp, _ = run_numpy("numpy_rnn", tmp_path, dino_file)
    net, vocab = exp.net, exp.vocab
    # greedy decoding by hand on the NumPy net, feeding its own state
    ids = vocab.encode("t")
    logits, state = net.forward(ids)
    out = "t"
    while len(out) < 40:
        nxt = int(logits[-1].argmax())
        if nxt == vocab.end:
            break
        out += vocab.itos[nxt]
        logits, state = net.forward([nxt], state)
    assert generate(lab.TorchView(net), vocab, "t") == out


def test_bad_parameters_are_refused(tmp_path):
    with pytest.raises(ParameterError, match="ARCH"):
        lab.NumpyExperiment("lstm", results_dir=tmp_path)
    with pytest.raises(ParameterError, match="NUM_LAYERS"):
        lab.NumpyExperiment("numpy_rnn", num_layers=2, results_dir=tmp_path)
    with pytest.raises(ParameterError, match="EPOCHS"):
        lab.NumpyExperiment("numpy_rnn", epochs=0, results_dir=tmp_path)
    with pytest.raises(ParameterError, match="ANBN_EPOCHS"):
        lab.run_anbn(epochs=0, results_dir=tmp_path)


def test_corrupt_checkpoint_is_reported(tmp_path):
    from dino_rnn.data import DataError

    bad = tmp_path / "x.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="corrupt"):
        lab.load_numpy_checkpoint(bad)
    with pytest.raises(DataError, match="does not exist"):
        lab.load_numpy_checkpoint(tmp_path / "missing.npz")


# -- aⁿbⁿ --------------------------------------------------------------------------


@pytest.mark.slow
def test_run_anbn_writes_and_repeats(tmp_path):
    a = lab.run_anbn(seed=1, epochs=1, results_dir=tmp_path / "a", progress=False, extrapolate=range(12, 15))
    b = lab.run_anbn(seed=1, epochs=1, results_dir=tmp_path / "b", progress=False, extrapolate=range(12, 15))
    paths = anbn_paths(tmp_path / "a", 1)
    assert json.loads(paths["json"].read_text(encoding="utf-8"))["models"].keys() == ANBN_COUNTS.keys()
    assert paths["plot"].stat().st_size > 0
    assert a["task"]["train"] == 204 and a["task"]["valid"] == a["task"]["test"] == 25
    for key, m in a["models"].items():
        assert m["learnable_parameters"] == ANBN_COUNTS[key]
        assert len(m["history"]["train_loss"]) == 1
        assert [r["n"] for r in m["extrapolation"]] == [12, 13, 14]
        assert [r["n"] for r in m["in_range"]] == list(range(1, 12))
        assert set(m["determined"]) == {"train", "valid", "test"}
        assert m["determined"]["test"]["positions"] == sum(s.index("b") for s in anbn.load()[2].sequences)
        for field in ("final_train_loss", "final_valid_loss", "test_loss", "extrapolation", "largest_n", "determined", "in_range_exact"):
            assert m[field] == b["models"][key][field], (key, field)
    without = lab.run_anbn(seed=1, epochs=1, adam_control=False, results_dir=tmp_path / "c", progress=False, extrapolate=range(12, 13))
    assert "numpy_lstm_adam" not in without["models"]


def fake_anbn(seed: int, largest: dict) -> dict:
    def model(label, params, tr, va, acc, n_in, big, secs):
        return {
            "label": label,
            "learnable_parameters": params,
            "optimizer": "opt",
            "status": "ok",
            "message": "",
            "history": {"train_loss": [1.0, tr], "valid_loss": [1.0, va], "seconds": [0.1, 0.1]},
            "final_train_loss": tr,
            "final_valid_loss": va,
            "test_loss": va,
            "determined": {k: {"accuracy": acc, "correct": 1, "positions": 1, "sequences_all_right": acc / 2} for k in ("train", "valid", "test")},
            "in_range_exact": n_in,
            "in_range": [],
            "extrapolation": [],
            "extrapolated": 0,
            "largest_n": big,
            "seconds": secs,
            "seconds_per_epoch": secs / 2,
        }

    return {
        "task": {"sequences": 256, "n_range": [1, 11], "data_seed": 42, "train": 204, "valid": 25, "test": 25, "always_b_accuracy": {"test": 0.82}},
        "parameters": {"seed": seed, "epochs": 200, "hidden_size": 50},
        "models": {
            "numpy_rnn": model("NumPy RNN (SGD)", 2954, 0.5 + seed / 10, 0.6, 0.9, 3, largest["numpy_rnn"], 10.0),
            "numpy_lstm": model("NumPy LSTM (SGD)", 11204, 0.3, 0.4 + seed / 10, 1.0, 11, largest["numpy_lstm"], 20.0 + seed),
            "torch_lstm": model("PyTorch LSTM (Adam)", 11400, 0.2, 0.2, 0.95, 10, largest["torch_lstm"], 40.0),
        },
    }


def test_anbn_section_renders_from_hand_made_json(tmp_path):
    assert report.anbn_section(tmp_path) is None
    (tmp_path / "anbn").mkdir()
    (tmp_path / "anbn" / "anbn-seed0.json").write_text(json.dumps(fake_anbn(0, {"numpy_rnn": None, "numpy_lstm": 20, "torch_lstm": 13})))
    one = report.anbn_section(tmp_path)
    assert one.startswith("## aⁿbⁿ: the NumPy lab\n")
    rows = [line for line in one.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 3  # header + three models
    assert "| NumPy RNN (SGD)" in rows[1] and "| 2954 " in rows[1] and "| none " in rows[1] and "90.0%" in rows[1]
    assert "| 20 " in rows[2] and "| 11 " in rows[2]
    assert "82.0%" in one  # the always-b baseline is stated
    (tmp_path / "anbn" / "anbn-seed1.json").write_text(json.dumps(fake_anbn(1, {"numpy_rnn": 12, "numpy_lstm": 20, "torch_lstm": None})))
    two = report.anbn_section(tmp_path)
    rows = [line for line in two.splitlines() if line.startswith("| ")]
    assert "Seeds 0, 1" in two
    assert "0.5500 ± 0.0707" in rows[1]  # final train loss of the RNN: 0.5, 0.6
    assert "none, 12" in rows[1] and "13, none" in rows[3]
    assert "20.5 ± 0.7" in rows[2]  # seconds


def test_anbn_section_does_not_blend_settings(tmp_path):
    """Two seeds at the lab's settings and one smoke run: the table holds the two, the third is named."""
    import json
    import shutil

    from conftest import ROOT

    from dino_rnn.report.tables import anbn_section

    (tmp_path / "anbn").mkdir()
    for seed in (0, 1, 2):
        shutil.copy(ROOT / "results" / "reference" / "anbn" / f"anbn-seed{seed}.json", tmp_path / "anbn")
    smoke = json.loads((tmp_path / "anbn" / "anbn-seed2.json").read_text())
    smoke["parameters"]["epochs"] = 2
    (tmp_path / "anbn" / "anbn-seed2.json").write_text(json.dumps(smoke))
    md = anbn_section(tmp_path)
    assert "Seeds 0, 1 (the initialisation" in md and "200 epochs" in md
    assert "- Left out: seed 2, other settings: epochs 2 (not 200)." in md
