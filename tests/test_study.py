"""The runner end to end: smoke study, a failing notebook, interrupted and killed runs, the
results folder's ownership and lock, the committed reference, cell time-outs, divergence."""

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import notebook

from dino_rnn.runner import folders as R

from dino_rnn import files as F
from dino_rnn.runner import study as S
from dino_rnn.cli import main

REAL_NOTEBOOKS = S.NOTEBOOK_DIR
# A study of the notebooks in argv[1] into argv[2], as `dino-rnn study` runs it (its own process).
RUN = (
    "import sys, pathlib, dino_rnn.runner.study as S; S.NOTEBOOK_DIR = pathlib.Path(sys.argv[1]);"
    "from dino_rnn.cli import main; sys.exit(main(['study', '--out', sys.argv[2], *sys.argv[3:]]))"
)


@pytest.fixture
def notebook_dir(tmp_path, monkeypatch):
    """The study's notebooks folder, here (the reports show it as ".", as they show the real one)."""
    from dino_rnn.report import site

    d = tmp_path / "notebooks"
    d.mkdir()
    monkeypatch.setattr(S, "NOTEBOOK_DIR", d)
    monkeypatch.setattr(site, "NOTEBOOK_DIR", d)
    return d


def snapshot(out):
    """Every file below ``out`` (manifest included) and its bytes."""
    return {f: (out / f).read_bytes() for f in R.files_in(out)} if out.exists() else {}


def previous_results(out):
    """A complete earlier study's folder: these bytes must survive anything the new run does."""
    (out / "metrics").mkdir(parents=True)
    (out / "comparison.md").write_bytes(b"# earlier results\n")
    (out / "metrics" / "old-seed0.json").write_bytes(b"{}\n")
    R.write_manifest(out)
    return snapshot(out)


def beside(out):
    """What is left beside ``out`` (its lock and staging folders)."""
    work = R.ResultsFolder(out).work
    return sorted(p.name for p in work.iterdir()) if work.exists() else []


