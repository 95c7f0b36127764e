"""``dino-rnn sweep``: the grid, the runs on the executor, resume, a kill, the report, multi-layer training."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dino_rnn.runner import sweep as S
from dino_rnn.data import DataError, resolve_data_path
from dino_rnn.runner.executor import TaskFailed
from dino_rnn.experiment import Experiment
from dino_rnn.models import build_model, count_parameters
from dino_rnn.settings import COMPARED, ParameterError, Settings
from dino_rnn.files import MANIFEST
from dino_rnn.runner.folders import IncrementalFolder, files_in
from dino_rnn.settings import AUTOGRAD, WRITTEN_OUT
from dino_rnn.train import make_step as torch_step
from dino_rnn.report.sweepreport import paired_interval, paired_table, parse_pair, t_quantile

DATA = str(resolve_data_path(None))  # DINO_RNN_DATA, or Dino Names fetched from DINO_RNN_DATA_URL (CI)
# Two architectures x three seeds, tiny: every test that trains uses this grid (or part of it).
GRID = {"arch": ["rnn", "gru"], "seeds": "0-2", "epochs": 2, "max_names": 40}
ARGS = ["--arch", "rnn", "gru", "--seeds", "0-2", "--epochs", "2", "--max-names", "40"]


def sweep_cli(argv) -> int:
    """``dino-rnn sweep ARGV`` through the module's own parser and main (as the CLI calls them)."""
    parser = argparse.ArgumentParser(prog="dino-rnn")
    S.add_parser(parser.add_subparsers(dest="command", required=True))
    return S.main(parser.parse_args(["sweep", *argv]))


SWEEP_MAIN = ("import argparse, sys; from dino_rnn.runner import sweep as S; p = argparse.ArgumentParser(); "
              "S.add_parser(p.add_subparsers(dest='command')); sys.exit(S.main(p.parse_args(sys.argv[1:])))")


class SerialExecutor:
    """The executor's interface, in this process (for tests of what the client does with outcomes)."""

    def __init__(self):
        self.items = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def run(self, fn, items, retries=2):
        for i, item in enumerate(items):
            self.items.append(item)
            try:
                yield i, fn(item)
            except Exception as e:  # noqa: BLE001
                yield i, TaskFailed(f"{type(e).__name__}: {e}")


