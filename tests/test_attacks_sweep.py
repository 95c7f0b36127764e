"""Attacks on ``dino-rnn sweep``, as a careless or hostile user makes them: real processes, real files.

Part of the issue "Your files, by construction". The promises under attack: a grid file is read
in every documented form and anything else is refused in one line (exit status 2) before any
work; a grid too large to run is refused from the axes' sizes, before any point is built; and a
sweep's folder holds one names file's runs, so a finished point is never overwritten by a run
on other data.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_sweep import SerialExecutor

from dino_rnn.runner import sweep as S
from dino_rnn.data import resolve_data_path
from dino_rnn.settings import ParameterError

DATA = resolve_data_path(None)  # DINO_RNN_DATA, or Dino Names (as the other tests resolve it)
_SCRIPT = Path(sys.executable).with_name("dino-rnn")
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "dino_rnn"]
TINY = ["--arch", "rnn", "--seeds", "0", "--epochs", "1", "--max-names", "20"]
# Refusals below name a names file that does not exist: the check under attack comes first, so a
# refusal naming it shows the order; were the check gone, the run stops at the names file (a
# failing test), never training.


def dino(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    """``dino-rnn ARGS`` in its own process."""
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def refused(r: subprocess.CompletedProcess, *words: str) -> str:
    """The one line of a refusal (exit status 2, no traceback); checks it holds ``words``."""
    err = r.stderr.strip()
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert len(err.splitlines()) == 1 and err.startswith("dino-rnn: error: "), err
    for w in words:
        assert w in err, (w, err)
    return err


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` (hidden ones included): bytes and modification time."""
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def names_file(path: Path, lines: slice) -> Path:
    path.write_text("\n".join(DATA.read_text(encoding="utf-8").splitlines()[lines]) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------
# 1. pairs in a grid file: every documented form, and nothing else
# ---------------------------------------------------------------------------

PAIRS_FORMS = {
    "a text at the top": 'pairs = "lstm:gru"\narch = ["lstm", "gru"]\n',
    "a list at the top": 'pairs = ["lstm:gru", "gru:lstm"]\narch = ["lstm", "gru"]\n',
    "a text in a [[grid]]": '[[grid]]\narch = ["lstm", "gru"]\npairs = "lstm:gru"\n',
    "a list in a [[grid]]": '[[grid]]\narch = ["lstm", "gru"]\npairs = ["lstm:gru"]\n',
    "both, in two grids": ('pairs = "lstm:gru"\n[[grid]]\narch = ["lstm", "gru"]\npairs = "gru:lstm"\n'
                           '[[grid]]\narch = "rnn"\npairs = ["rnn:gru", "lstm:gru"]\n'),
}


@pytest.mark.parametrize("form", PAIRS_FORMS)
def test_pairs_in_every_documented_form_are_read(tmp_path, form):
    f = tmp_path / "grid.toml"
    f.write_text(PAIRS_FORMS[form])
    g = S.parse_grid_file(f)
    _, pairs, _ = S.plan(g["grids"], g["pairs"])
    assert ({"arch": "lstm"}, {"arch": "gru"}) in pairs and len(pairs) == len(set(map(repr, pairs)))
    # through the CLI: the grid is accepted, and the run stops at the next check (the names file)
    r = dino("sweep", "--grid", f, "--data", tmp_path / "missing.txt", "--out", tmp_path / "out")
    refused(r, "missing.txt")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text", [
    'pairs = 3\narch = "lstm"\n',
    'pairs = ["lstm:gru", 5]\narch = "lstm"\n',
    'pairs = {lstm = "gru"}\narch = "lstm"\n',
    'arch = "lstm"\n[[grid]]\npairs = true\n',
    'arch = "lstm"\n[[grid]]\npairs = [["lstm", "gru"]]\n',
])
def test_pairs_of_any_other_form_are_refused_in_one_line(tmp_path, text):
    f = tmp_path / "grid.toml"
    f.write_text(text)
    r = dino("sweep", "--grid", f, "--data", tmp_path / "missing.txt", "--out", tmp_path / "out")
    refused(r, "'pairs' must be", '"A:B"', "grid.toml")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------
