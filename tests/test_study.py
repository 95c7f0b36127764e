"""The runner end to end: smoke study, a failing notebook, an interrupted run."""

import os
import shutil

import nbformat
import pytest

from dino_rnn import study as S
from dino_rnn.cli import main

REAL_NOTEBOOKS = S.NOTEBOOK_DIR


def notebook(*sources, params="EPOCHS = 1\nSEED = 0\nRESULTS_DIR = '.'\n"):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell] + [nbformat.v4.new_code_cell(s) for s in sources]
    return nb


@pytest.fixture
def notebook_dir(tmp_path, monkeypatch):
    d = tmp_path / "notebooks"
    d.mkdir()
    monkeypatch.setattr(S, "NOTEBOOK_DIR", d)
    return d


def previous_results(out):
    """A complete earlier run: these bytes must survive anything the new run does."""
    (out / "metrics").mkdir(parents=True)
    files = {
        out / "comparison.md": b"# earlier results\n",
        out / "benchmark.md": b"# benchmark, not written by the study\n",
        out / "metrics" / "old-seed0.json": b"{}\n",
    }
    for p, b in files.items():
        p.write_bytes(b)
    return files


def test_smoke_study_writes_everything(tmp_path, capsys):
    out = tmp_path / "results"
    keep = out / "benchmark.md"
    out.mkdir()
    keep.write_bytes(b"# keep me\n")
    assert main(["study", "--smoke", "--out", str(out), "--jobs", "2"]) == 0
    md = (out / "comparison.md").read_text()
    rows = [line for line in md.split("## ")[1].splitlines() if line.startswith("| ") and "Model" not in line]
    n_models = len(S.model_notebooks())
    assert n_models >= 4
    for arch in ("nn.RNN", "nn.LSTM", "nn.GRU", "RNN from scratch"):
        assert any(arch in r for r in rows)
    for f in ("comparison.csv", "per_seed.csv", "validation_curves.png", "curves_by_model.png", "study.json",
              "html/comparison.html", "executed/comparison.ipynb"):
        assert (out / f).exists(), f
    for nb in S.model_notebooks():
        assert (out / "executed" / "seed0" / nb.name).exists()
        assert (out / "html" / "seed0" / nb.with_suffix(".html").name).read_text().startswith("<!DOCTYPE html>")
    assert {p.name for p in (out / "metrics").iterdir()} >= {f"{a}-seed0.json" for a in ("scratch", "rnn", "lstm", "gru")}
    assert keep.read_bytes() == b"# keep me\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert "notebooks ok" in capsys.readouterr().out


def test_failing_notebook_does_not_stop_the_others(tmp_path, notebook_dir, capsys):
    shutil.copy(REAL_NOTEBOOKS / "02_rnn.ipynb", notebook_dir)
    shutil.copy(REAL_NOTEBOOKS / "comparison.ipynb", notebook_dir)
    nbformat.write(notebook("raise RuntimeError('boom: this notebook is broken')"), notebook_dir / "01_broken.ipynb")
    out = tmp_path / "results"
    rc = main(["study", "--epochs", "1", "--max-names", "20", "--out", str(out), "--jobs", "2"])
    assert rc == 1
    printed = capsys.readouterr().out
    assert "failed: 01_broken.ipynb seed 0: RuntimeError: boom" in printed
    kept = (out / "executed" / "seed0" / "01_broken.ipynb").read_text()
    assert "Traceback" in kept or "RuntimeError" in kept
    assert (out / "html" / "seed0" / "01_broken.html").exists()
    assert (out / "metrics" / "rnn-seed0.json").exists()  # the other notebook ran
    assert "01_broken.ipynb seed 0: failed — RuntimeError: boom" in (out / "comparison.md").read_text()