def losses(folder: Path) -> dict:
    """Every point's numbers that do not depend on timing, by metrics path."""
    out = {}
    for f in sorted(folder.glob("points/*/metrics/*.json")):
        m = json.loads(f.read_text())
        out[f.relative_to(folder).as_posix()] = (m["test_loss"], m["valid_loss"], m["history"]["train_loss"],
                                                 m["history"]["valid_loss"], m["learnable_parameters"])
    return out


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One uninterrupted sweep of GRID on the real executor (a local cluster of two workers)."""
    out = tmp_path_factory.mktemp("sweep") / "out"
    result = S.run_sweep(out, [GRID], jobs=2, log=lambda *a: None)
    return out, result


# ---------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("df, q", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (19, 2.0930),
                                   (30, 2.0423), (120, 1.9799)])
def test_t_quantile_matches_the_published_table(df, q):
    assert t_quantile(0.975, df) == pytest.approx(q, abs=5e-5)
    from scipy import stats

    assert stats.t.cdf(t_quantile(0.975, df), df) == pytest.approx(0.975, abs=1e-10)
    assert t_quantile(0.025, df) == pytest.approx(-q, abs=5e-5)


def test_paired_interval_by_hand():
    # d = a - b = [0.5, -0.5, 1, 1]: mean 0.5, sd sqrt(0.5), t(0.975, 3) = 3.182446
    r = paired_interval([1.0, 2.0, 3.0, 4.0], [0.5, 2.5, 2.0, 3.0])
    half = 3.182446305284263 * math.sqrt(0.5) / 2
    assert r["n"] == 4 and r["mean"] == pytest.approx(0.5)
    assert r["sd"] == pytest.approx(math.sqrt(0.5))
    assert (r["low"], r["high"]) == (pytest.approx(0.5 - half), pytest.approx(0.5 + half))
    assert (r["a_better"], r["b_better"]) == (1, 3)
    one = paired_interval([1.0], [2.0])
    assert one["mean"] == -1.0 and math.isnan(one["low"])


def _m(arch, seed, loss, **p):
    params = {"num_layers": 1, "hidden": 64, "lr": 4e-4, "epochs": 40, "max_names": None,
              "nonlinearity": None, "seed": seed, **p}
    return {"architecture": arch, "parameters": params, "status": "ok", "test_loss": loss, "valid_loss": loss,
            "seconds_per_epoch": 1.0, "learnable_parameters": 1, "gradient": "x"}


def test_pairs_match_points_on_their_other_settings_and_common_seeds():
    ms = [_m("lstm", s, 2.0 + s) for s in range(4)] + [_m("gru", s, 1.5 + s) for s in (1, 2, 3, 9)]
    ms += [_m("lstm", s, 9.0, num_layers=2) for s in range(4)]  # no gru at 2 layers: no row
    t = paired_table(ms, [parse_pair("lstm:gru")])
    assert len(t) == 1
    r = t.iloc[0]
    assert r["seeds"] == 3 and r["mean_difference"] == pytest.approx(0.5) and r["b_better"] == 3
    sel = parse_pair("scratch,nonlinearity=none:scratch,nonlinearity=tanh")
    assert sel == ({"arch": "scratch", "nonlinearity": "none"}, {"arch": "scratch", "nonlinearity": "tanh"})


# ---------------------------------------------------------------------------
# The grid and bad input
# ---------------------------------------------------------------------------


def test_grid_expands_and_scratch_with_more_layers_is_left_out_with_a_note():
    points, pairs, notes = S.plan([{"arch": ["scratch", "lstm"], "num_layers": [1, 2], "nonlinearity": ["tanh", "none"],
                                    "seeds": "0-1"}])
    assert len(points) == 2 * 2 + 2 * 2  # scratch: 2 nonlinearities x 2 seeds; lstm: 2 layer counts x 2 seeds
    assert {p.nonlinearity for p in points if p.arch == "lstm"} == {None}
    assert len(notes) == 1 and "one layer" in notes[0] and "4 points" in notes[0]
    assert ({"arch": "scratch", "nonlinearity": "tanh"}, {"arch": "scratch", "nonlinearity": "none"}) in pairs
    # a union of grids runs each point once
    again, _, _ = S.plan([{"arch": "lstm", "seeds": "0-1"}, {"arch": ["lstm", "gru"], "seeds": "1-2"}])
    assert len(again) == len(set(again)) == 5


@pytest.mark.parametrize("args, words", [
    (["--arch", "transformer"], "--arch must be one of"),
    (["--arch", "scratch", "--num-layers", "2"], "one layer"),
    (["--num-layers", "0"], "NUM_LAYERS must be a whole number"),
    (["--num-layers", "two"], "--num-layers 'two' is not a valid value of NUM_LAYERS"),
    (["--clip", "0"], "CLIP must be a number greater than 0"),
    (["--clip", "none", "none"], "--clip repeats a value (none none)"),
    (["--arch", "lstm", "--nonlinearity", "none"], "from-scratch cell only"),
    (["--arch", "scratch", "--nonlinearity", "relu"], "NONLINEARITY must be one of"),
    (["--seeds", "4-0"], "backwards"),
    (["--pairs", "lstm"], "A:B"),
    (["--pairs", "lstm:cnn"], "unknown architecture"),
    (["--hidden", "64", "64"], "repeats"),
    (["--jobs", "0"], "--jobs"),
    (["--grid", "missing.toml"], "does not exist"),
    (["--data", "/nonexistent/names.txt"], "names.txt"),
])
def test_bad_input_is_one_line_before_any_work(tmp_path, args, words):
    out = tmp_path / "out"
    with pytest.raises((ParameterError, DataError)) as e:  # the CLI prints it and exits with status 2
        sweep_cli([*args, "--out", str(out)])
    assert words in str(e.value) and len(str(e.value).splitlines()) == 1
    assert not out.exists() and not (tmp_path / ".out.dino-rnn").exists()


def test_grid_file_with_several_grids(tmp_path):
    f = tmp_path / "grid.toml"
    f.write_text('epochs = 3\nseeds = "0-1"\npairs = ["lstm:gru"]\n'
                 '[[grid]]\narch = ["lstm", "gru"]\nnum_layers = [1, 2]\n'
                 '[[grid]]\narch = "scratch"\nnonlinearity = ["none", "tanh"]\nseeds = "0-4"\n')
    g = S.parse_grid_file(f)
    points, pairs, _ = S.plan(g["grids"], g["pairs"])
    assert len(points) == 2 * 2 * 2 + 2 * 5 and {p.epochs for p in points} == {3}
    assert pairs == [({"arch": "lstm"}, {"arch": "gru"})]
    f.write_text("arch = ['lstm']\nlayer = [2]\n")
    with pytest.raises(ParameterError, match="unknown grid key 'layer'"):
        S.plan(S.parse_grid_file(f)["grids"])


def test_every_compared_setting_is_a_flag_and_a_grid_key_under_its_own_name():
    """The grid speaks the settings' names (dino_rnn.settings.COMPARED); values are read as Settings types them."""
    parser = argparse.ArgumentParser(prog="dino-rnn")
    sweep = S.add_parser(parser.add_subparsers(dest="command"))
    assert set(COMPARED) <= {a.dest for a in sweep._actions} and set(COMPARED) <= set(S.GRID_KEYS)
    args = parser.parse_args(["sweep", "--arch", "lstm", "--clip", "none", "1", "--max-names", "all", "--out", "o"])
    points, _, _ = S.plan(S.grids_from_args(args)[0])
    assert [p.clip for p in points] == [None, 1.0] and {p.max_names for p in points} == {None}
    # a setting at its default keeps the folder sweeps always used; any other is named at the end
    assert [p.folder for p in points] == ["points/lstm-L1-H64-lr0.0004-e40-nall",
                                          "points/lstm-L1-H64-lr0.0004-e40-nall-clip1.0"]
    assert points[1].label() == "lstm L1 H64 lr 0.0004 clip 1 seed 0"
    f_points, _, _ = S.plan([{"arch": "lstm", "clip": ["none", 1.0], "temperature": [0.8, 1.0]}])
    assert len(f_points) == 4 and f_points[3].folder.endswith("-nall-clip1.0-temperature1.0")