# 2. an empty grid file, and unknown keys
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "claims = true\n", 'pairs = "lstm:gru"\n', "[[grid]]\n"])
def test_a_grid_file_that_defines_no_grid_is_refused(tmp_path, text):
    f = tmp_path / "grid.toml"
    f.write_text(text)
    refused(dino("sweep", "--grid", f, "--epochs", "1", "--data", tmp_path / "missing.txt", "--out", tmp_path / "out"),
            "defines no grid", "arch, epochs, lr, hidden, num_layers, max_names, nonlinearity", "seeds")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, key", [
    ('arch = "lstm"\nlayer = [2]\n', "layer"),
    ('[[grid]]\narch = "lstm"\nhiden = [32]\n', "hiden"),
    ('[[grids]]\narch = "lstm"\n', "grids"),
    ('[[grid]]\narch = "lstm"\nclaims = true\n', "claims"),
    ("bogus = 1\n", "bogus"),
])
def test_unknown_keys_in_a_grid_file_are_refused(tmp_path, text, key):
    f = tmp_path / "grid.toml"
    f.write_text(text)
    r = dino("sweep", "--grid", f, "--data", tmp_path / "missing.txt", "--out", tmp_path / "out")
    refused(r, f"unknown grid key {key!r}", "use arch")
    assert not (tmp_path / "out").exists()


def test_an_empty_list_is_refused(tmp_path):
    f = tmp_path / "grid.toml"
    f.write_text('arch = []\n')
    refused(dino("sweep", "--grid", f, "--data", tmp_path / "missing.txt", "--out", tmp_path / "out"),
            "--arch is an empty list")


# ---------------------------------------------------------------------------
# 3. a million points
# ---------------------------------------------------------------------------

MILLION = {"arch": "lstm", "hidden": list(range(1, 101)), "lr": [i * 1e-4 for i in range(1, 101)], "seeds": "0-99"}


def test_a_million_point_grid_is_refused_fast_in_one_line(tmp_path):
    env = {"DINO_RNN_MAX_POINTS": ""}
    args = ["--arch", "lstm", "--hidden", *MILLION["hidden"], "--lr", *MILLION["lr"], "--seeds", "0-99"]
    t0 = time.monotonic()
    r = dino("sweep", *args, "--data", tmp_path / "missing.txt", "--out", tmp_path / "out", env=env, timeout=60)
    seconds = time.monotonic() - t0
    refused(r, "1000000 points", "100 lr x 100 hidden x 100 seeds", "at most 1000", "DINO_RNN_MAX_POINTS=N")
    assert seconds < 5, f"took {seconds:.1f} s to refuse"
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.dino-rnn").exists()


def test_the_limit_is_checked_before_any_point_is_built(monkeypatch):
    monkeypatch.delenv("DINO_RNN_MAX_POINTS", raising=False)

    def built(*a):
        raise AssertionError("points were built")

    monkeypatch.setattr(S, "_points", built)
    with pytest.raises(ParameterError, match="1000000 points"):
        S.plan([MILLION])
    with pytest.raises(ParameterError, match="1000000 points"):
        S.expand(MILLION)
    # the grids of a file are counted together: two of 600 points are too many
    half = {"arch": "lstm", "hidden": list(range(1, 7)), "seeds": "0-99"}
    with pytest.raises(ParameterError, match="the 2 grids have up to 1200 points"):
        S.plan([half, {**half, "arch": "gru"}])


def test_the_limit_counts_exactly_and_the_variable_moves_it(monkeypatch):
    grid = {"arch": ["scratch", "lstm"], "num_layers": [1, 2], "nonlinearity": ["tanh", "none"], "seeds": "0-2"}
    monkeypatch.setenv("DINO_RNN_MAX_POINTS", "12")  # scratch: 2 nonlinearities x 3 seeds; lstm: 2 layers x 3 seeds
    assert len(S.plan([grid])[0]) == 12
    monkeypatch.setenv("DINO_RNN_MAX_POINTS", "11")
    with pytest.raises(ParameterError, match="12 points.*at most 11"):
        S.plan([grid])
    monkeypatch.setenv("DINO_RNN_MAX_POINTS", "2000000")
    assert S.max_points() == 2000000
    for bad in ("0", "-3", "lots", "1e6"):
        monkeypatch.setenv("DINO_RNN_MAX_POINTS", bad)
        with pytest.raises(ParameterError, match="DINO_RNN_MAX_POINTS must be a whole number of at least 1"):
            S.plan([grid])