def test_interrupted_study_leaves_earlier_results_intact(tmp_path, notebook_dir, monkeypatch):
    nbformat.write(notebook("print('ran')"), notebook_dir / "01_quick.ipynb")
    out = tmp_path / "results"
    before = previous_results(out)

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("dino_rnn.report.write_comparison", interrupt)
    assert main(["study", "--epochs", "1", "--out", str(out), "--jobs", "1"]) == 130
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in out.iterdir()) == ["benchmark.md", "comparison.md", "metrics"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "--epochs must be a whole number of at least 1, not 0"),
        (["--max-names", "-3"], "--max-names must be a whole number of at least 1"),
        (["--seeds", "4-2"], "seed range '4-2' runs backwards"),
        (["--seeds", "1", "1"], "repeats a seed"),
        (["--seeds", "one"], "seeds must be whole numbers"),
        (["--jobs", "0"], "--jobs must be a whole number of at least 1"),
        (["--data", "/nonexistent/names.txt"], "names file /nonexistent/names.txt does not exist"),
    ],
)
def test_bad_flags_exit_2_with_one_line_before_any_work(tmp_path, capsys, argv, message):
    out = tmp_path / "results"
    before = previous_results(out)
    assert main(["study", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in out.iterdir()) == ["benchmark.md", "comparison.md", "metrics"]


def test_output_folder_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "results"
    f.write_bytes(b"precious")
    assert main(["study", "--out", str(f)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert f.read_bytes() == b"precious"


def test_type_errors_from_argparse_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["study", "--epochs", "ten"])
    assert e.value.code == 2 and "invalid int value: 'ten'" in capsys.readouterr().err


def test_killed_study_leaves_earlier_results_intact(tmp_path, notebook_dir):
    """A real SIGTERM to a running `dino-rnn study`: the staging folder goes, old results stay."""
    import signal
    import subprocess
    import sys
    import time

    nbformat.write(notebook("import time\ntime.sleep(60)"), notebook_dir / "01_slow.ipynb")
    out = tmp_path / "results"
    before = previous_results(out)
    code = (
        "import sys, dino_rnn.study as S, pathlib; S.NOTEBOOK_DIR = pathlib.Path(sys.argv[1]);"
        "from dino_rnn.cli import main; sys.exit(main(['study', '--epochs', '1', '--out', sys.argv[2], '--jobs', '1']))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(notebook_dir), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not list(out.glob(".staging-*/executed/seed0")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # the notebook is running
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "previous results" in err and "untouched" in err
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in out.iterdir()) == ["benchmark.md", "comparison.md", "metrics"]


def test_stale_staging_of_a_dead_run_is_removed(tmp_path):
    out = tmp_path / "results"
    dead = out / ".staging-20260101-000000-999999999"
    dead.mkdir(parents=True)
    live = out / f".staging-20260101-000000-{os.getpid()}"
    live.mkdir()
    S.remove_stale(out)
    assert not dead.exists() and live.exists()


def test_previous_run_orders_the_jobs_longest_first(tmp_path):
    import json

    (tmp_path / "study.json").write_text(json.dumps({"jobs": [
        {"notebook": "01_a.ipynb", "seed": 0, "seconds": 20.0},
        {"notebook": "05_b.ipynb", "seed": 0, "seconds": 130.0},
        {"notebook": "05_b.ipynb", "seed": 1, "seconds": 140.0},
    ]}))
    assert S.previous_seconds(tmp_path) == {"01_a.ipynb": 20.0, "05_b.ipynb": 140.0}
    (tmp_path / "study.json").write_text("{not json")
    assert S.previous_seconds(tmp_path) == {}
    assert S.previous_seconds(tmp_path / "none") == {}


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"\n \n", "has only blank lines"),
        (b"rex\n\xe9t\xe9\n", "line 2 is not valid UTF-8"),
        (b"rex\x00\n", "line 1 contains a NUL byte"),
        (b"t.rex\n", "contains '.', which marks the end of a name"),
        (b"\n".join(b"n%d" % i for i in range(49)), "give at least 50 names"),
    ],
)
def test_bad_names_file_via_cli(tmp_path, capsys, content, message):
    out = tmp_path / "results"
    before = previous_results(out)
    bad = tmp_path / "names.txt"
    bad.write_bytes(content)
    assert main(["study", "--out", str(out), "--data", str(bad)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("dino-rnn: error: ")
    assert {p: p.read_bytes() for p in before} == before


def test_checksum_mismatch_via_cli(tmp_path, capsys, monkeypatch):
    from dino_rnn import data as D

    monkeypatch.delenv("DINO_RNN_DATA", raising=False)
    monkeypatch.setattr(D, "DEFAULT_FILE", tmp_path / "data" / "dino_names.txt")
    wrong = tmp_path / "wrong.txt"
    wrong.write_bytes(b"\n".join(b"name%d" % i for i in range(60)))
    monkeypatch.setenv("DINO_RNN_DATA_URL", wrong.as_uri())
    out = tmp_path / "results"
    before = previous_results(out)
    assert main(["study", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and D.DATA_SHA256 in err and D.sha256_of(wrong) in err
    assert not D.DEFAULT_FILE.exists()
    assert {p: p.read_bytes() for p in before} == before


def test_diverged_model_is_marked_not_reported_as_a_result(tmp_path, notebook_dir, capsys):
    import json

    shutil.copy(REAL_NOTEBOOKS / "02_rnn.ipynb", notebook_dir)
    shutil.copy(REAL_NOTEBOOKS / "comparison.ipynb", notebook_dir)
    out = tmp_path / "results"
    result = S.run_study(out, epochs=3, max_names=20, jobs=1, extra={"LR": 1e30})
    assert not result.ok and not result.failed
    assert len(result.diverged) == 1 and "nn.RNN seed 0: diverged: loss became NaN" in result.diverged[0]
    m = json.loads((out / "metrics" / "rnn-seed0.json").read_text())
    assert m["status"] == "diverged" and m["best_epoch"] == 0
    md = (out / "comparison.md").read_text()
    assert "## Runs that did not finish" in md and "nn.RNN, seed 0: diverged" in md
    assert "| nn.RNN " in md and "| 0 (+1 failed)" in md
    S.print_summary(result)
    assert "diverged: nn.RNN seed 0" in capsys.readouterr().out