def test_a_grid_file_with_the_old_key_layers_is_told_the_new_one(tmp_path):
    f = tmp_path / "grid.toml"
    f.write_text('arch = "lstm"\nlayers = [1, 2]\n')
    with pytest.raises(ParameterError, match=r"unknown grid key 'layers' \(did you mean 'num_layers'\?\)"):
        S.parse_grid_file(f)


def test_a_clip_axis_trains_each_value_and_resumes(tmp_path):
    """clip is an axis like any setting: each value trains (the Experiment gets it), and a re-run skips them."""
    out, grid = tmp_path / "out", {"arch": "rnn", "clip": ["none", 0.5], "seeds": "0", "epochs": 1, "max_names": 20}
    r = S.run_sweep(out, [grid], executor=SerialExecutor(), log=lambda *a: None)
    assert r.ok and len(r.trained) == 2
    plain = json.loads((out / "points/rnn-L1-H64-lr0.0004-e1-n20/metrics/rnn-seed0.json").read_text())
    clipped = json.loads((out / "points/rnn-L1-H64-lr0.0004-e1-n20-clip0.5/metrics/rnn-seed0.json").read_text())
    assert plain["parameters"]["clip"] is None and clipped["parameters"]["clip"] == 0.5
    assert "rnn L1 H64 lr 0.0004 clip 0.5" in (out / "sweep.md").read_text()
    again = S.run_sweep(out, [grid], executor=SerialExecutor(), log=lambda *a: None)
    assert len(again.skipped) == 2 and not again.trained


def test_a_folder_with_files_no_sweep_wrote_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ParameterError, match="did not write.*notes.txt"):
        S.run_sweep(out, [GRID], executor=SerialExecutor())
    study = tmp_path / "study"
    study.mkdir()
    (study / "comparison.md").write_text("x")
    (study / MANIFEST).write_text(json.dumps({"written_by": "dino-rnn study", "files": ["comparison.md"]}))
    with pytest.raises(ParameterError, match="not of dino-rnn sweep"):
        S.run_sweep(study, [GRID], executor=SerialExecutor())
    assert (out / "notes.txt").read_text() == "mine" and files_in(out) == ["notes.txt"]