# ---------------------------------------------------------------------------
# 4. a re-run into the same --out on another names file
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_rerun_on_other_data_is_refused_and_the_points_stay_byte_identical(tmp_path):
    a, b = names_file(tmp_path / "a.txt", slice(0, 200)), names_file(tmp_path / "b.txt", slice(200, 400))
    out = tmp_path / "out"
    first = dino("sweep", *TINY, "--jobs", "1", "--data", a, "--out", out)
    assert first.returncode == 0, first.stderr[-3000:]
    assert len(list(out.glob("points/*/metrics/*.json"))) == 1
    before = snapshot(out)
    err = refused(dino("sweep", *TINY, "--jobs", "1", "--data", b, "--out", out),
                  f"holds runs on names file {str(a)!r}", "give another --out", f"--data {str(a)!r}")
    import hashlib

    for f in (a, b):
        assert hashlib.sha256(f.read_bytes()).hexdigest()[:16] in err
    assert snapshot(out) == before  # every file, the manifest included: same bytes, not rewritten
    # the same data again (another path to the same bytes) is the same sweep: nothing to train
    again = dino("sweep", *TINY, "--data", shutil.copy(a, tmp_path / "a-copy.txt"), "--out", out)
    assert again.returncode == 0 and "0 trained, 1 skipped" in again.stdout, again.stderr[-3000:]
    assert {k: v for k, v in snapshot(out).items() if k.startswith("points/")} == \
        {k: v for k, v in before.items() if k.startswith("points/")}


def test_an_interrupted_sweep_on_other_data_is_refused_too(tmp_path):
    """Before its report (sweep.json) exists, the points' metrics say which names file the folder holds."""
    a, b = names_file(tmp_path / "a.txt", slice(0, 200)), names_file(tmp_path / "b.txt", slice(200, 400))
    out, grid = tmp_path / "out", {"arch": "rnn", "seeds": "0", "epochs": 1, "max_names": 20}
    S.run_sweep(out, [grid], data=a, executor=SerialExecutor(), log=lambda *x: None)
    manifest = out / ".dino-rnn.json"  # as if killed before the report: no sweep.json, listed or there
    listing = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**listing, "files": [f for f in listing["files"] if f != "sweep.json"]}))
    (out / "sweep.json").unlink()
    before = snapshot(out)
    with pytest.raises(ParameterError, match=r"holds runs on another names file \(sha256 .*the same --data as before"):
        S.run_sweep(out, [{**grid, "seeds": "1"}], data=b, executor=SerialExecutor(), log=lambda *x: None)
    assert snapshot(out) == before


@pytest.mark.slow
def test_other_settings_are_other_points_and_leave_the_finished_ones_alone(tmp_path):
    """Epochs and max names are in a point's path: a re-run with others adds points, overwrites none."""
    a = names_file(tmp_path / "a.txt", slice(0, 200))
    out, grid = tmp_path / "out", {"arch": "rnn", "seeds": "0", "epochs": 1, "max_names": 20}
    S.run_sweep(out, [grid], data=a, executor=SerialExecutor(), log=lambda *x: None)
    before = {k: v for k, v in snapshot(out).items() if k.startswith("points/")}
    r = S.run_sweep(out, [{**grid, "epochs": 2, "max_names": 30}], data=a, executor=SerialExecutor(),
                    log=lambda *x: None)
    assert len(r.trained) == 1 and not r.skipped
    after = snapshot(out)
    assert {k: after[k] for k in before} == before
    assert json.loads((out / "points/rnn-L1-H64-lr0.0004-e2-n30/metrics/rnn-seed0.json").read_text())["parameters"][
        "epochs"] == 2
