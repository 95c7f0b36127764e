"""Attacks on the user's files, as a careless or hostile user makes them: real processes, real files.

Each test is one attack class of the issue "Your files, by construction". The promise under
attack: a run deletes only what a manifest lists or what it marked as its own, the committed
reference is written only with ``--reference``, and every refusal or failure is one line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from conftest import notebook
from test_study import RUN, snapshot
from test_study import previous_results as earlier_study

from dino_rnn.runner import folders as R

from dino_rnn import files as F

ROOT = Path(__file__).resolve().parent.parent
SETPRIV = shutil.which("setpriv")


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def child_env(tmp_path: Path) -> dict:
    """The environment of a child run, with a $TMPDIR of its own (checked empty afterwards)."""
    tmp = tmp_path / "tmpdir"
    tmp.mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(tmp)}


def cli(*argv, env=None, prefix=(), timeout=600):
    """``dino-rnn`` in a child process from the clone's root, as a user runs it; returns (exit status, stderr)."""
    p = subprocess.run([*prefix, sys.executable, "-m", "dino_rnn", *map(str, argv)], capture_output=True, text=True,
                       timeout=timeout, env=env, cwd=ROOT)
    return p.returncode, p.stderr


def one_line(err: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1 and err.startswith("dino-rnn"), err
    return err


def mounted_tmpfs(path: Path, size: str):
    """Mount a small tmpfs at ``path`` (root only); skip, saying why, where that is not possible."""
    path.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({p.stderr.strip() or 'mount failed'}); needs root with CAP_SYS_ADMIN")
    return path


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def tmpfs(tmp_path):
    mounts = []

    def make(name: str, size: str = "4m") -> Path:
        mounts.append(mounted_tmpfs(tmp_path / name, size))
        return mounts[-1]

    yield make
    for m in mounts:
        unmount(m)


def fake_reference(root: Path) -> Path:
    """A clone's ``results/reference``: a study's folder carrying the reference's mark."""
    ref = root / "results" / "reference"
    earlier_study(ref)
    (ref / F.REFERENCE_MARK).write_text("the committed reference\n")
    return ref


# ---------------------------------------------------------------------------
# Files the study did not write
# ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("start", ["missing", "empty"])
def test_a_file_saved_into_the_folder_during_the_study_is_kept(tmp_path, start):
    """--out did not exist (or was empty) when the study started; the user saves a file into it
    while the study runs: the file is in the new results afterwards, byte for byte."""
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    nbformat.write(notebook("import time; time.sleep(6)"), nbs / "01_slow.ipynb")
    out = tmp_path / "out"
    if start == "empty":
        out.mkdir()
    work = R.ResultsFolder(out).work
    proc = subprocess.Popen([sys.executable, "-c", RUN, str(nbs), str(out), "--jobs", "1", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(tmp_path))
    deadline = time.time() + 120
    while not (work.is_dir() and any(p.name.startswith("staging-") for p in work.iterdir())):
        assert proc.poll() is None and time.time() < deadline, "the study never started its staging folder"
        time.sleep(0.05)
    out.mkdir(exist_ok=True)
    (out / "mine.txt").write_bytes(b"my notes, saved mid-run")
    stdout, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1  # the notebook wrote no metrics: the study says so, and still promotes
    assert (out / "mine.txt").read_bytes() == b"my notes, saved mid-run"
    assert "mine.txt" not in (R.read_manifest(out) or [])  # not claimed as the study's
    assert (out / "study.json").exists() and "kept" in stdout


def test_a_study_refuses_a_sweeps_folder(tmp_path):
    out = tmp_path / "sweep"
    f = R.IncrementalFolder(out)
    f.put({"points/rnn-l1-h64-lr0.0004-s0/metrics.json": b"{}\n", "sweep.md": b"# sweep\n"})
    f.close()
    before = snapshot(out)
    rc, err = cli("study", "--smoke", "--out", out)
    assert rc == 2 and "holds the results of 'dino-rnn sweep'" in one_line(err)
    assert snapshot(out) == before


def test_a_sweep_refuses_a_studys_folder(tmp_path):
    out = tmp_path / "study"
    before = earlier_study(out)
    rc, err = cli("sweep", "--arch", "rnn", "--epochs", "1", "--max-names", "20", "--out", out)
    assert rc == 2 and "holds the results of 'dino-rnn study'" in one_line(err)
    assert snapshot(out) == before


def test_bench_never_overwrites_a_users_file(tmp_path):
    notes, data = tmp_path / "notes.md", tmp_path / "notes.json"
    notes.write_text("# my notes\n")
    data.write_text('{"mine": 1}\n')
    t0 = time.time()
    rc, err = cli("bench", "--archs", "rnn", "--repeats", "1", "--epochs-timed", "1", "--out", notes)
    assert rc == 2 and "exists and was not written by this command" in err and err.count("\n") == 1
    assert time.time() - t0 < 60  # refused before any benchmark ran
    assert notes.read_text() == "# my notes\n" and data.read_text() == '{"mine": 1}\n'
    notes.unlink()  # the .md is free now, the .json beside it still is not
    rc, err = cli("bench", "--archs", "rnn", "--repeats", "1", "--epochs-timed", "1", "--out", notes)
    assert rc == 2 and "notes.json" in err and data.read_text() == '{"mine": 1}\n' and not notes.exists()


def test_bench_recognises_its_own_report():
    from dino_rnn.runner.bench import _written_here

    assert _written_here(ROOT / "results" / "benchmark.md") and _written_here(ROOT / "results" / "benchmark.json")
    assert not _written_here(ROOT / "README.md") and not _written_here(ROOT / "results" / "reference" / "study.json")


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
    """A real smoke study's folder (copy it before changing it)."""
    out = tmp_path_factory.mktemp("smoke") / "study"
    rc, err = cli("study", "--smoke", "--quiet", "--out", out)
    assert rc == 0, err
    return out


def _copy_study(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, symlinks=True)
    return dest


@pytest.mark.slow
def test_report_keeps_a_users_files_in_the_work_folder_and_in_html(tmp_path, smoke_study):
    out = _copy_study(smoke_study, tmp_path / "study")
    work = R.ResultsFolder(out).work
    (work / "mine").mkdir(parents=True)
    (work / "mine" / "notes.txt").write_bytes(b"mine")
    (work / "staging-20260101-000000-1").mkdir()  # looks like ours, is not marked as ours
    (work / "staging-20260101-000000-1" / "draft.txt").write_bytes(b"draft")
    rc, err = cli("report", out)
    assert rc == 0, err
    assert (work / "mine" / "notes.txt").read_bytes() == b"mine"
    assert (work / "staging-20260101-000000-1" / "draft.txt").read_bytes() == b"draft"


@pytest.mark.slow
def test_report_on_a_truncated_metrics_file_is_one_line(tmp_path, smoke_study):
    out = _copy_study(smoke_study, tmp_path / "study")
    m = sorted((out / "metrics").glob("*.json"))[0]
    m.write_bytes(m.read_bytes()[: len(m.read_bytes()) // 2])
    before = snapshot(out)
    rc, err = cli("report", out)
    assert rc == 2 and m.name in one_line(err) and "truncated" in err
    assert snapshot(out) == before


# ---------------------------------------------------------------------------
# The committed reference
# ---------------------------------------------------------------------------


def _spellings(ref: Path, tmp_path: Path) -> list[Path]:
    link = tmp_path / "link-to-ref"
    link.symlink_to(ref)
    other = tmp_path / "second-clone"
    shutil.copytree(ref.parent.parent, other, symlinks=True)  # a second clone's reference
    return [ref, ref / "mine", ref / "metrics" / "x", Path(f"{ref}/../reference/./"), link, link / "mine",
            other / "results" / "reference", other / "results" / "reference" / "mine"]


@pytest.mark.slow
def test_every_writer_refuses_the_reference_however_it_is_reached(tmp_path):
    ref = fake_reference(tmp_path / "clone")
    before = snapshot(ref)
    for target in _spellings(ref, tmp_path):
        for argv in (["study", "--smoke", "--out", target],
                     ["sweep", "--arch", "rnn", "--epochs", "1", "--out", target],
                     ["report", target],
                     ["bench", "--archs", "rnn", "--out", target / "bench.md"]):
            rc, err = cli(*argv)
            assert rc == 2 and "committed reference" in err and err.count("\n") == 1, (argv, err)
    assert snapshot(ref) == before
    assert not (ref / "mine").exists()


def test_the_repositorys_own_reference_is_marked_and_refused(tmp_path):
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", f"results/reference/{F.REFERENCE_MARK}"],
                             cwd=ROOT, capture_output=True)
    assert tracked.returncode == 0, "the reference's mark must be committed"
    assert F.reference_holding(F.REFERENCE / "metrics") == F.REFERENCE.resolve()
    rc, err = cli("study", "--smoke", "--out", "results/reference/mine")  # from the clone's root, as the attack
    assert rc == 2 and "committed reference" in one_line(err)
    rc, err = cli("report", "results/reference")
    assert rc == 2 and "--reference" in one_line(err)


def test_a_bind_mount_of_the_reference_is_refused(tmp_path):
    ref = fake_reference(tmp_path / "clone")
    before = snapshot(ref)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    p = subprocess.run(["mount", "--bind", str(ref), str(mnt)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot bind-mount here ({p.stderr.strip()}); needs root with CAP_SYS_ADMIN")
    try:
        for argv in (["study", "--smoke", "--out", mnt], ["sweep", "--arch", "rnn", "--out", mnt / "x"]):
            rc, err = cli(*argv)
            assert rc == 2 and "committed reference" in one_line(err)
    finally:
        unmount(mnt)
    assert snapshot(ref) == before


@pytest.mark.slow
def test_study_reference_keeps_the_mark(tmp_path, monkeypatch):
    """``--reference`` is the one way in, and the new reference carries the mark again."""
    import dino_rnn.runner.study as S
    from dino_rnn.cli import main

    ref = fake_reference(tmp_path / "clone")
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    nbformat.write(notebook("print('ran')"), nbs / "01_quick.ipynb")
    monkeypatch.setattr(S, "NOTEBOOK_DIR", nbs)
    monkeypatch.setattr(S, "REFERENCE", ref)
    main(["study", "--reference", "--seeds", "0", "--epochs", "1", "--jobs", "1", "--quiet"])
    assert (ref / "study.json").exists() and (ref / F.REFERENCE_MARK).is_file()
    assert F.REFERENCE_MARK not in R.read_manifest(ref)
    assert R.ResultsFolder(ref, reference=True).foreign_files() == []


# ---------------------------------------------------------------------------
# Failures after work started, and refusals before it: one line
# ---------------------------------------------------------------------------


FILLS_THE_DISK = {
    # a notebook's file too big for the disk (where it fails depends on where the worker's files go)
    "big file": "import os; open(os.path.join(RESULTS_DIR, 'big.bin'), 'wb').write(os.urandom(5 << 20))",
    # the notebook itself stopped by a full disk
    "in the notebook": "raise OSError(28, 'No space left on device')",
}


@pytest.mark.slow
@pytest.mark.parametrize("how", FILLS_THE_DISK)
def test_a_full_disk_is_one_line_and_the_previous_results_survive(tmp_path, tmpfs, how):
    disk = tmpfs("disk", "3m")
    out = disk / "results"
    before = earlier_study(out)
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    nbformat.write(notebook("print('fine')"), nbs / "01_fine.ipynb")
    nbformat.write(notebook(FILLS_THE_DISK[how]), nbs / "02_full.ipynb")
    env = child_env(tmp_path)
    p = subprocess.run([sys.executable, "-c", RUN, str(nbs), str(out), "--jobs", "1", "--quiet"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 1 and "No space left on device" in one_line(p.stderr), p.stderr
    assert "untouched" in p.stderr
    assert snapshot(out) == before
    assert sorted(x.name for x in R.ResultsFolder(out).work.iterdir()) == [R.LOCK]
    assert os.listdir(env["TMPDIR"]) == []


@pytest.mark.skipif(SETPRIV is None, reason="needs setpriv (util-linux) to drop root's DAC override")
@pytest.mark.parametrize("where", ["folder", "parent"])
def test_a_folder_that_cannot_be_written_is_refused_before_any_work(tmp_path, where):
    parent = tmp_path / "parent"
    out = parent / "results"
    before = earlier_study(out)
    (out if where == "folder" else parent).chmod(0o555)
    drop = [SETPRIV, "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]
    try:
        t0 = time.time()
        rc, err = cli("study", "--smoke", "--out", out, prefix=drop)
        assert rc == 2 and "write" in one_line(err) and time.time() - t0 < 30
    finally:
        out.chmod(0o755)
        parent.chmod(0o755)
    assert snapshot(out) == before


def test_a_mount_point_is_refused_by_study_and_sweep(tmpfs):
    mnt = tmpfs("mnt")
    for argv in (["study", "--smoke", "--out", mnt], ["sweep", "--arch", "rnn", "--epochs", "1", "--out", mnt]):
        rc, err = cli(*argv)
        assert rc == 2 and "mount point" in one_line(err), (argv, err)
    assert os.listdir(mnt) == []


def test_a_name_too_long_for_the_work_folder_is_refused(tmp_path):
    out = tmp_path / ("r" * 250)
    for argv in (["study", "--smoke", "--out", out], ["sweep", "--arch", "rnn", "--out", out], ["report", out]):
        rc, err = cli(*argv)
        assert rc == 2 and "bytes long" in one_line(err), (argv, err)
    assert not out.exists() and os.listdir(tmp_path) == []


def test_a_replaced_folder_without_a_manifest_loses_nothing(tmp_path):
    """The swap's other side, directly: whatever no manifest lists comes back into --out."""
    out = tmp_path / "out"
    f = R.ResultsFolder(out)
    staging = f.new_staging()
    (staging / "comparison.md").write_text("new\n")
    out.mkdir()
    (out / "comparison.md").write_text("the user's, same name\n")
    (out / "sub").mkdir()
    (out / "sub" / "mine.txt").write_text("mine\n")
    f.promote(staging)
    assert (out / "comparison.md").read_text() == "new\n"
    kept = list(out.glob("kept-*/comparison.md"))
    assert [k.read_text() for k in kept] == ["the user's, same name\n"]
    assert (out / "sub" / "mine.txt").read_text() == "mine\n"
    assert json.loads((out / F.MANIFEST).read_text())["files"] == ["comparison.md"]
    assert sorted(p.name for p in f.work.iterdir()) == []


@pytest.mark.slow
def test_a_symlink_loop_or_a_folder_inside_a_work_folder_is_refused(tmp_path):
    """Two attacks found while attacking the fix: neither may start a run or print a traceback."""
    (tmp_path / "loop").symlink_to("loop")
    work = tmp_path / ".study.dino-rnn"
    work.mkdir()
    for out, message in ((tmp_path / "loop", "cannot be resolved"), (work / "x", "hidden folder")):
        for argv in (["study", "--smoke", "--out", out], ["sweep", "--arch", "rnn", "--out", out],
                     ["bench", "--archs", "rnn", "--out", out / "b.md"]):
            rc, err = cli(*argv)
            assert rc == 2 and message in err and err.count("\n") == 1, (argv, err)
    assert os.listdir(work) == []