# ---------------------------------------------------------------------------
# Running, resuming, a kill
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_sweep_runs_every_point_and_reports(swept):
    out, r = swept
    assert r.ok and len(r.trained) == 6 and not r.skipped
    assert len(losses(out)) == 6
    # everything in the folder is listed in its manifest; nothing left beside it but the lock
    listed = set(json.loads((out / MANIFEST).read_text())["files"])
    assert set(files_in(out)) - {MANIFEST} == listed
    assert sorted(p.name for p in (out.parent / ".out.dino-rnn").iterdir()) == ["lock"]
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["counts"] == {"points": 6, "trained": 6, "skipped": 0, "failed": 0, "diverged": 0}
    md = (out / "sweep.md").read_text()
    assert "| rnn L1 H64 lr 0.0004 | 2 | 40 | 3 |" in md and "| gru L1 H64 lr 0.0004 | 2 | 40 | 3 |" in md
    assert "| rnn L1 H64 lr 0.0004 | gru L1 H64 lr 0.0004 | 3 |" in md  # the default pair
    for png in ("sweep-params.png", "sweep-seconds.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import pandas as pd

    table = pd.read_csv(out / "sweep.csv")
    ms = [json.loads(f.read_text()) for f in out.glob("points/rnn-*/metrics/*.json")]
    row = table[table.arch == "rnn"].iloc[0]
    tl = [m["test_loss"] for m in ms]
    assert row["test_mean"] == pytest.approx(sum(tl) / 3) and row["parameters"] == 7707
    assert row["test_std"] == pytest.approx(pd.Series(tl).std())


@pytest.mark.slow
def test_a_point_gives_the_numbers_of_a_plain_experiment(swept, tmp_path):
    out, _ = swept
    m = json.loads((out / "points/gru-L1-H64-lr0.0004-e2-n40/metrics/gru-seed1.json").read_text())
    e = Experiment("gru", epochs=2, max_names=40, seed=1, results_dir=tmp_path, progress=False).run()
    assert (m["test_loss"], m["history"]["train_loss"], m["history"]["valid_loss"]) == \
        (e["test_loss"], e["history"]["train_loss"], e["history"]["valid_loss"])
    assert m["data"]["sha256"] == e["data"]["sha256"] and m["gradient"] == e["gradient"] == WRITTEN_OUT


@pytest.mark.slow
def test_resume_skips_finished_points_and_leaves_their_files_alone(swept, tmp_path):
    src, _ = swept
    out = tmp_path / "out"
    shutil.copytree(src, out)
    before = {f: ((out / f).read_bytes(), (out / f).stat().st_mtime_ns) for f in files_in(out) if f.startswith("points/")}
    ex = SerialExecutor()
    r = S.run_sweep(out, [{**GRID, "seeds": "0-3"}], executor=ex, log=lambda *a: None)
    assert len(r.skipped) == 6 and [p.seed for p in r.trained] == [3, 3] and len(ex.items) == 2
    for f, (data, mtime) in before.items():
        assert (out / f).read_bytes() == data and (out / f).stat().st_mtime_ns == mtime
    assert json.loads((out / "sweep.json").read_text())["counts"]["skipped"] == 6
    # another names file is refused (the folder holds one names file's runs), before any work
    other = tmp_path / "names.txt"
    other.write_text("\n".join(Path(DATA).read_text().splitlines()[:300]) + "\n")
    ex = SerialExecutor()
    with pytest.raises(ParameterError, match="holds runs on names file"):
        S.run_sweep(out, [{**GRID, "seeds": "0", "arch": "rnn"}], data=other, executor=ex, log=lambda *a: None)
    assert not ex.items
    for f, (data, mtime) in before.items():
        assert (out / f).read_bytes() == data and (out / f).stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_a_failing_point_is_reported_and_the_others_finish(tmp_path, monkeypatch):
    real = S.run_point

    def flaky(item):
        if item["point"].arch == "gru" and item["point"].seed == 1:
            raise RuntimeError("out of memory (pretend)")
        return real(item)

    monkeypatch.setattr(S, "run_point", flaky)
    out = tmp_path / "out"
    grids = [{**GRID, "seeds": "0-1"}, {"arch": "rnn", "lr": 1e12, "seeds": "0", "epochs": 2, "max_names": 40}]
    r = S.run_sweep(out, grids, executor=SerialExecutor(), log=lambda *a: None)
    assert not r.ok and [p.label() for p in r.failed] == ["gru L1 H64 lr 0.0004 seed 1"]
    assert "out of memory" in r.failed[next(iter(r.failed))]
    assert [p.lr for p in r.diverged] == [1e12] and len(r.trained) == 4
    summary = json.loads((out / "sweep.json").read_text())
    status = {(p["arch"], p["lr"], p["seed"]): p["status"] for p in summary["points"]}
    assert status[("gru", 4e-4, 1)] == "failed" and status[("rnn", 1e12, 0)] == "diverged"
    assert status[("gru", 4e-4, 0)] == "ok"
    md = (out / "sweep.md").read_text()
    assert "1 point(s) failed" in md and "(1 diverged)" in md
    # the failed point runs again next time; the finished and the diverged ones do not
    monkeypatch.setattr(S, "run_point", real)
    again = S.run_sweep(out, grids, executor=SerialExecutor(), log=lambda *a: None)
    assert [p.label() for p in again.trained] == ["gru L1 H64 lr 0.0004 seed 1"] and len(again.skipped) == 4


def test_main_exit_status_and_summary(tmp_path, capsys, monkeypatch):
    p = S.Point(Settings("rnn", epochs=2, max_names=40, seed=0))
    done = S.SweepResult(out=tmp_path, points=[p], skipped=[p], report=tmp_path / "sweep.md")
    monkeypatch.setattr(S, "run_sweep", lambda *a, **k: done)
    assert sweep_cli([*ARGS, "--out", str(tmp_path / "o")]) == 0
    assert "0 trained, 1 skipped (already finished), 0 failed" in capsys.readouterr().out
    done.failed[p] = "RuntimeError: boom"
    assert sweep_cli([*ARGS, "--out", str(tmp_path / "o")]) == 1
    assert "failed: rnn L1 H64 lr 0.0004 seed 0: RuntimeError: boom" in capsys.readouterr().err


def _sweep_process(out: Path, jobs: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SWEEP_MAIN, "sweep", *ARGS, "--jobs", str(jobs), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.mark.slow
def test_a_killed_sweep_leaves_complete_points_and_resumes_to_the_same_numbers(swept, tmp_path):
    out = tmp_path / "out"
    proc = _sweep_process(out, jobs=1)  # one worker: the points finish one by one
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list(out.glob("points/*/metrics/*.json"))) >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the sweep ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the client, its cluster and its workers: this test's own processes
        proc.wait()
    done = losses(out)
    assert 2 <= len(done) < 6 and not (out / "sweep.json").exists()
    # what the kill left: only complete files, every one listed in the manifest
    listed = set(json.loads((out / MANIFEST).read_text())["files"])
    assert set(files_in(out)) - {MANIFEST} <= listed
    ref = losses(swept[0])
    for f, numbers in done.items():
        assert numbers == ref[f]
    r = S.run_sweep(out, [GRID], jobs=2, log=lambda *a: None)
    assert len(r.skipped) == len(done) and len(r.trained) == 6 - len(done) and r.ok
    assert losses(out) == ref
    assert sorted(p.name for p in (out.parent / ".out.dino-rnn").iterdir()) == ["lock"]


def test_the_incremental_folder_cleans_what_a_killed_run_left(tmp_path):
    f = IncrementalFolder(tmp_path / "out")
    with f.lock():
        f.put({"a/b.txt": b"one", "c.txt": b"two"})
        f.close()
    # a run killed mid-write: a temporary file in the work folder, a listed file not yet written
    f._tmp("b.txt").write_bytes(b"on")  # in the run's marked incoming-* folder, which its death leaves
    f._incoming = None
    f.write_listing(["a/b.txt", "c.txt", "d.txt"])
    f._incoming = None
    g = IncrementalFolder(tmp_path / "out")
    g.check_owned()
    with g.lock():
        g.recover()
        g.tidy_listing()
        g.close()
    assert sorted(p.name for p in g.work.iterdir()) == ["lock"]
    assert g.listed() == ["a/b.txt", "c.txt"] and (g.path / "a/b.txt").read_bytes() == b"one"


# ---------------------------------------------------------------------------
# Several layers: autograd, and it trains correctly
# ---------------------------------------------------------------------------

GATES = {"rnn": 1, "lstm": 4, "gru": 3}


@pytest.mark.parametrize("arch", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_parameter_count_is_torchs_formula_and_autograd_is_chosen_past_one_layer(arch, layers):
    V, H, g = 27, 64, GATES[arch]
    model = build_model(arch, V, H, layers)
    expected = g * H * (V + H) + 2 * g * H + (layers - 1) * (g * H * 2 * H + 2 * g * H) + H * V + V
    assert count_parameters(model) == expected
    step = torch_step(model, torch.optim.AdamW(model.parameters(), lr=1e-3))
    assert step.gradient == (WRITTEN_OUT if layers == 1 else AUTOGRAD)


@pytest.mark.parametrize("arch", ["rnn", "lstm", "gru"])
def test_two_layer_gradient_matches_finite_differences(arch):
    torch.manual_seed(0)
    model = build_model(arch, 7, 5, 2).double().eval()  # eval: no dropout, a deterministic loss
    x = F.one_hot(torch.tensor([0, 3, 2, 5, 1, 6]), 7).double()
    y = torch.tensor([3, 2, 5, 1, 6, 4])

    def loss():
        return F.cross_entropy(model(x)[0], y)

    model.zero_grad()
    loss().backward()
    gen = torch.Generator().manual_seed(1)
    checked = 0
    for name, p in model.named_parameters():
        flat, grad = p.data.view(-1), p.grad.view(-1)
        for i in torch.randint(0, flat.numel(), (4,), generator=gen).tolist():
            old, eps = flat[i].item(), 1e-6
            with torch.no_grad():
                flat[i] = old + eps
                up = loss().item()
                flat[i] = old - eps
                down = loss().item()
                flat[i] = old
            assert grad[i].item() == pytest.approx((up - down) / (2 * eps), abs=1e-7), name
            checked += 1
    assert checked == 4 * len(list(model.parameters()))
    assert any(n.endswith("_l1") for n, _ in model.named_parameters())  # the second layer was among them


def test_one_layer_written_out_and_autograd_runs_agree(tmp_path):
    a = Experiment("lstm", epochs=1, max_names=40, results_dir=tmp_path, progress=False, autograd=False)
    b = Experiment("lstm", epochs=1, max_names=40, results_dir=tmp_path, progress=False, autograd=True)
    for e in (a, b):
        e.load_data()
        e.build()
        e.train()
    assert a.history.gradient == WRITTEN_OUT and b.history.gradient == AUTOGRAD
    assert a.history.train_loss[0] == pytest.approx(b.history.train_loss[0], abs=1e-4)
    assert a.history.test_loss == pytest.approx(b.history.test_loss, abs=1e-4)


@pytest.mark.slow
def test_a_two_layer_lstm_learns(tmp_path):
    e = Experiment("lstm", num_layers=2, epochs=3, max_names=300, results_dir=tmp_path, progress=False)
    e.load_data()
    e.build()
    h = e.train()
    assert h.gradient == AUTOGRAD and h.status == "ok"
    assert h.train_loss[0] > h.train_loss[1] > h.train_loss[2]
    assert h.valid_loss[2] < h.valid_loss[0] and h.test_loss < math.log(27) - 0.3


# ---------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------


def test_cli_refuses_bad_input_in_one_line_with_status_2(tmp_path, capsys):
    from dino_rnn.cli import main as cli_main

    assert cli_main(["sweep", "--arch", "scratch", "--num-layers", "2", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dino-rnn: error: the from-scratch cell has one layer") and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_cli_sigterm_stops_the_sweep_keeping_its_finished_points(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "dino_rnn", "sweep", *ARGS, "--jobs", "1", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None and not list(out.glob("points/*/metrics/*.json")):
            time.sleep(0.02)
        assert proc.poll() is None, "the sweep ended before it could be stopped"
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=60)[1]
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
    assert proc.returncode == 130 and "run again to resume" in err
    done = losses(out)
    assert 1 <= len(done) < 6
    r = S.run_sweep(out, [{**GRID, "seeds": "0"}], executor=SerialExecutor(), log=lambda *a: None)
    finished_seed0 = [f for f in done if f.endswith("seed0.json")]
    assert len(r.skipped) == len(finished_seed0) and len(r.trained) == 2 - len(finished_seed0)


def test_a_point_is_finished_only_by_its_own_finished_metrics_on_the_same_names_file():
    point = S.Point(Settings("lstm", epochs=2, max_names=40, seed=3))
    m = _m("lstm", 3, 1.5, epochs=2, max_names=40)
    m.update(data={"sha256": "aa"}, finished="2026-12-05 03:00:00")
    assert point.matches(m, "aa")
    assert not point.matches(m, "bb")  # another names file
    assert not point.matches({**m, "finished": None}, "aa")  # a run that did not finish
    assert not point.matches({**m, "parameters": {**m["parameters"], "seed": 4}}, "aa")
    assert not point.matches({**m, "parameters": {**m["parameters"], "clip": 1.0}}, "aa")
    assert not point.matches({"architecture": "lstm"}, "aa")  # not a metrics file