def run_cli(*argv):
    """``dino-rnn`` in a child process, as a user runs it; returns (exit status, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", "dino_rnn", *argv], capture_output=True, text=True, timeout=600)
    return p.returncode, p.stdout, p.stderr


@pytest.mark.slow
def test_smoke_study_writes_everything(tmp_path, capfd):
    out = tmp_path / "results"
    assert main(["study", "--smoke", "--out", str(out), "--jobs", "2"]) == 0
    md = (out / "comparison.md").read_text()
    rows = [line for line in md.split("\n## ")[0].splitlines() if line.startswith("| ") and "Model" not in line]
    n_models = len(S.model_notebooks())
    assert n_models >= 4
    for arch in ("nn.RNN", "nn.LSTM", "nn.GRU", "RNN from scratch"):
        assert any(arch in r for r in rows)
    assert "**Not the published protocol** (epochs 1 (not 40), max_names 40 (not all))" in md
    for f in ("comparison.csv", "per_seed.csv", "validation_curves.png", "curves_by_model.png", "study.json",
              "html/index.html", "html/comparison.html", "html/comparison.code.html", "executed/comparison.ipynb"):
        assert (out / f).exists(), f
    for nb in S.model_notebooks():
        assert (out / "executed" / "seed0" / nb.name).exists()
        for name in (f"{nb.stem}.html", f"{nb.stem}.code.html"):  # the reader's and the learner's report
            assert (out / "html" / "seed0" / name).read_text().startswith("<!DOCTYPE html>")
    # No machine path in a report or an executed notebook: not the staging folder the notebooks
    # ran in, not the results folder, the project or the home folder.
    for f in list((out / "html").rglob("*.html")) + list((out / "executed").rglob("*.ipynb")):
        text = f.read_text(encoding="utf-8")
        for machine in (str(tmp_path), "staging-", str(S.NOTEBOOK_DIR.parent), str(Path.home())):
            assert machine not in text, (f.relative_to(out), machine)
    executed = (out / "executed" / "seed0" / "03_lstm.ipynb").read_text(encoding="utf-8")
    assert "widget-view" not in executed and "epoch/s" in executed  # tqdm's text bar, whatever is installed
    # The bar as a notebook shows it: its last state, in one output (not one per update).
    (training,) = [c for c in json.loads(executed)["cells"] if "epoch/s" in json.dumps(c.get("outputs", []))]
    bars = [o for o in training["outputs"] if o.get("name") == "stderr"]
    assert len(bars) == 1 and "\r" not in "".join(bars[0]["text"]) and "100%" in "".join(bars[0]["text"])
    study = json.loads((out / "study.json").read_text())
    assert study["started"] <= study["finished"] and study["versions"]["torch"].startswith("2.13.0")
    assert {p.name for p in (out / "metrics").iterdir()} >= {f"{a}-seed0.json" for a in ("scratch", "rnn", "lstm", "gru")}
    # The manifest lists every file the study wrote; nothing but the lock is left beside the folder.
    assert sorted(R.read_manifest(out)) == [f for f in R.files_in(out) if f != F.MANIFEST]
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [F.MANIFEST]
    assert beside(out) == [R.LOCK]
    captured = capfd.readouterr()  # file descriptors: what the workers and their kernels print too
    printed = captured.out
    assert "notebooks ok" in printed
    # The committed reference has seed 0 at 40 epochs: nothing to compare at smoke settings, and it says so.
    assert "against the committed reference: 6 run(s) share a seed" in printed and "nothing to compare" in printed
    # The terminal: one line per finished notebook, the report's place, and nothing from the kernels.
    done = [line for line in printed.splitlines() if re.match(r"  ok +\d\d_\w+\.ipynb seed 0 \(\d+ s\)$", line)]
    assert len(done) == n_models
    assert f"report:  {out / 'html' / 'index.html'}" in printed
    # a line as each phase starts, in order: the cluster, the kernels, the notebooks, the report
    phases = ["data: ", "starting a local cluster of 2 workers", "starting each worker's Jupyter kernel",
              f"running {n_models} notebooks", done[0], "writing the report", "study finished"]
    at = [printed.find(p) for p in phases]
    assert -1 not in at and at == sorted(at), printed
    assert printed.rindex(done[-1]) < printed.index("writing the report")
    assert "Kernel is running" not in captured.err and "IPKernelApp" not in captured.err, captured.err
    assert "KeyboardInterrupt" not in captured.err and "Traceback" not in captured.err, captured.err


@pytest.mark.slow
def test_quiet_prints_only_the_summary(tmp_path, notebook_dir, capfd):
    for name in ("01_a", "02_b"):
        nbformat.write(notebook("print('ran')"), notebook_dir / f"{name}.ipynb")
    out = tmp_path / "results"
    main(["study", "--epochs", "1", "--out", str(out), "--jobs", "2", "--quiet"])
    captured = capfd.readouterr()
    assert captured.out.lstrip().startswith("study finished in") and "2 of 2 notebooks ok" in captured.out
    assert ".ipynb seed 0 (" not in captured.out and "running" not in captured.out and "data:" not in captured.out
    assert captured.err == ""  # no bar, and nothing from the kernels (the smoke study checks the loud terminal)


def test_a_study_refuses_a_folder_it_did_not_write(tmp_path):
    out = tmp_path / "home"
    out.mkdir()
    (out / "thesis.tex").write_bytes(b"precious")
    (out / "plots").mkdir()
    (out / "plots" / "figure1.png").write_bytes(b"mine")
    before = snapshot(out)
    rc, _, err = run_cli("study", "--smoke", "--out", str(out))
    assert rc == 2 and err.count("\n") == 1 and err.startswith("dino-rnn: error: ")
    assert "holds files that dino-rnn study did not write" in err and "'plots/figure1.png'" in err
    assert "give a new or empty folder" in err
    assert snapshot(out) == before
    assert not R.ResultsFolder(out).work.exists()  # nothing written beside it either


@pytest.mark.slow
def test_the_committed_reference_is_written_only_when_asked(tmp_path, notebook_dir, monkeypatch, capsys):
    ref = tmp_path / "reference"
    monkeypatch.setattr(S, "REFERENCE", ref)
    previous_results(ref)
    (ref / F.REFERENCE_MARK).write_text("the committed reference\n")
    before = snapshot(ref)
    assert main(["study", "--out", str(ref), "--epochs", "1"]) == 2
    assert "the committed reference results" in capsys.readouterr().err
    assert snapshot(ref) == before
    nbformat.write(notebook("print('ran')"), notebook_dir / "01_quick.ipynb")
    main(["study", "--reference", "--seeds", "0", "--epochs", "1", "--jobs", "1"])
    assert snapshot(ref) != before and (ref / "study.json").exists()
    assert json.loads((ref / "study.json").read_text())["parameters"]["seeds"] == [0]


@pytest.mark.slow
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


@pytest.mark.slow
def test_interrupted_study_leaves_earlier_results_intact(tmp_path, notebook_dir, monkeypatch):
    nbformat.write(notebook("print('ran')"), notebook_dir / "01_quick.ipynb")
    out = tmp_path / "results"
    before = previous_results(out)

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(S, "write_comparison", interrupt)
    assert main(["study", "--epochs", "1", "--out", str(out), "--jobs", "1"]) == 130
    assert snapshot(out) == before
    assert beside(out) == [R.LOCK]


@pytest.mark.slow
def test_a_rerun_replaces_the_earlier_run_and_a_concurrent_one_is_refused(tmp_path, notebook_dir):
    """Promotion over an existing folder, and one study at a time per folder."""
    nbformat.write(notebook("import time\ntime.sleep(float(EPOCHS))"), notebook_dir / "01_sleep.ipynb")
    out = tmp_path / "results"
    before = previous_results(out)
    assert main(["study", "--epochs", "1", "--out", str(out), "--jobs", "1"]) == 1  # no metrics: the report fails
    first = snapshot(out)
    assert "study.json" in first and "metrics/old-seed0.json" not in first  # the earlier run went whole
    assert first != before
    assert sorted(R.read_manifest(out)) == sorted(f for f in first if f != F.MANIFEST)
    running = subprocess.Popen([sys.executable, "-c", RUN, str(notebook_dir), str(out), "--epochs", "60", "--jobs", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        work = R.ResultsFolder(out).work
        deadline = time.time() + 60
        while not (work / R.LOCK_INFO).exists() and time.time() < deadline:
            time.sleep(0.1)
        t0 = time.time()
        rc, _, err = run_cli("study", "--epochs", "1", "--out", str(out), "--jobs", "1")
        assert time.time() - t0 < 30  # refused at once, not after waiting
        assert rc == 2 and err.count("\n") == 1
        assert "is in use by another run" in err and f"pid {running.pid}" in err
        assert snapshot(out) == first
    finally:
        running.send_signal(signal.SIGKILL)
        running.wait(timeout=60)
    assert snapshot(out) == first  # killed mid-run: the first run's results, whole


@pytest.mark.slow
def test_sigkill_at_any_moment_leaves_complete_results(tmp_path, notebook_dir):
    """Real SIGKILLs of a running `dino-rnn study` at moments spread over its whole run."""
    nbformat.write(notebook("print('ran')"), notebook_dir / "01_quick.ipynb")
    nbformat.write(notebook("print('ran too')"), notebook_dir / "02_quick.ipynb")
    out = tmp_path / "results"
    before = previous_results(out)
    argv = [sys.executable, "-c", RUN, str(notebook_dir), str(out), "--epochs", "1", "--jobs", "2"]
    t0 = time.time()
    assert subprocess.run(argv, capture_output=True, timeout=300).returncode == 1  # finishes; no metrics
    whole = time.time() - t0  # one complete run, to spread the kills over
    first = snapshot(out)
    assert first != before
    for frac in (0.1, 0.4, 0.7, 0.9, 1.0):
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(whole * frac)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        now = snapshot(out)
        listed = R.read_manifest(out)
        # Whole: a manifest that lists exactly the files there, and a finished run's study.json.
        assert listed is not None and sorted(listed) == sorted(f for f in now if f != F.MANIFEST), frac
        assert "study.json" in now and "metrics/old-seed0.json" not in now, frac
    assert subprocess.run(argv, capture_output=True, timeout=300).returncode == 1
    assert beside(out) == [R.LOCK]  # what the killed runs left beside the folder was cleaned up


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "--epochs must be a whole number of at least 1, not 0"),
        (["--max-names", "-3"], "--max-names must be a whole number of at least 1"),
        (["--seeds", "4-2"], "seed range '4-2' runs backwards"),
        (["--seeds", "1", "1"], "repeats a seed"),
        (["--seeds", "one"], "seeds must be whole numbers"),
        (["--jobs", "0"], "--jobs must be a whole number of at least 1"),
        (["--cell-timeout", "0"], "--cell-timeout must be a number greater than 0"),
        (["--data", "/nonexistent/names.txt"], "names file /nonexistent/names.txt does not exist"),
    ],
)
def test_bad_flags_exit_2_with_one_line_before_any_work(tmp_path, capsys, argv, message):
    out = tmp_path / "results"
    before = previous_results(out)
    assert main(["study", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert snapshot(out) == before
    assert beside(out) == []


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


def test_help_lists_every_command_in_plain_words():
    code, out, err = run_cli("--help")
    assert code == 0, err
    listed = re.findall(r"^    (\w+)(?: +\S|\n)", out, re.M)
    assert listed == ["study", "report", "sweep", "exercises", "sample", "bench"]
    description = out.split("\n\n")[1]
    assert description.rstrip().endswith(".") and "dino-rnn" not in description
    for command in ("", *listed):
        text = run_cli(*([command] if command else []), "--help")[1]
        assert "`" not in text, (command, text)


def test_version_prints_the_installed_version_without_loading_torch(monkeypatch):
    from importlib import metadata

    import dino_rnn
    from dino_rnn import cli

    show = ("import sys\nfrom dino_rnn.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit as e:\n"
            "    assert e.code == 0\nprint(sorted(m for m in ('torch', 'numba', 'pandas', 'distributed', 'papermill') "
            "if m in sys.modules))\n")
    p = subprocess.run([sys.executable, "-c", show], capture_output=True, text=True, timeout=60)
    assert p.stdout == f"dino-rnn {metadata.version('dino-rnn')}\n[]\n", p.stdout + p.stderr
    assert run_cli("--version")[1] == f"dino-rnn {dino_rnn.__version__}\n"

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    monkeypatch.setattr(dino_rnn, "__version__", "9.9.9")
    assert cli.version() == "9.9.9"


def test_only_the_process_command_freezes_the_heap_for_its_exit():
    """``dino-rnn ...`` (main() on the process's own arguments) freezes the collector's objects when
    the process exits, so the interpreter's exit does not walk them; main([...]) called from Python
    (a test, a notebook) leaves the caller's collector as it was, then and at its exit."""
    # An exit handler registered before main() runs after main()'s own: it sees what exit sees.
    at_exit = ("import atexit, gc, sys\nfrom dino_rnn.cli import main\n"
               "before = gc.get_freeze_count()\n"
               "atexit.register(lambda: print(gc.get_freeze_count() > before))\n")
    show = (at_exit + "sys.argv = ['dino-rnn', 'study', '--epochs', '0']\n"
            "assert main(['study', '--epochs', '0']) == 2\n"
            "assert gc.get_freeze_count() == before, 'main([...]) froze its caller'\n"
            "assert main() == 2\nassert gc.get_freeze_count() == before, 'frozen before the exit'\n")
    p = subprocess.run([sys.executable, "-c", show], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout == "True\n", p.stdout + p.stderr
    assert p.stderr.count("dino-rnn: error:") == 2, p.stderr  # both refused the bad input, before any work
    caller = at_exit + "assert main(['study', '--epochs', '0']) == 2\n"
    p = subprocess.run([sys.executable, "-c", caller], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout == "False\n", p.stdout + p.stderr


@pytest.mark.slow
def test_terminated_study_leaves_earlier_results_intact(tmp_path, notebook_dir):
    """A real SIGTERM to a running `dino-rnn study`: the staging folder goes, old results stay."""
    nbformat.write(notebook("import time\ntime.sleep(60)"), notebook_dir / "01_slow.ipynb")
    out = tmp_path / "results"
    before = previous_results(out)
    proc = subprocess.Popen([sys.executable, "-c", RUN, str(notebook_dir), str(out), "--epochs", "1", "--jobs", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    work = R.ResultsFolder(out).work
    deadline = time.time() + 60
    while not list(work.glob("staging-*/executed/seed0")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # the notebook is running
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "previous results" in err and "untouched" in err
    assert snapshot(out) == before
    assert beside(out) == [R.LOCK]


def _order_logging_notebooks(tmp_path, notebook_dir):
    """Three notebooks that append their name to a log when they run; returns the log's path."""
    order = tmp_path / "order.txt"
    for name in ("01_a", "02_b", "03_c"):
        nbformat.write(notebook(f"open({str(order)!r}, 'a').write('{name} ')"), notebook_dir / f"{name}.ipynb")
    return order


@pytest.mark.slow
def test_jobs_run_longest_first_by_the_previous_run(tmp_path, notebook_dir):
    order = _order_logging_notebooks(tmp_path, notebook_dir)
    out = tmp_path / "results"
    out.mkdir()
    (out / "study.json").write_text(json.dumps({"jobs": [
        {"notebook": "01_a.ipynb", "seed": 0, "seconds": 20.0},
        {"notebook": "02_b.ipynb", "seed": 0, "seconds": 5.0},
        {"notebook": "03_c.ipynb", "seed": 0, "seconds": 130.0},
        {"notebook": "03_c.ipynb", "seed": 1, "seconds": 140.0},
    ]}))
    R.write_manifest(out)
    assert S.previous_seconds(out) == {"01_a.ipynb": 20.0, "02_b.ipynb": 5.0, "03_c.ipynb": 140.0}
    main(["study", "--epochs", "1", "--seeds", "0", "1", "--out", str(out), "--jobs", "1"])
    assert order.read_text().split() == ["03_c", "03_c", "01_a", "01_a", "02_b", "02_b"]
    (out / "study.json").write_text("{not json")  # unreadable: the notebooks' own order
    assert S.previous_seconds(out) == {}
    assert S.previous_seconds(tmp_path / "none") == {}


@pytest.mark.slow
def test_without_a_previous_run_the_reference_orders_the_jobs_and_new_notebooks_go_first(tmp_path, notebook_dir, monkeypatch):
    """A fresh folder: the committed reference's study.json gives the order; a notebook it does
    not know (new, or renamed since) may be the longest and starts first."""
    jobs = [S.Job(nb, 0, {}, "", "") for nb in ("01_a.ipynb", "05_new.ipynb", "02_b.ipynb")]
    assert S.longest_first(jobs, {"01_a.ipynb": 5.0, "02_b.ipynb": 9.0}) == [1, 2, 0]
    assert S.longest_first(jobs, {}) == [0, 1, 2]  # nothing known: the notebooks' own order
    order = _order_logging_notebooks(tmp_path, notebook_dir)
    reference = tmp_path / "reference"
    reference.mkdir()
    (reference / "study.json").write_text(json.dumps({"jobs": [
        {"notebook": "01_a.ipynb", "seed": 0, "seconds": 20.0},
        {"notebook": "02_b.ipynb", "seed": 0, "seconds": 50.0},
    ]}))
    monkeypatch.setattr(S, "REFERENCE", reference)
    main(["study", "--epochs", "1", "--out", str(tmp_path / "results"), "--jobs", "1"])
    assert order.read_text().split() == ["03_c", "02_b", "01_a"]


@pytest.mark.slow
def test_a_hung_cell_fails_its_notebook_not_the_study(tmp_path, notebook_dir, capsys):
    nbformat.write(notebook("import time\ntime.sleep(600)"), notebook_dir / "01_hung.ipynb")
    nbformat.write(notebook("print('fine')"), notebook_dir / "02_fine.ipynb")
    out = tmp_path / "results"
    t0 = time.time()
    rc = main(["study", "--epochs", "1", "--out", str(out), "--jobs", "2", "--cell-timeout", "3"])
    assert time.time() - t0 < 120
    assert rc == 1
    printed = capsys.readouterr().out
    assert "failed: 01_hung.ipynb seed 0:" in printed and "timed out" in printed
    assert "02_fine.ipynb seed 0:" not in printed.split("notebooks ok")[1]  # the other one did not fail
    assert (out / "executed" / "seed0" / "01_hung.ipynb").exists()
    jobs = {j["notebook"]: j for j in json.loads((out / "study.json").read_text())["jobs"]}
    assert jobs["01_hung.ipynb"]["status"] == "failed" and jobs["02_fine.ipynb"]["status"] == "ok"


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
    assert snapshot(out) == before


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
    assert snapshot(out) == before


DIVERGE = """
import torch
from dino_rnn.experiment import Experiment
exp = Experiment("rnn", epochs=3, max_names=20, seed=SEED, results_dir=RESULTS_DIR)
exp.load_data()
exp.build()
with torch.no_grad():  # a NaN end-of-name logit makes every loss NaN; a gap of 3e38 overflows float32
    exp.model.fc.bias[exp.vocab.end] = float(END_BIAS)
    exp.model.fc.bias[exp.vocab.end + 1] = float(NEXT_BIAS)
exp.train()
exp.save()
"""


@pytest.mark.slow
@pytest.mark.parametrize("end_bias, next_bias, word", [("nan", "0", "NaN"), ("-2e38", "1e38", "infinite")])
def test_a_diverged_run_exits_1_through_the_cli(tmp_path, notebook_dir, capsys, end_bias, next_bias, word):
    params = f"EPOCHS = 1\nSEED = 0\nRESULTS_DIR = '.'\nEND_BIAS = {end_bias!r}\nNEXT_BIAS = {next_bias!r}\n"
    nbformat.write(notebook(DIVERGE, params=params), notebook_dir / "02_diverges.ipynb")
    shutil.copy(REAL_NOTEBOOKS / "comparison.ipynb", notebook_dir)
    out = tmp_path / "results"
    assert main(["study", "--epochs", "1", "--out", str(out), "--jobs", "1"]) == 1
    printed = capsys.readouterr().out
    assert "1 of 1 notebooks ok" in printed  # the notebook ran; the model diverged
    assert f"diverged: nn.RNN seed 0: diverged: loss became {word} at epoch 1" in printed
    m = json.loads((out / "metrics" / "rnn-seed0.json").read_text())
    assert m["status"] == "diverged" and f"loss became {word}" in m["message"]


@pytest.mark.slow
def test_diverged_model_is_marked_not_reported_as_a_result(tmp_path, notebook_dir, capsys):
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


@pytest.mark.slow
def test_a_killed_studys_workers_and_kernels_die_with_it(tmp_path, notebook_dir):
    """Otherwise they would go on writing into a staging folder the next run has cleaned up."""
    import os

    pids = tmp_path / "pids.txt"
    nbformat.write(notebook(f"import os, time\nopen({str(pids)!r}, 'w').write(f'{{os.getppid()}} {{os.getpid()}}')\n"
                            "time.sleep(120)"), notebook_dir / "01_slow.ipynb")
    out = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-c", RUN, str(notebook_dir), str(out), "--epochs", "1", "--jobs", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (pids.exists() and pids.read_text().strip()) and time.time() < deadline:
        time.sleep(0.2)
    worker, kernel = map(int, pids.read_text().split())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)

    def alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return open(f"/proc/{pid}/stat").read().split()[2] != "Z"  # a zombie has exited

    deadline = time.time() + 20
    while (alive(worker) or alive(kernel)) and time.time() < deadline:
        time.sleep(0.2)
    assert not alive(worker) and not alive(kernel)


def _linking_notebook(title, *sources):
    nb = notebook(*sources, params="EPOCHS = 1\nSEED = 0\nRESULTS_DIR = '.'\nDATA = None\n")
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(
        f"# {title}\n\nSee [the other](02_b.ipynb) and [the comparison](comparison.ipynb); $x^2$."))
    return nb


def _study_with_task_reports(tmp_path, notebook_dir, monkeypatch, with_comparison):
    """Two notebooks that print machine paths and link each other (and the comparison); returns
    (results folder, the notebooks the client exported itself)."""
    from dino_rnn.report import site

    nbformat.write(_linking_notebook("A", "import os; print(RESULTS_DIR, DATA, os.getcwd())"), notebook_dir / "01_a.ipynb")
    nbformat.write(_linking_notebook("B", "print(RESULTS_DIR)"), notebook_dir / "02_b.ipynb")
    if with_comparison:  # (its tables need real metrics: not written here)
        nbformat.write(_linking_notebook("Comparison", "print(RESULTS_DIR)"), notebook_dir / "comparison.ipynb")
        monkeypatch.setattr(S, "write_comparison", lambda *a, **k: None)
    exported = []
    real = site.export_notebook
    monkeypatch.setattr(site, "export_notebook", lambda executed, *a, **k: exported.append(Path(executed).name) or real(executed, *a, **k))
    out = tmp_path / "results"
    S.run_study(out, epochs=1, jobs=2, quiet=True)
    return out, exported


@pytest.mark.slow
def test_the_tasks_html_reports_are_what_dino_rnn_report_writes(tmp_path, notebook_dir, monkeypatch):
    """Each task exports its notebook's two reports; the client keeps them (it exports only the
    comparison's), and they are byte for byte what build_site makes from the executed notebook."""
    from dino_rnn.report import site

    out, exported = _study_with_task_reports(tmp_path, notebook_dir, monkeypatch, with_comparison=True)
    assert exported == ["comparison.ipynb"]  # the model notebooks' reports came from their tasks
    pages = {f"seed0/{s}{x}": (out / "html" / "seed0" / f"{s}{x}").read_bytes()
             for s in ("01_a", "02_b") for x in (".html", ".code.html")}
    a = pages["seed0/01_a.html"].decode()
    assert 'href="02_b.html"' in a and 'href="../comparison.html"' in a and "<math" in a
    assert 'href="02_b.code.html"' in pages["seed0/01_a.code.html"].decode()
    executed = [f.read_text() for f in (out / "executed" / "seed0").glob("*.ipynb")]
    assert len(executed) == 2
    for machine in (str(tmp_path), "staging-", "dino-rnn-task-", str(Path.home())):
        assert all(machine not in p.decode() for p in pages.values()), machine
        assert all(machine not in text for text in executed), machine  # cleaned in the task
    # What build_site (dino-rnn report) makes from the executed notebooks in the results folder
    # (here, without its index page: these notebooks write no metrics).
    again = tmp_path / "again"
    reports = site.executed_notebooks(out)
    assert [e.notebook for e in reports] == ["comparison.ipynb", "01_a.ipynb", "02_b.ipynb"]
    for e in reports:
        site.export_report(e, again, site.report_key(e, reports, site.report_substitutions(out)))
    for rel, body in pages.items():
        assert (again / rel).read_bytes() == body, rel


@pytest.mark.slow
def test_a_tasks_reports_made_for_another_folder_are_made_again(tmp_path, notebook_dir, monkeypatch):
    """No comparison notebook ran: the tasks' reports link to a comparison report that is not
    there, so build_site makes them again, without that link."""
    out, exported = _study_with_task_reports(tmp_path, notebook_dir, monkeypatch, with_comparison=False)
    assert sorted(exported) == ["01_a.ipynb", "02_b.ipynb"]
    a = (out / "html" / "seed0" / "01_a.html").read_text()
    assert 'href="02_b.html"' in a and "comparison.html" not in a


@pytest.mark.slow
def test_the_study_process_does_not_import_torch():
    # `dino-rnn study` only schedules notebooks and builds the report: torch (1.5 s to import)
    # belongs in the kernels. Importing it here (once through the sweep command's parser, once
    # through the index page's aⁿbⁿ figure) delayed the first notebook. The command line is parsed
    # (a bad --epochs: exit 2 before any work) and the committed reference's index page is made.
    code = ("import sys\n"
            "from dino_rnn.cli import main\n"
            "from dino_rnn.files import REFERENCE\n"
            "from dino_rnn.report import site\n"
            "assert main(['study', '--epochs', '0']) == 2\n"
            "assert 'aⁿbⁿ' in site.index_page(REFERENCE)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stdout + p.stderr


def test_a_worker_warms_its_exporters_only_once_its_first_kernel_is_up(monkeypatch):
    # On a 2-core machine the exporters' warm-up (~0.9 s of CPU) beside the kernels' imports
    # delayed the first notebook; it is first needed when that notebook ends.
    import threading

    events = []

    class SlowPool:
        def __init__(self):
            self.thread = None

        def prestart(self, cwd, code):
            def start():
                time.sleep(0.5)
                events.append("kernel up")
            self.thread = threading.Thread(target=start)
            self.thread.start()

        def wait_prestarted(self):
            self.thread.join()

    monkeypatch.setattr(S, "_kernel_pool", lambda key=None: SlowPool())
    monkeypatch.setattr(S, "warm_exporters", lambda: events.append("exporters"))
    S.prepare_worker("a-study")
    deadline = time.monotonic() + 30
    while len(events) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert events == ["kernel up", "exporters"]


@pytest.mark.slow
def test_the_next_notebook_goes_to_the_worker_that_is_free(tmp_path, notebook_dir):
    # Handed every task at once, Dask assigned the first few to workers as they were submitted
    # (before its queue applies): the worker running the longest notebook also held the
    # third-longest, which then waited while the other worker went idle. (A changed
    # worker-saturation did not help; with fewer tasks, work stealing hid it.)
    log = tmp_path / "log.txt"
    sleeps = {"01_a": 6.0, "02_b": 0.5, "03_c": 0.5, "04_d": 3.0, "05_e": 3.0, "06_f": 0.5}
    for name, s in sleeps.items():
        code = (f"import time\nopen({str(log)!r}, 'a').write(f'start {name} {{time.time()}}\\n')\n"
                f"time.sleep({s})\nopen({str(log)!r}, 'a').write(f'end {name} {{time.time()}}\\n')")
        nbformat.write(notebook(code), notebook_dir / f"{name}.ipynb")
    out = tmp_path / "results"
    out.mkdir()
    (out / "study.json").write_text(json.dumps({"jobs": [  # the order: a, b, c, ... (a first)
        {"notebook": f"{n}.ipynb", "seed": 0, "seconds": 60.0 - 10 * i} for i, n in enumerate(sleeps)]}))
    R.write_manifest(out)
    main(["study", "--epochs", "1", "--out", str(out), "--jobs", "2", "--quiet"])  # 1: no metrics, no matter
    t = {tuple(line.split()[:2]): float(line.split()[2]) for line in log.read_text().splitlines()}
    assert t[("start", "03_c")] < t[("end", "01_a")], t  # on the worker b left free, not queued behind a


def test_the_comparison_kernel_starts_early_at_the_lowest_priority_and_counts_every_seeds_ladder(tmp_path):
    """It starts when the first notebook ends (every worker's kernel is up by then), lowers its own
    priority before any work (so it takes a core only when a notebook leaves one idle), imports what
    the comparison notebook needs and counts the ladder of every seed, which the notebook then finds
    in the kernel's cache; in a real kernel pool the code runs and the kernel is niced."""
    from dino_rnn.runner.warmkernels import KernelPool

    names = tmp_path / "names.txt"
    names.write_text("".join(f"{a}{b}saurus\n" for a in "abcdefghij" for b in "klmnopqrst"), encoding="utf-8")
    result = S.StudyResult(out=str(tmp_path), parameters={"data": str(names), "seeds": [3, 4], "max_names": None})
    pool = KernelPool(S.kernel_environ(), S.KERNEL_ARGUMENTS)
    kernel = None
    try:
        S._start_comparison_kernel(pool, result)
        kernel = pool.acquire(str(tmp_path))
        check = ("import os, dino_rnn.report.goodness as g\n"
                 "assert os.nice(0) == 19, os.nice(0)\n"
                 "assert g._seed_ladder.cache_info().currsize == 2, g._seed_ladder.cache_info()\n"
                 "import sys; assert 'scipy.stats' in sys.modules")
        reply = kernel.run(check, 60)
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        if kernel is not None:
            pool.release(kernel, reusable=False)  # shut down: an acquired kernel is not the pool's to close
        pool.close()
